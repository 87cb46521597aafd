package channel_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/store"
)

const eventsSecret = "whsec-test-0123456789"

// received is one POST the receiver got.
type received struct {
	header http.Header
	body   []byte
}

// receiver is an httptest events endpoint answering with the statuses in
// order (then 204), recording every request.
type receiver struct {
	srv      *httptest.Server
	mu       sync.Mutex
	got      []received
	statuses []int
	notify   chan struct{}
	lastAt   time.Time // when the last request came
}

func newReceiver(t *testing.T, statuses ...int) *receiver {
	t.Helper()
	r := newMemReceiver(statuses...)
	r.srv = httptest.NewServer(r)
	t.Cleanup(r.srv.Close)
	return r
}

// newMemReceiver is a receiver without a server: its client (see client)
// hands requests straight to it, so that a test of the sink's timing can
// run in a testing/synctest bubble (real sockets cannot).
func newMemReceiver(statuses ...int) *receiver {
	return &receiver{statuses: statuses, notify: make(chan struct{}, 100)}
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.got = append(r.got, received{header: req.Header.Clone(), body: b})
	r.lastAt = time.Now()
	status := http.StatusNoContent
	if len(r.statuses) > 0 {
		status, r.statuses = r.statuses[0], r.statuses[1:]
	}
	r.mu.Unlock()
	w.WriteHeader(status)
	r.notify <- struct{}{}
}

// client is an HTTP client whose every request is served by r in memory.
func (r *receiver) client() *http.Client {
	return &http.Client{Transport: roundTripFunc(func(req *http.Request) (*http.Response, error) {
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, req)
		return rec.Result(), nil
	})}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// wait waits for n requests in all.
func (r *receiver) wait(t *testing.T, n int) []received {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		r.mu.Lock()
		got := append([]received(nil), r.got...)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-r.notify:
		case <-deadline:
			t.Fatalf("receiver got %d requests, want %d", len(got), n)
		}
	}
}

// verifySignature checks the X-Vivi-Signature header independently of SignEvent.
func verifySignature(t *testing.T, secret string, h http.Header, body []byte) {
	t.Helper()
	sig := h.Get("X-Vivi-Signature")
	ts, v1, ok := strings.Cut(sig, ",v1=")
	ts, okT := strings.CutPrefix(ts, "t=")
	if !ok || !okT {
		t.Fatalf("signature header %q", sig)
	}
	if _, err := strconv.ParseInt(ts, 10, 64); err != nil {
		t.Fatalf("signature timestamp %q: %v", ts, err)
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "." + string(body)))
	if want := hex.EncodeToString(mac.Sum(nil)); !hmac.Equal([]byte(want), []byte(v1)) {
		t.Fatalf("signature %q does not verify (want v1=%s)", sig, want)
	}
}

// runSink starts a sink over a memory store holding ch; the sink stops at cleanup.
func runSink(t *testing.T, ch channel.Channel, cfg channel.EventSinkConfig) *channel.EventSink {
	t.Helper()
	st := store.NewMemory(store.Options{})
	if err := st.SaveChannel(context.Background(), ch); err != nil {
		t.Fatal(err)
	}
	cfg.Channels = st
	cfg.AllowPrivate = true // the receivers are httptest servers on loopback
	sink := channel.NewEventSink(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sink.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return sink
}

func eventsChannel(url string) channel.Channel {
	return channel.Channel{ID: "pbx", Name: "PBX", OriginHost: "203.0.113.10", OriginIPs: []string{"203.0.113.10"},
		Extensions: []string{"1001"}, EventsURL: url, EventsSecret: eventsSecret}
}

func TestEventSinkPostsSignedJSON(t *testing.T) {
	noLeaks(t)
	r := newReceiver(t)
	now := time.Unix(1_700_000_000, 0)
	sink := runSink(t, eventsChannel(r.srv.URL), channel.EventSinkConfig{Now: func() time.Time { return now }})
	at := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.FixedZone("x", 3600))
	sink.Post("CA1", "pbx", session.Event{At: at, Type: session.EventEnded, Detail: "caller_hangup"},
		map[string]any{"from": "sip:a@b", "type": "ignored"})
	sink.Post("CA1", "pbx", session.Event{At: at, Type: session.EventAnswered}, nil)
	got := r.wait(t, 2)

	for _, g := range got {
		verifySignature(t, eventsSecret, g.header, g.body)
		if ct, ua := g.header.Get("Content-Type"), g.header.Get("User-Agent"); ct != "application/json" || ua != "vivi-bridge" {
			t.Fatalf("content type %q, user agent %q", ct, ua)
		}
		if !strings.HasPrefix(g.header.Get("X-Vivi-Signature"), "t=1700000000,") {
			t.Fatalf("signature timestamp: %q", g.header.Get("X-Vivi-Signature"))
		}
		if sig := g.header.Get("X-Vivi-Signature"); sig != channel.SignEvent(eventsSecret, now.Unix(), g.body) {
			t.Fatalf("SignEvent disagrees with the header %q", sig)
		}
	}
	byType := map[string]map[string]any{}
	for _, g := range got {
		var m map[string]any
		if err := json.Unmarshal(g.body, &m); err != nil {
			t.Fatalf("body %s: %v", g.body, err)
		}
		byType[m["type"].(string)] = m
	}
	ended := byType["ended"]
	if ended["callSid"] != "CA1" || ended["channelId"] != "pbx" || ended["at"] != "2025-01-02T02:04:05.000006Z" ||
		ended["detail"] != "caller_hangup" || ended["from"] != "sip:a@b" {
		t.Fatalf("ended event %v", ended)
	}
	answered := byType["answered"]
	if _, has := answered["detail"]; has || answered["callSid"] != "CA1" {
		t.Fatalf("answered event %v", answered)
	}
}

func TestEventSinkDelivery(t *testing.T) {
	for name, tc := range map[string]struct {
		statuses []int
		want     int // requests the receiver gets
		warned   bool
	}{
		"retries 500 then succeeds": {statuses: []int{500, 503}, want: 3},
		"retries 429":               {statuses: []int{429}, want: 2},
		"gives up on 400":           {statuses: []int{400}, want: 1, warned: true},
		"gives up after retries":    {statuses: []int{500, 500, 500}, want: 3, warned: true},
	} {
		t.Run(name, func(t *testing.T) {
			noLeaks(t)
			// In a synctest bubble the retry backoff runs on the bubble's
			// clock: it advances only when every goroutine of the sink is
			// blocked, so waiting a minute of it is instant and leaves no
			// attempt in flight.
			synctest.Test(t, func(t *testing.T) {
				r := newMemReceiver(tc.statuses...)
				core, logs := observer.New(zap.WarnLevel)
				sink := runSink(t, eventsChannel("http://events.example/hook"),
					channel.EventSinkConfig{Retries: 2, Logger: zap.New(core), Client: r.client()})
				start := time.Now()
				sink.Post("CA2", "pbx", session.Event{At: time.Now(), Type: session.EventAnswered}, nil)
				time.Sleep(time.Minute) // far past every backoff (200 ms, then 400 ms)
				synctest.Wait()
				got := r.wait(t, tc.want)
				// No further attempt after success or giving up.
				if len(got) != tc.want {
					t.Fatalf("receiver got %d requests, want %d", len(got), tc.want)
				}
				for _, g := range got {
					verifySignature(t, eventsSecret, g.header, g.body)
				}
				// The attempts were 200 ms, then 400 ms apart on the sink's clock.
				if wantLast := backoffBefore(tc.want); r.lastAt.Sub(start) != wantLast {
					t.Errorf("last attempt at +%v, want +%v", r.lastAt.Sub(start), wantLast)
				}
				entries := logs.FilterMessage("call event not posted").All()
				if !tc.warned {
					if len(entries) != 0 {
						t.Fatalf("failure logged after success: %v", entries[0].ContextMap())
					}
					return
				}
				if len(entries) != 1 {
					t.Fatalf("want one failure log, got %d", len(entries))
				}
				f := entries[0].ContextMap()
				if f["call_sid"] != "CA2" || f["channel_id"] != "pbx" {
					t.Fatalf("failure log fields %v", f)
				}
				for _, v := range f {
					if s, ok := v.(string); ok && strings.Contains(s, eventsSecret) {
						t.Fatalf("failure log carries the secret: %v", f)
					}
				}
			})
		})
	}
}

// backoffBefore is how long after the first attempt attempt n (1-based)
// is made: 200 ms before the second, doubling after.
func backoffBefore(n int) time.Duration {
	var d time.Duration
	for i, wait := 1, 200*time.Millisecond; i < n; i, wait = i+1, wait*2 {
		d += wait
	}
	return d
}

func TestEventSinkSkipsChannelWithoutEventsURL(t *testing.T) {
	noLeaks(t)
	r := newReceiver(t)
	st := store.NewMemory(store.Options{})
	ctx := context.Background()
	if err := st.SaveChannel(ctx, eventsChannel("")); err != nil {
		t.Fatal(err)
	}
	other := eventsChannel(r.srv.URL)
	other.ID, other.OriginIPs, other.OriginHost = "other", []string{"203.0.113.11"}, "203.0.113.11"
	if err := st.SaveChannel(ctx, other); err != nil {
		t.Fatal(err)
	}
	sink := channel.NewEventSink(channel.EventSinkConfig{Channels: st, Workers: 1, AllowPrivate: true}) // receiver on loopback
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { sink.Run(rctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	sink.Post("CA3", "pbx", session.Event{At: time.Now(), Type: session.EventAnswered}, nil)
	sink.Post("CA3", "missing", session.Event{At: time.Now(), Type: session.EventAnswered}, nil)
	// One worker posts in order: once "other"'s event arrives, the first two were skipped.
	sink.Post("CA4", "other", session.Event{At: time.Now(), Type: session.EventAnswered}, nil)
	got := r.wait(t, 1)
	if len(got) != 1 || !strings.Contains(string(got[0].body), `"callSid":"CA4"`) {
		t.Fatalf("receiver got %d requests, first %s", len(got), got[0].body)
	}
}

func TestEventSinkFullQueueDrops(t *testing.T) {
	noLeaks(t)
	core, logs := observer.New(zap.WarnLevel)
	// Not running: nothing takes events off the queue.
	sink := channel.NewEventSink(channel.EventSinkConfig{Channels: store.NewMemory(store.Options{}), Queue: 2, Logger: zap.New(core)})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 5 {
			sink.Post("CA5", "pbx", session.Event{At: time.Now(), Type: session.EventAnswered}, nil)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Post blocked on a full queue")
	}
	if n := sink.Dropped(); n != 3 {
		t.Fatalf("dropped %d, want 3", n)
	}
	entries := logs.FilterMessage("call event dropped: queue full").All()
	if len(entries) != 3 || entries[2].ContextMap()["dropped"] != int64(3) || entries[2].ContextMap()["call_sid"] != "CA5" {
		t.Fatalf("drop logs %v", entries)
	}
}

// noLeaks fails t when goroutines started during it outlive its cleanups
// (it is registered first, so it runs last).
func noLeaks(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}
