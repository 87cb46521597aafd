package main

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiliotest"
)

// scrape returns the pod's /metrics samples of family, keyed by the
// value of its reason label.
func scrape(t *testing.T, base, family string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), `{reason="`)
		if !ok || name != family {
			continue
		}
		reason, val, _ := strings.Cut(rest, `"} `)
		v, _ := strconv.ParseFloat(val, 64)
		out[reason] = v
	}
	return out
}

// TestMetricsCountCallsAndStreamsApart is the demo's call: a transfer the
// PBX answers busy, the call resumed on a new stream, then the caller hangs
// up. Two streams ended (one stopped for the transfer, one by the hang-up),
// one call ended, once, with the session's end reason.
func TestMetricsCountCallsAndStreamsApart(t *testing.T) {
	e := newE2E(t, realtimetest.Options{Greeting: realtimetest.Pattern(800), GreetingTranscript: "Hello."})
	pod := e.start("pod-a")
	e.tw.SetReferOutcome(func(string, string) twiliotest.ReferOutcome {
		return twiliotest.ReferOutcome{CallStatus: "busy", ReferSIPCode: "202", NotifySIPCode: "486"}
	})
	call := e.place("203.0.113.10")
	stream, conn := e.streamAndModel(call, 1)
	if err := stream.WaitPlayedBytes(e.ctx, 800); err != nil {
		t.Fatal(err)
	}
	conn.CallFunction("transfer_call", `{"destination":"Front Desk"}`)
	stream2, _ := e.streamAndModel(call, 2)
	e.waitSession(call.CallSID(), "resumed", func(s *session.Session) bool {
		return s.State == session.Streaming && s.StreamSID == stream2.StreamSID()
	})
	call.Hangup(e.ctx)
	s := e.waitSession(call.CallSID(), "ended", func(s *session.Session) bool { return s.State == session.Ended })

	var streams, calls map[string]float64
	sum := func(m map[string]float64) (n float64) {
		for _, v := range m {
			n += v
		}
		return n
	}
	if err := waitFor(func() bool {
		streams = scrape(t, pod.url, "vivi_bridge_streams_ended_total")
		calls = scrape(t, pod.url, "vivi_calls_ended_total")
		return sum(streams) >= 2 && sum(calls) >= 1
	}); err != nil {
		t.Fatalf("streams ended %v, calls ended %v: want 2 streams and 1 call", streams, calls)
	}
	if streams["transferred"] != 1 || sum(streams) != 2 {
		t.Errorf("streams ended %v: want transferred 1 and one more", streams)
	}
	if calls[s.EndReason] != 1 || sum(calls) != 1 || calls["transferred"] != 0 {
		t.Errorf("calls ended %v: want exactly one, %q (the session's end reason)", calls, s.EndReason)
	}
}
