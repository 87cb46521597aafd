package bridge

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiliotest"
)

// UpdateTwiML replaces a call's TwiML through the Twilio REST fake, like
// transfer.Twilio.
func (rc restCalls) UpdateTwiML(ctx context.Context, callSID, twiml string) error {
	u := rc.rest.URL() + "/2010-04-01/Accounts/" + testAccount + "/Calls/" + callSID + ".json"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(url.Values{"Twiml": {twiml}}.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(testAccount, testAuthToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errHTTP(resp.StatusCode)
	}
	return nil
}

type errHTTP int

func (e errHTTP) Error() string { return "update call: HTTP " + http.StatusText(int(e)) }

// Timer durations of the model-fault tests, distinct so that a fakeAfter
// tells them apart (and from StartTimeout 10 s, HangupWait 15 s).
const (
	testReadyTimeout = 4 * time.Second
	testModelWait    = 7 * time.Second
)

// faultCfg injects the timers and the model bounds.
func faultCfg(timers *fakeAfter, more func(*Config)) func(*Config) {
	return func(c *Config) {
		c.After = timers.after
		c.ModelReadyTimeout, c.ModelWait = testReadyTimeout, testModelWait
		if more != nil {
			more(c)
		}
	}
}

// awaitBackoff waits for the n-th re-dial backoff timer (a duration within
// the jittered range of failures failed dials) and returns it.
func awaitBackoff(t *testing.T, f *fakeAfter, failures, n int) *fakeTimer {
	t.Helper()
	lo, hi := redialDelay(failures, 0), redialDelay(failures, 0.999999)
	var got *fakeTimer
	f.added.Wait(t, waitLimit, "a re-dial backoff timer", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		k := 0
		for _, ft := range f.timers {
			if ft.d >= lo && ft.d <= hi {
				if k++; k == n {
					got = ft
					return true
				}
			}
		}
		return false
	})
	return got
}

// waitApology waits for the apology TwiML (a <Say> then <Hangup/>) on the
// call through the REST fake.
func waitApology(t *testing.T, h *harness, callSID string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	r, err := h.rest.WaitRequest(ctx, func(r twiliotest.RESTRequest) bool {
		return strings.Contains(r.Path, callSID) && strings.Contains(r.Form.Get("Twiml"), "<Say>")
	})
	if err != nil {
		t.Fatalf("no apology TwiML: %v", err)
	}
	if tw := r.Form.Get("Twiml"); !strings.Contains(tw, "<Hangup/>") {
		t.Fatalf("apology TwiML %q has no hang-up", tw)
	}
}

// fallbackAgent is testAgent with Sales as its fallback destination.
func fallbackAgent() Agent {
	a := testAgent()
	a.FallbackDestination = "Sales"
	return a
}

// TestModelRefusedFirstDialThenSuccess: the first dial at the start is
// refused (HTTP 503, then 429); the bridge re-dials after the backoff and
// the call goes on: the greeting reaches Twilio and caller audio the model.
// Before issue 10 the refusal ended the call with 1011 and no agent audio.
func TestModelRefusedFirstDialThenSuccess(t *testing.T) {
	for _, status := range []int{http.StatusServiceUnavailable, http.StatusTooManyRequests} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			timers := newFakeAfter()
			h := newHarness(t, harnessOpts{
				model: realtimetest.Options{RefuseDials: 1, RefuseStatus: status},
				cfg:   faultCfg(timers, nil),
			})
			sid, tok := h.newSession(nil)
			call := h.dial(sid, tok)
			h.waitLog(zapcore.WarnLevel, "model dial failed: re-dialling after a backoff")
			if h.model.Dials() != 1 || len(h.model.Conns()) != 0 {
				t.Fatalf("dials %d conns %d before the backoff", h.model.Dials(), len(h.model.Conns()))
			}
			awaitBackoff(t, timers, 1, 1).fire()
			mc := h.nextConn()
			waitEvent(t, mc, "response.create", 1)
			waitFor(t, "the greeting at Twilio", func() bool { return call.ReceivedBytes() >= 1600 })
			waitEvent(t, mc, "input_audio_buffer.append", 5)
			s := h.sessions.get(sid)
			if s.State.Terminal() {
				t.Fatalf("session ended: %s", s.EndReason)
			}
			if e, ok := hasEvent(s, session.EventModelError); !ok || !strings.Contains(e.Detail, "dial failed") {
				t.Fatalf("timeline has no failed dial: %+v", s.Timeline)
			}
		})
	}
}

// TestModelNeverUpgradesFallbackTransfer: the model accepts TCP but never
// answers the upgrade. Each dial is dropped at ModelReadyTimeout and
// re-dialled; at ModelWait the call is transferred to the agent's
// fallbackDestination through the normal REFER path (via fallback).
func TestModelNeverUpgradesFallbackTransfer(t *testing.T) {
	timers := newFakeAfter()
	tr := &recTransfers{}
	h := newHarness(t, harnessOpts{
		model: realtimetest.Options{NoUpgrade: true}, agent: fallbackAgent(), transfers: tr,
		cfg: faultCfg(timers, nil),
	})
	sid, tok := h.newSession(nil)
	call := h.dial(sid, tok)
	waitFor(t, "the first dial at the model", func() bool { return h.model.Dials() == 1 })
	timers.await(t, testReadyTimeout, 1).fire() // the first dial hangs: dropped
	awaitBackoff(t, timers, 1, 1).fire()
	waitFor(t, "a second dial", func() bool { return h.model.Dials() == 2 })
	timers.await(t, testModelWait, 1).fire()
	waitFor(t, "the fallback transfer", func() bool { return len(tr.requests()) == 1 })
	req := tr.requests()[0]
	if req.Via != ViaFallback || req.Destination.Name != "Sales" || req.CallSID != sid {
		t.Fatalf("transfer %+v; want Sales via fallback", req)
	}
	h.waitLog(zapcore.WarnLevel, "model unavailable: transferring to the fallback destination")
	if got := len(h.rest.Requests()); got != 0 {
		t.Fatalf("%d REST requests; want none (no apology, no hang-up)", got)
	}
	if s := h.sessions.get(sid); s.State.Terminal() {
		t.Fatalf("session ended %q: the REFER outcome decides", s.EndReason)
	}
	call.Stop() // what Twilio does to run the REFER
	waitDone(t, "the Twilio socket to close", call.Done())
}

// TestModelUnavailableApology: no fallback destination: at ModelWait the
// caller hears the apology (REST <Say> then <Hangup/>), and the session
// ends with model_unavailable and says why.
func TestModelUnavailableApology(t *testing.T) {
	timers := newFakeAfter()
	h := newHarness(t, harnessOpts{model: realtimetest.Options{NoUpgrade: true}, cfg: faultCfg(timers, nil)})
	sid, tok := h.newSession(nil)
	call := h.dial(sid, tok)
	timers.await(t, testModelWait, 1).fire()
	waitApology(t, h, sid)
	waitDone(t, "the Twilio socket to close", call.Done())
	s := h.waitEnded(sid)
	if s.EndReason != ReasonModelUnavailable {
		t.Fatalf("end reason %q", s.EndReason)
	}
	found := false
	for _, e := range s.Timeline {
		found = found || e.Type == session.EventModelError && strings.Contains(e.Detail, "model unavailable: no model session within")
	}
	if !found {
		t.Fatalf("timeline does not say why: %+v", s.Timeline)
	}
}

// TestFallbackTransferFailsThenApology: the fallback transfer fails: the
// caller hears the apology, never silence.
func TestFallbackTransferFailsThenApology(t *testing.T) {
	timers := newFakeAfter()
	tr := &recTransfers{err: errHTTP(http.StatusBadGateway)}
	h := newHarness(t, harnessOpts{
		model: realtimetest.Options{NoUpgrade: true}, agent: fallbackAgent(), transfers: tr,
		cfg: faultCfg(timers, nil),
	})
	sid, tok := h.newSession(nil)
	call := h.dial(sid, tok)
	timers.await(t, testModelWait, 1).fire()
	waitFor(t, "the fallback transfer", func() bool { return len(tr.requests()) == 1 })
	waitApology(t, h, sid)
	waitDone(t, "the Twilio socket to close", call.Done())
	if s := h.waitEnded(sid); s.EndReason != ReasonModelUnavailable {
		t.Fatalf("end reason %q", s.EndReason)
	}
}

// TestModelNotReadyRedials: a session that never sends session.updated is
// dropped at ModelReadyTimeout and re-dialled; caller audio meanwhile is
// held, not sent to it.
func TestModelNotReadyRedials(t *testing.T) {
	timers := newFakeAfter()
	h := newHarness(t, harnessOpts{model: realtimetest.Options{NoSessionUpdated: true}, cfg: faultCfg(timers, nil)})
	_, mc := h.call(nil)
	waitEvent(t, mc, "session.update", 1)
	timers.await(t, testReadyTimeout, 1).fire()
	waitDone(t, "the unready session to be closed", mc.Done())
	awaitBackoff(t, timers, 1, 1).fire()
	mc2 := h.nextConn()
	waitEvent(t, mc2, "session.update", 1)
	if n := len(mc.InputAudio()); n != 0 {
		t.Fatalf("%d bytes of caller audio sent to a session that was not ready", n)
	}
	h.waitLog(zapcore.WarnLevel, "model dial failed")
}

// TestModelFatalErrorRedials: a session that reports insufficient_quota and
// stays open is closed and re-dialled after the backoff.
func TestModelFatalErrorRedials(t *testing.T) {
	timers := newFakeAfter()
	h := newHarness(t, harnessOpts{model: realtimetest.Options{FatalError: "insufficient_quota"}, cfg: faultCfg(timers, nil)})
	_, mc := h.call(nil)
	waitDone(t, "the unusable session to be closed", mc.Done())
	h.waitLog(zapcore.WarnLevel, "model session unusable")
	awaitBackoff(t, timers, 1, 1).fire()
	mc2 := h.nextConn()
	waitDone(t, "the second unusable session to be closed", mc2.Done())
	awaitBackoff(t, timers, 2, 1) // the backoff grows
}

// TestDropBudgetIsARate: MaxRedials drops within RedialWindow are
// re-dialled; drops spread over more than the window never run out; one
// more within a window gives up on the model.
func TestDropBudgetIsARate(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, harnessOpts{cfg: func(c *Config) {
		c.MaxRedials, c.RedialWindow, c.Now = 2, 10*time.Minute, clock.Now
	}})
	call, mc := h.call(nil)
	drop := func() {
		t.Helper()
		waitEvent(t, mc, "response.create", 1) // ready
		mc.CloseWith(1011, "internal error")
		mc = h.nextConn()
	}
	for range 3 { // 6 drops in 30 minutes, 2 per window
		drop()
		drop()
		clock.Advance(11 * time.Minute)
	}
	drop()
	drop()
	waitEvent(t, mc, "response.create", 1)
	mc.CloseWith(1011, "internal error") // the third in one window
	waitDone(t, "the Twilio socket to close", call.Done())
	if s := h.waitEnded(call.CallSID()); s.EndReason != ReasonModelUnavailable {
		t.Fatalf("end reason %q", s.EndReason)
	}
	if n := len(h.model.Conns()); n != 9 {
		t.Fatalf("%d model sessions; want 9 (8 drops re-dialled)", n)
	}
	h.waitLog(zapcore.WarnLevel, "drop budget is spent")
}

// TestHeldAudioWarningRateLimited: while the model is not ready, the
// caller's held audio overflows on every frame, but "caller audio held too
// long" is logged once per warnEvery, with the count of lines suppressed.
func TestHeldAudioWarningRateLimited(t *testing.T) {
	clock := newFakeClock()
	timers := newFakeAfter()
	h := newHarness(t, harnessOpts{model: realtimetest.Options{NoSessionUpdated: true}, cfg: faultCfg(timers, func(c *Config) {
		c.HoldAudio, c.Now = 100*time.Millisecond, clock.Now
	})})
	_, mc := h.call(nil)
	waitEvent(t, mc, "session.update", 1)
	const msg = "caller audio held too long"
	lines := func() []observer.LoggedEntry { return h.logs.FilterMessageSnippet(msg).All() }
	waitFor(t, "the first warning", func() bool { return len(lines()) == 1 })
	framesIn := func() float64 { return h.counter("vivi_bridge_frames_relayed_total", "direction", "twilio_to_model") }
	start := framesIn()
	waitFor(t, "50 more caller frames (1 s)", func() bool { return framesIn() >= start+50 })
	if n := len(lines()); n != 1 {
		t.Fatalf("%d warnings within warnEvery; want 1", n)
	}
	clock.Advance(warnEvery)
	waitFor(t, "the second warning", func() bool { return len(lines()) == 2 })
	if sup, _ := lines()[1].ContextMap()["suppressed"].(int64); sup < 50 {
		t.Fatalf("second warning: suppressed %v; want the ≥50 frames in between", lines()[1].ContextMap()["suppressed"])
	}
}
