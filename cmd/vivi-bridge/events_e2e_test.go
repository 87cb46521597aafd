package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
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
	"github.com/vivi/bridge/internal/testwait"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/store"
)

// TestCallEventsPostedToChannelEventsURL: a call on a channel with an
// eventsUrl posts its timeline events there, in order, signed with the
// channel's secret (X-Vivi-Signature and the Standard Webhooks headers).
func TestCallEventsPostedToChannelEventsURL(t *testing.T) {
	const secret = "e2e-events-secret"
	var mu sync.Mutex
	var events []map[string]any
	var badSig []string
	posted := testwait.NewNotifier()
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		sig := r.Header.Get("X-Vivi-Signature")
		ts, v1, _ := strings.Cut(strings.TrimPrefix(sig, "t="), ",v1=")
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(ts + "." + string(body)))
		var m map[string]any
		err := json.Unmarshal(body, &m)
		// Standard Webhooks: the id (the body's), the timestamp and the body, keyed with the secret's bytes.
		id, wts := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp")
		std := hmac.New(sha256.New, []byte(secret))
		std.Write([]byte(id + "." + wts + "." + string(body)))
		stdOK := r.Header.Get("webhook-signature") == "v1,"+base64.StdEncoding.EncodeToString(std.Sum(nil)) &&
			id != "" && id == m["id"] && wts == ts
		mu.Lock()
		if err != nil || !stdOK || !hmac.Equal([]byte(hex.EncodeToString(mac.Sum(nil))), []byte(v1)) {
			badSig = append(badSig, sig)
		} else {
			events = append(events, m)
		}
		mu.Unlock()
		posted.Notify()
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
	missing := func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(badSig) > 0 {
			t.Fatalf("events with bad signatures: %v", badSig)
		}
		seen := map[string]bool{}
		for _, m := range events {
			if m["callSid"] == call.CallSID() && m["channelId"] == "tls-pbx" {
				seen[m["type"].(string)] = true
			}
		}
		for _, w := range want {
			if !seen[w] {
				return w
			}
		}
		return ""
	}
	posted.Wait(t, 10*time.Second, "the call's answered, stream_started and ended events", func() bool { return missing() == "" })
	mu.Lock()
	var ids []string
	for _, m := range events {
		if _, err := time.Parse(time.RFC3339Nano, m["at"].(string)); err != nil {
			t.Fatalf("event %v: at: %v", m, err)
		}
		if m["callSid"] == call.CallSID() {
			ids = append(ids, m["id"].(string))
		}
	}
	mu.Unlock()
	for i := range ids {
		if want := session.EventID(call.CallSID(), int64(i+1)); ids[i] != want {
			t.Fatalf("event ids %v: #%d is not %s (each event once, in order)", ids, i, want)
		}
	}

	// The admin API shows each event's delivery state with the call; the
	// call's analyze job, with no analyzer on the pod, is parked.
	var got struct {
		Deliveries []struct{ ID, State string } `json:"deliveries"`
	}
	testwait.Until(t, 10*time.Second, "the delivery states", func() bool {
		status, body := adminDo(t, "GET", pod.url+"/v1/calls/"+call.CallSID(), ``)
		if status != http.StatusOK || json.Unmarshal([]byte(body), &got) != nil || len(got.Deliveries) < len(ids) {
			return false
		}
		for _, d := range got.Deliveries {
			if d.State != "delivered" {
				return false
			}
		}
		return true
	})
	// The call's analysis job ran (through the chat fake): nothing parked,
	// the analysis on the session.
	testwait.Until(t, 10*time.Second, "the call analysed", func() bool {
		s, err := store.NewRedis(e.rdb, store.Options{Prefix: e.prefix}).Session(context.Background(), call.CallSID())
		return err == nil && s.Analysis != nil && s.Analysis.State == session.AnalysisDone
	})
	status, body := adminDo(t, "GET", pod.url+"/v1/events/parked", ``)
	if status != http.StatusOK || strings.TrimSpace(body) != `{"parked":[]}` {
		t.Fatalf("parked: %d %s", status, body)
	}
}
