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
