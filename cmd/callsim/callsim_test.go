package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// buildBridge builds cmd/vivi-bridge into a temporary directory.
func buildBridge(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "vivi-bridge")
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build ../vivi-bridge: %v", err)
	}
	cmd := exec.Command(goTool, "build", "-o", bin, "../vivi-bridge")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ../vivi-bridge: %v\n%s", err, out)
	}
	return bin
}

// TestLoadAgainstChildBridge runs the real tool, flags to JSON, against a
// bridge built from ../vivi-bridge: three calls for two seconds with DTMF.
func TestLoadAgainstChildBridge(t *testing.T) {
	bin := buildBridge(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	bridgeLog := filepath.Join(t.TempDir(), "bridge.log")
	args := []string{"-bridge-bin", bin, "-calls", "3", "-ramp", "300ms", "-duration", "2s",
		"-dtmf", "700ms", "-json", "-bridge-log", bridgeLog, "-bridge-env", "LOG_LEVEL=info"}
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(bridgeLog)
			t.Logf("bridge log:\n%s", b)
		}
	}()
	if err := run(ctx, args, func(string) string { return "" }, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	var r Report
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("JSON report: %v\n%s", err, stdout.String())
	}
	if r.Calls != 3 || r.Connected != 3 || r.Failed != 0 || r.Dropped != 0 || len(r.Failures) != 0 {
		t.Fatalf("calls %d connected %d failed %d dropped %d failures %v\n%s", r.Calls, r.Connected, r.Failed, r.Dropped, r.Failures, stderr.String())
	}
	f := r.Frames
	// 3 calls × (2 s hold + set-up) at 50 frames a second.
	if f.Sent < 3*100 || f.Lost != 0 || f.Echoed != f.Sent || f.Duplicates+f.Misrouted+f.Stale != 0 {
		t.Fatalf("frames %+v", f)
	}
	if f.Marks == 0 || f.Agent < 3 {
		t.Fatalf("marks echoed %d, agent frames %d: want the greeting and marks", f.Marks, f.Agent)
	}
	for name, l := range map[string]Latency{
		"round trip": r.Delay.RoundTrip, "twilio->model": r.Delay.TwilioToModel, "model->twilio": r.Delay.ModelToTwilio,
	} {
		if l.Count == 0 || l.P50 <= 0 || l.P50 > l.P90 || l.P90 > l.P99 || l.P99 > l.Max {
			t.Errorf("%s percentiles %+v", name, l)
		}
	}
	if r.AnswerToAudio.Count != 3 || r.AnswerToAudio.P50 <= 0 {
		t.Errorf("answer to first audio %+v", r.AnswerToAudio)
	}
	b := r.Bridge
	if b.PID == 0 || b.RSSPeakMiB <= 0 || b.CallSeconds <= 0 || b.CPUSeconds < 0 || b.FramesRelayed <= 0 || b.AllocsPerFrame < 0 {
		t.Errorf("bridge figures %+v", b)
	}
	if r.Machine.CPUs == 0 || r.Machine.GoVersion == "" || !strings.Contains(r.Command, "-calls 3") {
		t.Errorf("machine %+v command %q", r.Machine, r.Command)
	}

	// The same report as a table.
	var table bytes.Buffer
	if err := r.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"connected / failed / dropped", "3 / 0 / 0", "echo round trip", "per call-second"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}

	// And as the generated section of BENCHMARKS.md.
	runFile := filepath.Join(t.TempDir(), "run.json")
	if err := os.WriteFile(runFile, stdout.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	md := filepath.Join(t.TempDir(), "B.md")
	if err := os.WriteFile(md, []byte("# Bench\n\nhand-written\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, []string{"markdown", "-o", md, runFile}, nil, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(md)
	if !strings.HasPrefix(string(got), "# Bench\n\nhand-written\n") || !strings.Contains(string(got), "| 3 calls |") {
		t.Errorf("markdown:\n%s", got)
	}
}

// TestLoadWithRealtimetestFake drives the realtimetest fake in its echo
// mode: the round trip is measured, the split per direction is not.
func TestLoadWithRealtimetestFake(t *testing.T) {
	bin := buildBridge(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := Run(ctx, Config{Calls: 2, Ramp: 100 * time.Millisecond, Hold: time.Second, BridgeBin: bin, Model: ModelFake}, nopWriter{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Connected != 2 || r.Frames.Lost != 0 || r.Delay.RoundTrip.Count == 0 || r.Delay.TwilioToModel.Count != 0 {
		t.Fatalf("connected %d frames %+v delay %+v", r.Connected, r.Frames, r.Delay)
	}
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
