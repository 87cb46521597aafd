// Command vivi-bridge connects a customer's PBX, through a Twilio SIP Domain
// and Media Streams, to an OpenAI Realtime voice agent.
//
//	vivi-bridge serve            the server (default)
//	vivi-bridge demo             one simulated call on this machine, with fakes
//	vivi-bridge apply -f FILE    upsert agents and channels from a YAML file
package main

import (
	"context"
	"errors"
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
		fmt.Fprintln(os.Stderr, "vivi-bridge:", err)
		var ce *configError
		if errors.As(err, &ce) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// run is main without the process: tests call it with their own environment.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, getenv, stderr)
	case "demo":
		return demo(ctx, args, getenv, stdout)
	case "apply":
		return apply(ctx, args, getenv, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usageText)
		return nil
	default:
		return errConfig("unknown command %q (want serve, demo or apply)", cmd)
	}
}

const usageText = `usage:
  vivi-bridge [serve]            run the server (environment: see README)
  vivi-bridge demo               run one simulated call on this machine and print its timeline
  vivi-bridge apply -f FILE      create or update agents and channels from a YAML file
`
