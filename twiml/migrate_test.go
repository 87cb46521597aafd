package twiml

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/vivi/bridge/session"
)

// streamingSession stores CA1 streaming MZ1 with fencing token 3 and a
// current connect generation.
func streamingSession(t *testing.T, x *harness) *session.Session {
	t.Helper()
	s := session.New("CA1", testChannel, testAgent, x.now)
	if err := s.Transition(session.Streaming, x.now); err != nil {
		t.Fatal(err)
	}
	_, c, err := x.tokens.Issue("CA1", testChannel, testAgent, x.now)
	if err != nil {
		t.Fatal(err)
	}
	s.StreamSID, s.PodID, s.Connect, s.Fence = "MZ1", "pod-a", &c, 3
	x.sessions.put(s)
	return s
}

// TestMigrateConnect: the move of a live stream makes a fresh connect
// generation current (the document names it in its action URL, with the
// public stream URL and callbacks), marks the old stream replaced and is
// the same document on a retry; the old stream's stream-stopped, replayed
// too, does not end the call.
func TestMigrateConnect(t *testing.T) {
	x := newHarness(t, "https://host.example", true)
	before := streamingSession(t, x)
	doc, err := x.handler.MigrateConnect(context.Background(), "CA1", "pod-a", "MZ1", 3)
	if err != nil {
		t.Fatal(err)
	}
	s := x.sessions.get(t, "CA1")
	if s.Connect == nil || s.Connect.ID == before.Connect.ID {
		t.Fatalf("no fresh connect generation: %+v", s.Connect)
	}
	for _, want := range []string{
		`action="https://host.example/twilio/connect-ended?` + ConnectParam + `=` + url.QueryEscape(s.Connect.ID) + `"`,
		`url="wss://host.example/twilio/stream"`, `statusCallback="https://host.example/twilio/stream-status"`, `name="token"`,
	} {
		if !strings.Contains(doc, want) {
			t.Fatalf("document lacks %s:\n%s", want, doc)
		}
	}
	if s.StreamSID != "" || s.Migration == nil || s.Migration.FromStream != "MZ1" || s.Migration.FromPod != "pod-a" ||
		s.Timeline[len(s.Timeline)-1].Type != session.EventMigrating || s.Fence != 3 {
		t.Fatalf("session %+v", s)
	}
	again, err := x.handler.MigrateConnect(context.Background(), "CA1", "pod-a", "MZ1", 3)
	if err != nil || again != doc {
		t.Fatalf("a retry answered another document (%v):\n%s\n%s", err, again, doc)
	}
	for range 2 { // Twilio's stream-stopped of the old stream, and a replay
		if w := x.post(StreamStatusPath, streamStatus("CA1", "stream-stopped", "MZ1", "")); w.Code != http.StatusNoContent {
			t.Fatalf("stream status: %d", w.Code)
		}
		if s := x.sessions.get(t, "CA1"); s.State != session.Streaming || s.EndReason != "" {
			t.Fatalf("the migrated stream's stop ended the call: %s %q", s.State, s.EndReason)
		}
	}
}

// TestMigrateConnectFenced: a stream that no longer owns the call (another
// fencing token, or another live stream) cannot move it: the session is
// not touched.
func TestMigrateConnectFenced(t *testing.T) {
	for name, call := range map[string]struct {
		stream string
		fence  int64
	}{"older fence": {"MZ1", 2}, "another stream": {"MZ0", 0}} {
		t.Run(name, func(t *testing.T) {
			x := newHarness(t, "https://host.example", true)
			before := streamingSession(t, x)
			_, err := x.handler.MigrateConnect(context.Background(), "CA1", "pod-a", call.stream, call.fence)
			if !errors.Is(err, session.ErrFenced) {
				t.Fatalf("err = %v, want ErrFenced", err)
			}
			if s := x.sessions.get(t, "CA1"); s.Connect.ID != before.Connect.ID || s.StreamSID != "MZ1" || s.Migration != nil {
				t.Fatalf("session changed: %+v", s)
			}
		})
	}
}
