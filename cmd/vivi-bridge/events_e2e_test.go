package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/session"
)

// TestCallEventsPostedToChannelEventsURL: a call on a channel with an
// eventsUrl posts its timeline events there, signed with the channel's secret.
func TestCallEventsPostedToChannelEventsURL(t *testing.T) {
	const secret = "e2e-events-secret"
	var mu sync.Mutex
	var events []map[string]any
	var badSig []string
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		sig := r.Header.Get("X-Vivi-Signature")
		ts, v1, _ := strings.Cut(strings.TrimPrefix(sig, "t="), ",v1=")
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(ts + "." + string(body)))
		var m map[string]any
		err := json.Unmarshal(body, &m)
		mu.Lock()
		if err != nil || !hmac.Equal([]byte(hex.EncodeToString(mac.Sum(nil))), []byte(v1)) {
			badSig = append(badSig, sig)
		} else {
			events = append(events, m)
		}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(recv.Close)

	e := newE2E(t, realtimetest.Options{})
	pod := e.start("pod-a")
	ch, err := pod.store.Channel(e.ctx, "tls-pbx")
	if err != nil {
		t.Fatal(err)
	}
	ch.EventsURL, ch.EventsSecret = recv.URL, secret
	if err := pod.store.SaveChannel(e.ctx, ch); err != nil {
		t.Fatal(err)
	}

	call := e.place("203.0.113.10")
	e.streamAndModel(call, 1)
	e.waitSession(call.CallSID(), "streaming", func(s *session.Session) bool { return s.State == session.Streaming })
	call.Hangup(e.ctx)
	e.waitSession(call.CallSID(), "ended", func(s *session.Session) bool { return s.State == session.Ended })

	want := []string{session.EventAnswered, session.EventStreamStarted, session.EventEnded}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		seen := map[string]bool{}
		for _, m := range events {
			if m["callSid"] == call.CallSID() && m["channelId"] == "tls-pbx" {
				seen[m["type"].(string)] = true
			}
		}
		bad := append([]string(nil), badSig...)
		got := len(events)
		mu.Unlock()
		if len(bad) > 0 {
			t.Fatalf("events with bad signatures: %v", bad)
		}
		missing := ""
		for _, w := range want {
			if !seen[w] {
				missing = w
				break
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("receiver got %d events for the call, none of type %s", got, missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, m := range events {
		if _, err := time.Parse(time.RFC3339Nano, m["at"].(string)); err != nil {
			t.Fatalf("event %v: at: %v", m, err)
		}
	}
}
