package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiliotest"
)

// dialPod opens a media stream for callSID with token straight to pod,
// signed for the public URL like Twilio signs it.
func (e *e2e) dialPod(pod *e2ePod, callSID, token string) *twiliotest.Call {
	e.t.Helper()
	host := strings.TrimPrefix(e.lb.URL, "http://")
	c, err := twiliotest.Dial(e.ctx, twiliotest.CallConfig{
		URL: "ws" + strings.TrimPrefix(pod.url, "http") + "/twilio/stream", SignURL: "wss://" + host + "/twilio/stream",
		AuthToken: e2eAuthToken, AccountSID: e2eAccount, CallSID: callSID, Parameters: map[string]string{"token": token},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close(); <-c.Done() })
	return c
}

// wantRefused waits for the bridge to close c with 1008.
func (e *e2e) wantRefused(c *twiliotest.Call) {
	e.t.Helper()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		e.t.Fatal("the stream was not refused")
	}
	var ce *websocket.CloseError
	if !errors.As(c.Err(), &ce) || ce.Code != websocket.ClosePolicyViolation {
		e.t.Fatalf("stream ended with %v, want a 1008 close", c.Err())
	}
}

func e2eTokens(t *testing.T) *session.Tokens {
	t.Helper()
	tokens, err := session.NewTokens([]byte(e2eSecret), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return tokens
}

// A second token of a call streaming on pod-a, used on pod-b (real Redis):
// refused, the call goes on, one model session.
func TestSecondStreamRefusedAcrossPods(t *testing.T) {
	e := newE2E(t, realtimetest.Options{})
	e.start("pod-a")
	podB := e.start("pod-b")
	call := e.place("203.0.113.10")
	stream, conn := e.streamAndModel(call, 1)
	sid := call.CallSID()
	e.waitSession(sid, "streaming on pod-a", func(s *session.Session) bool {
		return s.State == session.Streaming && s.StreamSID == stream.StreamSID()
	})
	tok, _, err := e2eTokens(t).Issue(sid, "tls-pbx", "reception", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e.wantRefused(e.dialPod(podB, sid, tok))
	e.wantCallerAudio(conn)
	if s := e.session(sid); s.State != session.Streaming || s.PodID != "pod-a" || s.StreamSID != stream.StreamSID() {
		t.Fatalf("session after the refused stream: %s %s %s", s.State, s.PodID, s.StreamSID)
	}
	if n := len(e.model.Conns()); n != 1 {
		t.Fatalf("model sessions: %d, want 1", n)
	}
}

// An agent switched out of realtime mode after the webhook answered: its
// token's stream is refused and the session ends with the reason.
func TestStreamOfAgentNoLongerRealtime(t *testing.T) {
	e := newE2E(t, realtimetest.Options{})
	pod := e.start("pod-a")
	sid := twiliotest.NewCallSID()
	status, doc, body := e.voice(sid, "203.0.113.10", "sip:1001@vivi.sip.twilio.com;transport=tls", true)
	if status != 200 || doc.Connect == nil || len(doc.Connect.Stream.Params) != 1 {
		t.Fatalf("status %d: %s", status, body)
	}
	ag, err := pod.store.Agent(e.ctx, "reception")
	if err != nil {
		t.Fatal(err)
	}
	ag.Realtime = false
	if err := pod.store.SaveAgent(e.ctx, ag); err != nil {
		t.Fatal(err)
	}
	e.wantRefused(e.dialPod(pod, sid, doc.Connect.Stream.Params[0].Value))
	s := e.waitSession(sid, "ended", func(s *session.Session) bool { return s.State == session.Ended })
	if s.EndReason != "agent_not_realtime" {
		t.Fatalf("end reason %q", s.EndReason)
	}
	if n := len(e.model.Conns()); n != 0 {
		t.Fatalf("model sessions: %d, want 0", n)
	}
}
