// Command callsim is the load tool of the VIVI bridge: it places N
// concurrent simulated Twilio calls against a bridge (a signed voice
// webhook, a signed Media Streams websocket, real-time 20 ms μ-law frames
// of speech and silence, marks echoed as Twilio plays them, optional DTMF,
// and stop) while an echo model answers every caller frame at once, and it
// reports what the bridge added: lost frames, the echo delay in each
// direction, the time from answer to first agent audio, and the bridge's
// CPU and memory per call.
//
//	callsim -bridge-bin bin/vivi-bridge -calls 300 -ramp 5s -duration 30s
//	callsim -url http://127.0.0.1:8080 -pid 1234 -model-listen 127.0.0.1:9090 ...
//	callsim model -listen 127.0.0.1:9090      the echo model alone
//	callsim markdown -o BENCHMARKS.md -go bench.txt run-*.json
//
// See BENCHMARKS.md for how the figures are measured.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "callsim:", err)
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// run is main without the process: tests call it with their own environment.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "model":
			return runModel(ctx, args[1:], stdout, stderr)
		case "markdown":
			return runMarkdown(args[1:], stderr)
		}
	}
	cfg, err := parseFlags(args, getenv, stderr)
	if err != nil {
		return err
	}
	progress := io.Discard
	if !cfg.Quiet {
		progress = stderr
	}
	rep, err := Run(ctx, cfg, progress)
	if err != nil {
		return err
	}
	if cfg.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.WriteTable(stdout)
}

// runModel serves the echo model alone until ctx ends, for a bridge that
// another callsim (or a person) drives; per-direction delays need the model
// in the load's own process and are then not measured.
func runModel(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("callsim model", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:9090", "address of the echo model (loopback)")
	key := fs.String("api-key", defaultAPIKey, "bearer key the bridge must send (its OPENAI_API_KEY)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	m, err := startEchoModel(*listen, *key, nil)
	if err != nil {
		return err
	}
	defer m.Close()
	fmt.Fprintf(stdout, "echo model listening: OPENAI_REALTIME_URL=%s OPENAI_API_KEY=%s\n", m.URL(), *key)
	<-ctx.Done()
	return nil
}
