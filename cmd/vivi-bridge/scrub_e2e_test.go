package main

import (
	"fmt"
	"strings"
	"testing"

	"go.uber.org/zap/zapcore"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/session"
)

// TestModelErrorTextIsScrubbed: a model error event whose message quotes a
// bearer key and an Authorization header reaches neither the session
// timeline nor the pod's log with the credential in it.
func TestModelErrorTextIsScrubbed(t *testing.T) {
	e := newE2E(t, realtimetest.Options{})
	pod := e.start("pod-a")
	call := e.place("203.0.113.10")
	_, conn := e.streamAndModel(call, 1)
	const key = "sk-proj-LEAKED0123456789abcdef"
	conn.SendError("invalid_request_error", "weird_thing",
		"upstream refused: Authorization: Bearer "+key+"\r\npassword=hunter2hunter2 "+strings.Repeat("y", 3000))
	s := e.waitSession(call.CallSID(), "model error recorded", func(s *session.Session) bool {
		return timelineHas(s, session.EventModelError, "weird_thing")
	})
	for _, ev := range s.Timeline {
		if strings.Contains(ev.Detail, key) || strings.Contains(ev.Detail, "hunter2hunter2") {
			t.Errorf("timeline %s keeps a credential: %q", ev.Type, ev.Detail)
		}
	}
	lines := pod.logs.FilterMessage("model error").All()
	if len(lines) == 0 {
		t.Fatal("no 'model error' log line")
	}
	for _, l := range pod.logs.All() {
		enc := zapcore.NewMapObjectEncoder()
		for _, f := range l.Context {
			f.AddTo(enc)
		}
		if s := fmt.Sprint(enc.Fields); strings.Contains(s, key) || strings.Contains(s, "hunter2hunter2") {
			t.Errorf("log line %q keeps a credential: %s", l.Message, s)
		}
	}
	if f := lines[0].ContextMap(); f["call_sid"] != call.CallSID() {
		t.Errorf("model error line without call_sid: %v", f)
	}
}
