package bridge

import (
	"context"
	"net/url"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/twiliotest"
)

// TestEndCallGoodbyeWaitTimesOut: when the goodbye has not finished playing
// HangupWait after the model's response is done, end_call hangs up anyway;
// not before the wait ends. The wait is a fakeAfter timer, fired by the
// test: no real HangupWait passes, and a slow machine cannot make the
// goodbye finish first.
func TestEndCallGoodbyeWaitTimesOut(t *testing.T) {
	timers := newFakeAfter()
	const wait = 15 * time.Second // the default HangupWait
	h := newHarness(t, harnessOpts{cfg: func(c *Config) { c.After = timers.after }})
	call, mc := h.call(nil)
	waitFor(t, "the greeting at Twilio", func() bool { return call.ReceivedBytes() >= 1600 })

	var mu sync.Mutex
	buffered := -1
	h.rest.OnCallUpdate(func(sid string, form url.Values) (int, string) {
		mu.Lock()
		defer mu.Unlock()
		buffered = call.BufferedBytes()
		return 200, `{"sid":"` + sid + `","status":"completed"}`
	})
	mc.Speak("item_bye", realtimetest.Pattern(8000*60), "Goodbye!") // a minute: it cannot finish
	mc.CallFunction("end_call", "{}")

	// The response is done, so the wait for the playout is HangupWait
	// (2×HangupWait only while a response runs).
	goodbye := timers.await(t, wait, 1)
	if h.logs.FilterMessage("hanging up (end_call)").Len() != 0 || len(h.rest.Requests()) != 0 {
		t.Fatal("hung up before the goodbye wait ended")
	}
	goodbye.fire()

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if _, err := h.rest.WaitRequest(ctx, func(r twiliotest.RESTRequest) bool { return r.Form.Get("Status") == "completed" }); err != nil {
		t.Fatal(err)
	}
	if e := h.waitLog(zapcore.InfoLevel, "hanging up (end_call)"); e.ContextMap()["why"] != "goodbye wait timed out" {
		t.Fatalf("hang-up log %v; want why=goodbye wait timed out", e.ContextMap())
	}
	mu.Lock()
	if buffered <= 0 {
		t.Errorf("at the hang-up %d bytes were buffered at Twilio; want the unplayed goodbye", buffered)
	}
	mu.Unlock()
	waitDone(t, "the Twilio socket to close", call.Done())
	if s := h.waitEnded(call.CallSID()); s.EndReason != ReasonAgentHangup {
		t.Fatalf("end reason %q", s.EndReason)
	}
}

// TestTransferAnnouncementWaitTimesOut: when the announcement has not
// finished playing HangupWait after the response is done, the transfer
// goes ahead anyway; not before. The wait is a fakeAfter timer.
func TestTransferAnnouncementWaitTimesOut(t *testing.T) {
	timers := newFakeAfter()
	const wait = 15 * time.Second // the default HangupWait
	tr := &recTransfers{}
	h := newHarness(t, harnessOpts{transfers: tr, cfg: func(c *Config) { c.After = timers.after }})
	call, mc := h.call(nil)
	waitFor(t, "the greeting at Twilio", func() bool { return call.ReceivedBytes() >= 1600 })

	mc.Speak("item_xfer", realtimetest.Pattern(8000*60), "Transferring you to sales.") // a minute
	good := mc.CallFunction("transfer_call", `{"destination":"Sales"}`)
	announcement := timers.await(t, wait, 1)
	if n := len(tr.requests()); n != 0 {
		t.Fatalf("%d transfers before the announcement wait ended", n)
	}
	announcement.fire()

	waitFor(t, "the transfer", func() bool { return functionOutputs(t, mc)[good] != "" })
	if out := functionOutputs(t, mc)[good]; out != `{"ok":true,"status":"transferring"}` {
		t.Fatalf("transfer output %q", out)
	}
	if reqs := tr.requests(); len(reqs) != 1 || reqs[0].Destination.Name != "Sales" || reqs[0].Via != ViaTool {
		t.Fatalf("transfers %+v; want one to Sales", reqs)
	}
	if e := h.waitLog(zapcore.InfoLevel, "transferring"); e.ContextMap()["why"] != "announcement wait timed out" {
		t.Fatalf("transfer log %v; want why=announcement wait timed out", e.ContextMap())
	}
	if call.BufferedBytes() <= 0 {
		t.Error("nothing buffered at Twilio at the transfer; want the unplayed announcement")
	}
}

// TestOperatorRequestBusyLoop: an operator request that the call loop does
// not take within deliverTimeout (the loop is busy) fails with ErrCallBusy
// when the timer fires, and the loop is not harmed.
func TestOperatorRequestBusyLoop(t *testing.T) {
	timers := newFakeAfter()
	h := newHarness(t, harnessOpts{cfg: func(c *Config) { c.After = timers.after }})
	tw, mc := h.call(nil)
	waitEvent(t, mc, "response.create", 1)

	// Occupy the loop with a request that blocks until released.
	busy, unblock := make(chan struct{}), make(chan struct{})
	release := sync.OnceFunc(func() { close(unblock) })
	t.Cleanup(release) // before the harness's: a failing test must free the loop
	first := make(chan error, 1)
	go func() {
		first <- h.srv.deliver(tw.CallSID(), func(*call) {
			close(busy)
			<-unblock
		})
	}()
	<-busy
	second := make(chan error, 1)
	go func() { second <- h.srv.HangupCall(tw.CallSID()) }()
	timers.await(t, deliverTimeout, 2).fire() // the first request's timer is the first one
	select {
	case err := <-second:
		if err != ErrCallBusy {
			t.Fatalf("HangupCall on a busy loop = %v; want ErrCallBusy", err)
		}
	case <-time.After(waitLimit): // a bound on a broken bridge, not a wait
		t.Fatal("HangupCall on a busy loop did not return when its timer fired")
	}
	h.waitLog(zapcore.WarnLevel, "operator request not delivered: call loop busy")
	release()
	if err := <-first; err != nil {
		t.Fatalf("the first request = %v", err)
	}
	if tw.ClosedByServer() {
		t.Fatal("the busy request ended the call")
	}
	// The loop takes requests again.
	if err := h.srv.HangupCall(tw.CallSID()); err != nil {
		t.Fatalf("HangupCall after the loop is free = %v", err)
	}
	waitDone(t, "the Twilio socket to close", tw.Done())
}
