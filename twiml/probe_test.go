package twiml

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"

	"go.uber.org/zap/zapcore"

	"github.com/vivi/bridge/session"
)

// fakeProber answers stream probes with live/err and records the questions.
type fakeProber struct {
	live bool
	err  error
	mu   sync.Mutex
	asks []string // "pod call stream"
}

func (f *fakeProber) ProbeStream(_ context.Context, podID, callSID, streamSID string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asks = append(f.asks, podID+" "+callSID+" "+streamSID)
	return f.live, f.err
}

func (f *fakeProber) asked() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.asks...)
}

// Issue 9: connect-ended for the current generation while the stream's pod
// says the stream is live is stale: four posts answer an empty <Response/>,
// write nothing, mint no token, and log stale_callback with the stream.
func TestConnectEndedLiveStreamIsStale(t *testing.T) {
	p := &fakeProber{live: true}
	x := newHarnessWith(t, "https://host.example", true, p)
	action := x.liveCall(t, "CA1")
	before := x.sessions.get(t, "CA1")
	for range 4 {
		wantEmpty(t, x.post(action, connectEnded("CA1")))
	}
	after := x.sessions.get(t, "CA1")
	if !reflect.DeepEqual(before, after) || x.sessions.writes.Load() != 0 {
		t.Fatalf("session changed (%d writes):\n%+v\n%+v", x.sessions.writes.Load(), before, after)
	}
	if n := x.issuer.calls.Load(); n != 1 {
		t.Fatalf("%d tokens issued, want only the webhook's", n)
	}
	if got := p.asked(); len(got) != 4 || got[0] != "pod-a CA1 MZ1" {
		t.Fatalf("probes %v", got)
	}
	stale := 0
	for _, e := range x.logs.All() {
		m := e.ContextMap()
		if e.Level == zapcore.WarnLevel && m["reason"] == outcomeStale && m["call_sid"] == "CA1" && m["stream_sid"] == "MZ1" {
			stale++
		}
	}
	if stale != 4 {
		t.Fatalf("%d stale_callback warnings with call_sid and stream_sid, want 4", stale)
	}
}

// A pod that says not live, or does not answer, gets the reconnect as
// without a prober: a real end must not drop the caller.
func TestConnectEndedProbeNotLiveReconnects(t *testing.T) {
	for name, p := range map[string]*fakeProber{
		"not live":  {live: false},
		"no answer": {live: true, err: errors.New("pod pod-a did not answer")},
	} {
		t.Run(name, func(t *testing.T) {
			x := newHarnessWith(t, "https://host.example", true, p)
			action := x.liveCall(t, "CA1")
			answered(t, x.post(action, connectEnded("CA1")), "host.example")
			s := x.sessions.get(t, "CA1")
			if countEvents(s, EventReconnect) != 1 || s.StreamSID != "" || x.issuer.calls.Load() != 2 {
				t.Fatalf("%d reconnects, stream %q, %d tokens", countEvents(s, EventReconnect), s.StreamSID, x.issuer.calls.Load())
			}
			if got := p.asked(); len(got) != 1 {
				t.Fatalf("probes %v", got)
			}
		})
	}
}

// Only a streaming session with a pod is probed; stale callbacks are told
// apart without asking.
func TestConnectEndedProbesOnlyStreaming(t *testing.T) {
	p := &fakeProber{live: true}
	x := newHarnessWith(t, "https://host.example", true, p)
	action := x.liveCall(t, "CA1")
	wantEmpty(t, x.post(action+"x", connectEnded("CA1"))) // another generation
	x.sessions.mu.Lock()
	x.sessions.byID["CA1"].PodID = "" // no pod holds it (an earlier reconnect)
	x.sessions.mu.Unlock()
	answered(t, x.post(action, connectEnded("CA1")), "host.example")
	if got := p.asked(); len(got) != 0 {
		t.Fatalf("probes %v", got)
	}
	if s := x.sessions.get(t, "CA1"); s.State != session.Streaming || countEvents(s, EventReconnect) != 1 {
		t.Fatalf("state %s, %d reconnects", s.State, countEvents(s, EventReconnect))
	}
}
