package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiliotest"
)

func waitDone(t *testing.T, what string, done <-chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestModelDropEndsCall: the model is gone for good (its server closed):
// the re-dials fail until ModelWait, then the caller hears the apology
// (the agent has no fallback destination) and the call ends with
// model_unavailable. Issue 10 changed this from "the first failed re-dial
// ends the call with model_dropped and 1011".
func TestModelDropEndsCall(t *testing.T) {
	timers := newFakeAfter()
	h := newHarness(t, harnessOpts{cfg: func(c *Config) { c.After = timers.after; c.ModelWait = testModelWait }})
	call, mc := h.call(nil)
	waitEvent(t, mc, "input_audio_buffer.append", 1)
	h.model.Close() // the connection drops and the re-dials are refused
	h.waitLog(0, "model dial failed: re-dialling after a backoff")
	timers.await(t, testModelWait, 2).fire() // the first bounded the start
	waitDone(t, "the Twilio socket to close", call.Done())
	if s := h.waitEnded(call.CallSID()); s.EndReason != ReasonModelUnavailable {
		t.Fatalf("end reason %q", s.EndReason)
	}
	waitApology(t, h, call.CallSID())
}

// TestModelRedialLimit: MaxRedials drops within RedialWindow are
// re-dialled; the next one gives up on the model (issue 10: the end is
// the apology, reason model_unavailable, not model_dropped).
func TestModelRedialLimit(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: func(c *Config) { c.MaxRedials = 2 }})
	call, mc := h.call(nil)
	for i := range 3 {
		waitEvent(t, mc, "session.update", 1)
		waitEvent(t, mc, "response.create", 1) // ready: a drop, not a failed dial
		mc.CloseWith(1011, "internal error")
		if i < 2 {
			mc = h.nextConn()
		}
	}
	waitDone(t, "the Twilio socket to close", call.Done())
	if s := h.waitEnded(call.CallSID()); s.EndReason != ReasonModelUnavailable {
		t.Fatalf("end reason %q", s.EndReason)
	}
	h.waitLog(0, "drop budget is spent")
	waitApology(t, h, call.CallSID())
}

func TestTwilioDropEndsCall(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	call, mc := h.call(nil)
	waitEvent(t, mc, "input_audio_buffer.append", 1)
	call.Close() // no stop, no close frame
	waitDone(t, "the model connection to close", mc.Done())
	if s := h.waitEnded(call.CallSID()); s.EndReason != ReasonTwilioDisconnected {
		t.Fatalf("end reason %q", s.EndReason)
	}
}

func TestStopWhileTransferringLeavesSession(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	call, mc := h.call(nil)
	waitEvent(t, mc, "input_audio_buffer.append", 1)
	// What the transfer does to the record while the stream runs.
	if _, err := h.sessions.UpdateSession(context.Background(), call.CallSID(), func(s *session.Session) error {
		return s.Transition(session.Transferring, time.Now())
	}); err != nil {
		t.Fatal(err)
	}
	call.Stop()
	waitDone(t, "the model connection to close", mc.Done())
	waitDone(t, "the Twilio socket to close", call.Done())
	waitFor(t, "stream_stopped recorded", func() bool {
		_, ok := hasEvent(h.sessions.get(call.CallSID()), session.EventStreamStopped)
		return ok
	})
	if s := h.sessions.get(call.CallSID()); s.State != session.Transferring || s.EndReason != "" {
		t.Fatalf("session %s ended %q", s.State, s.EndReason)
	}
}

// TestShutdown: without a Migrator a draining server keeps its calls until
// the deadline, then ends them with reason shutdown; a stream arriving
// while it drains is accepted (never 503: Twilio sent it during the load
// balancer's propagation delay), one arriving after Shutdown returned is
// refused.
func TestShutdown(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	call, mc := h.call(nil)
	waitEvent(t, mc, "input_audio_buffer.append", 1)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.srv.Shutdown(ctx) }()
	waitFor(t, "draining", func() bool {
		h.srv.mu.Lock()
		defer h.srv.mu.Unlock()
		return h.srv.draining
	})
	late, lateModel := h.call(nil)
	waitEvent(t, lateModel, "input_audio_buffer.append", 1) // accepted and relayed
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown = %v", err)
	}
	for _, c := range []*twiliotest.Call{call, late} {
		waitDone(t, "the Twilio socket to close", c.Done())
		if s := h.waitEnded(c.CallSID()); s.EndReason != ReasonShutdown {
			t.Fatalf("end reason %q", s.EndReason)
		}
	}
	if h.srv.ActiveCalls() != 0 {
		t.Fatalf("ActiveCalls = %d", h.srv.ActiveCalls())
	}
	sid, tok := h.newSession(nil)
	_, err := twiliotest.Dial(context.Background(), twiliotest.CallConfig{
		URL: h.url, SignURL: testSignURL, AuthToken: testAuthToken, CallSID: sid, Parameters: map[string]string{"token": tok},
	})
	var he *twiliotest.HandshakeError
	if !errors.As(err, &he) || he.Status != http.StatusServiceUnavailable {
		t.Fatalf("stream after Shutdown: %v, want HTTP 503", err)
	}
}

func TestBaseContextCancelEndsCalls(t *testing.T) {
	base, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHarness(t, harnessOpts{cfg: func(c *Config) { c.BaseContext = base }})
	call, mc := h.call(nil)
	waitEvent(t, mc, "input_audio_buffer.append", 1)
	cancel()
	waitDone(t, "the Twilio socket to close", call.Done())
	if s := h.waitEnded(call.CallSID()); s.EndReason != ReasonShutdown {
		t.Fatalf("end reason %q", s.EndReason)
	}
}

// itemTexts returns the role and text of each conversation.item.create
// message the connection received.
func itemTexts(t *testing.T, mc *realtimetest.Conn) [][2]string {
	t.Helper()
	var out [][2]string
	for _, e := range mc.Events() {
		if e.Type != "conversation.item.create" {
			continue
		}
		var ev struct {
			Item struct {
				Type, Role string
				Content    []struct{ Type, Text string }
			}
		}
		if err := json.Unmarshal(e.Raw, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Item.Type == "message" && len(ev.Item.Content) == 1 {
			out = append(out, [2]string{ev.Item.Role + "/" + ev.Item.Content[0].Type, ev.Item.Content[0].Text})
		}
	}
	return out
}

func TestSessionExpiredRedialsAndReseeds(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	call, mc := h.call(nil)
	waitFor(t, "the greeting at Twilio", func() bool { return call.ReceivedBytes() >= 1600 })
	mc.Transcription("I need the front desk")
	waitFor(t, "two turns recorded", func() bool { return len(h.sessions.get(call.CallSID()).Transcript) == 2 })

	mc.Expire()
	mc2 := h.nextConn()
	waitEvent(t, mc2, "response.create", 1)
	got := itemTexts(t, mc2)
	want := [][2]string{{"assistant/output_text", "greeting"}, {"user/input_text", "I need the front desk"}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("re-seeded items %v, want %v", got, want)
	}
	// order: session.update, the items, then response.create (and audio)
	var order []string
	for _, e := range mc2.Events() {
		if e.Type != "input_audio_buffer.append" {
			order = append(order, e.Type)
		}
	}
	if len(order) < 4 || order[0] != "session.update" || order[3] != "response.create" {
		t.Fatalf("event order %v", order)
	}
	keepsRelaying(t, mc2)
	s := h.sessions.get(call.CallSID())
	if s.State != session.Streaming {
		t.Fatalf("state %s", s.State)
	}
	if _, ok := hasEvent(s, session.EventModelReconnect); !ok {
		t.Fatalf("timeline lacks model_reconnected: %+v", s.Timeline)
	}
	if ev, ok := hasEvent(s, session.EventModelError); !ok || ev.Detail != "session_expired" {
		t.Fatalf("timeline model_error %+v", ev)
	}
	select {
	case <-call.Done():
		t.Fatal("the call ended")
	default:
	}
}

func TestResumeAfterFailedTransfer(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	now := time.Now()
	call, mc := h.call(func(s *session.Session) {
		_ = s.Transition(session.Streaming, now)
		s.AddTurn(now, session.RoleAgent, "Hello, ACME here!")
		s.AddTurn(now, session.RoleCaller, "Front desk please")
		s.AddTransfer(session.Transfer{Destination: "Front Desk", Via: ViaTool, At: now, Status: "busy", ReferSIPCode: "202", NotifySIPCode: "486"})
		_ = s.Transition(session.Transferring, now)
	})
	rc := waitEvent(t, mc, "response.create", 1)
	if string(rc.Raw) != `{"type":"response.create"}` {
		t.Fatalf("resume response.create %s (no greeting expected)", rc.Raw)
	}
	got := itemTexts(t, mc)
	want := [][2]string{
		{"assistant/output_text", "Hello, ACME here!"},
		{"user/input_text", "Front desk please"},
		{"system/input_text", "The transfer to Front Desk failed (busy, SIP 486). Tell the caller and offer another option."},
	}
	if len(got) != len(want) {
		t.Fatalf("items %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("item %d = %v, want %v", i, got[i], want[i])
		}
	}
	waitFor(t, "streaming again", func() bool { return h.sessions.get(call.CallSID()).State == session.Streaming })
	if _, ok := hasEvent(h.sessions.get(call.CallSID()), session.EventResumed); !ok {
		t.Fatal("timeline lacks resumed")
	}
}

func TestEndedSessionRefused(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	sid, tok := h.newSession(func(s *session.Session) { s.End("caller_hangup", time.Now()) })
	c := h.dial(sid, tok)
	waitDone(t, "the refused stream to close", c.Done())
	h.waitLog(0, "the call session has already ended")
}
