package main

import (
	"strings"
	"testing"
	"time"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiliotest"
)

// streamTo opens a stream of callSID straight to pod with a fresh token.
func (e *e2e) streamTo(pod, callSID string) *twiliotest.Call {
	e.t.Helper()
	tok, _, err := e2eTokens(e.t).Issue(callSID, "tls-pbx", "reception", time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return e.dialPod(e.pods[pod], callSID, tok)
}

// TestFencedPodCannotWriteOrTransfer: pod A holds a call's stream and is
// "paused" while Twilio gives the call to pod B (the connect-ended
// reconnect cleared the session's stream; a new stream starts on B and
// takes the call, with a newer fencing token). When A carries on, its
// first write (a transcript turn) or its transfer is refused in the same
// check-and-set: A ends its stream, logs it once, and B's session is
// untouched: no turn, no transfer, no REST update, still streaming on B.
func TestFencedPodCannotWriteOrTransfer(t *testing.T) {
	for _, how := range []string{"transcript turn", "transfer"} {
		t.Run(how, func(t *testing.T) {
			e := newE2E(t, realtimetest.Options{Greeting: realtimetest.Pattern(800)})
			a := e.start("pod-a")
			e.start("pod-b")
			sid := twiliotest.NewCallSID()
			if err := a.store.CreateSession(e.ctx, session.New(sid, "tls-pbx", "reception", time.Now())); err != nil {
				t.Fatal(err)
			}
			streamA := e.streamTo("pod-a", sid)
			connA, err := e.model.NextConn(e.ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := streamA.WaitPlayedBytes(e.ctx, 800); err != nil {
				t.Fatal(err)
			}
			fenceA := e.waitSession(sid, "on pod-a", func(s *session.Session) bool { return s.PodID == "pod-a" }).Fence

			if _, err := a.store.UpdateSession(e.ctx, sid, func(s *session.Session) error { s.StreamSID = ""; return nil }); err != nil {
				t.Fatal(err)
			}
			streamB := e.streamTo("pod-b", sid)
			if _, err := e.model.NextConn(e.ctx); err != nil {
				t.Fatal(err)
			}
			e.waitSession(sid, "B owns the call", func(s *session.Session) bool { return s.PodID == "pod-b" && s.Fence > fenceA })

			switch how {
			case "transcript turn":
				connA.Transcription("Words pod A heard while it was paused.")
			case "transfer":
				connA.CallFunction("transfer_call", `{"destination":"Front Desk"}`)
			}
			select {
			case <-streamA.Done():
			case <-time.After(20 * time.Second):
				t.Fatal("pod A's stream did not end")
			}
			msg := "the call is owned by a newer stream (fenced): ending this stream without touching the session"
			if n := a.logs.FilterMessage(msg).Len(); n != 1 {
				t.Fatalf("fenced logged %d times on pod A, want once", n)
			}
			s := e.session(sid)
			for _, turn := range s.Transcript {
				if strings.Contains(turn.Text, "paused") {
					t.Fatalf("pod A's turn was written: %+v", s.Transcript)
				}
			}
			if s.State != session.Streaming || s.PodID != "pod-b" || s.StreamSID != streamB.StreamSID() || len(s.Transfers) != 0 || s.EndReason != "" {
				t.Fatalf("pod A changed B's session: %+v", s)
			}
			if r := e.tw.REST().Requests(); len(r) != 0 {
				t.Fatalf("pod A reached Twilio's REST API: %+v", r)
			}
		})
	}
}
