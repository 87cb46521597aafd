package bridge

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vivi/bridge/twiliotest"
)

// The loop rule of a liveness probe, on the fake clock: a frame handled
// after the probe (past the ones already queued) answers live, the bound
// passing without one or a close answers not live.
func TestProbesRule(t *testing.T) {
	const window = 300 * time.Millisecond
	synctest.Test(t, func(t *testing.T) {
		var p probes
		live := make(chan bool, 1)
		p.add(live, 2, window, time.Now()) // two frames queued before the probe
		p.frame()
		p.frame()
		if len(live) != 0 || p.waiting == nil {
			t.Fatal("a frame queued before the probe was taken as proof of life")
		}
		p.frame()
		if got := <-live; !got || p.waiting != nil {
			t.Fatalf("fresh frame: live %v, pending %v", got, p.waiting)
		}

		quiet := make(chan bool, 1)
		start := time.Now()
		p.add(quiet, 0, window, start)
		later := make(chan bool, 1)
		time.Sleep(100 * time.Millisecond) // fake clock: a second probe 100 ms later
		p.add(later, 0, window, time.Now())
		<-p.timerC()
		p.onTimer(time.Now())
		if got := <-quiet; got || time.Since(start) != window {
			t.Fatalf("quiet stream: live %v after %v", got, time.Since(start))
		}
		if len(later) != 0 {
			t.Fatal("the later probe expired with the first")
		}
		<-p.timerC() // re-armed for the later probe's own bound
		p.onTimer(time.Now())
		if got := <-later; got || time.Since(start) != window+100*time.Millisecond {
			t.Fatalf("later probe: live %v after %v", got, time.Since(start))
		}
		if p.timerC() != nil {
			t.Fatal("timer still armed with nothing pending")
		}

		closed := make(chan bool, 1)
		p.add(closed, 0, window, time.Now())
		p.fail()
		if got := <-closed; got || p.waiting != nil {
			t.Fatalf("closed stream: live %v", got)
		}
	})
}

// waitHeld waits until this server holds the accepted stream of callSID.
func (h *harness) waitHeld(callSID string) {
	h.t.Helper()
	waitFor(h.t, "the stream accepted", func() bool { return h.srv.find(callSID) != nil })
}

// A live stream (the fake sends media every 20 ms) answers live; another
// stream SID or another call does not.
func TestProbeStreamLive(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: func(c *Config) { c.ProbeWindow = waitLimit }})
	call, mc := h.call(nil)
	waitEvent(t, mc, "input_audio_buffer.append", 1)
	ctx := context.Background()
	if live, err := h.srv.ProbeStream(ctx, call.CallSID(), call.StreamSID()); !live || err != nil {
		t.Fatalf("live stream probed: %v, %v", live, err)
	}
	if live, err := h.srv.ProbeStream(ctx, call.CallSID(), ""); !live || err != nil {
		t.Fatalf("live stream probed without stream SID: %v, %v", live, err)
	}
	if live, err := h.srv.ProbeStream(ctx, call.CallSID(), "MZother"); live || err != nil {
		t.Fatalf("another stream probed: %v, %v", live, err)
	}
	if live, err := h.srv.ProbeStream(ctx, "CAnothere", ""); live || !errors.Is(err, ErrCallNotHere) {
		t.Fatalf("unknown call probed: %v, %v", live, err)
	}
	if s := h.sessions.get(call.CallSID()); s.EndReason != "" {
		t.Fatalf("probing ended the call: %q", s.EndReason)
	}
}

// An open socket that sends nothing is not live once the bound passes.
func TestProbeStreamQuiet(t *testing.T) {
	const window = 50 * time.Millisecond
	h := newHarness(t, harnessOpts{cfg: func(c *Config) { c.ProbeWindow = window }})
	sid, tok := h.newSession(nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	call, err := twiliotest.Dial(ctx, twiliotest.CallConfig{
		URL: h.url, SignURL: testSignURL, AuthToken: testAuthToken, AccountSID: testAccount,
		CallSID: sid, Parameters: map[string]string{"token": tok}, FrameInterval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { call.Close(); <-call.Done() }()
	h.waitHeld(sid)
	start := time.Now()
	if live, err := h.srv.ProbeStream(ctx, sid, call.StreamSID()); live || err != nil {
		t.Fatalf("quiet stream probed: %v, %v", live, err)
	}
	if d := time.Since(start); d < window {
		t.Fatalf("answered not live after %v, before the %v bound", d, window)
	}
}

// Twilio closes the socket and asks at once (connect-ended follows the
// close): the probe answers not live, long before its bound.
func TestProbeStreamClosed(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: func(c *Config) { c.ProbeWindow = time.Hour }})
	call, mc := h.call(nil)
	waitEvent(t, mc, "input_audio_buffer.append", 1)
	h.waitHeld(call.CallSID())
	call.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if live, err := h.srv.ProbeStream(ctx, call.CallSID(), call.StreamSID()); live || (err != nil && !errors.Is(err, ErrCallNotHere)) {
		t.Fatalf("closed stream probed: %v, %v", live, err)
	}
}

// A probe waiting on a quiet stream is answered not live when the socket
// closes, not when its (hour-long) bound passes.
func TestProbeStreamClosedWhileWaiting(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: func(c *Config) { c.ProbeWindow = time.Hour }})
	sid, tok := h.newSession(nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	call, err := twiliotest.Dial(ctx, twiliotest.CallConfig{
		URL: h.url, SignURL: testSignURL, AuthToken: testAuthToken, AccountSID: testAccount,
		CallSID: sid, Parameters: map[string]string{"token": tok}, FrameInterval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.waitHeld(sid)
	type answer struct {
		live bool
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		live, err := h.srv.ProbeStream(ctx, sid, call.StreamSID())
		got <- answer{live, err}
	}()
	call.Close()
	<-call.Done()
	if a := <-got; a.live || (a.err != nil && !errors.Is(a.err, ErrCallNotHere)) {
		t.Fatalf("closed stream probed: %v, %v", a.live, a.err)
	}
}
