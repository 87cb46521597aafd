package delivery_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/delivery"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/store"
)

// secret is a Standard Webhooks secret: whsec_ and base64 of the key.
var secret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

// request is one POST a receiver got.
type request struct {
	at     time.Time
	header http.Header
	body   []byte
	status int
}

// receiver is an events endpoint: answer decides each response (nil: 204).
type receiver struct {
	mu     sync.Mutex
	got    []request
	answer func(n int, w http.ResponseWriter) int // n counts from 0; returns the status written
	notify chan struct{}
}

func newReceiver(answer func(n int, w http.ResponseWriter) int) *receiver {
	return &receiver{answer: answer, notify: make(chan struct{}, 1000)}
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	n := len(r.got)
	r.mu.Unlock()
	status := http.StatusNoContent
	if r.answer != nil {
		status = r.answer(n, w)
	} else {
		w.WriteHeader(status)
	}
	r.mu.Lock()
	r.got = append(r.got, request{at: time.Now(), header: req.Header.Clone(), body: b, status: status})
	r.mu.Unlock()
	r.notify <- struct{}{}
}

// client serves every request with r in memory (a synctest bubble has no sockets).
func (r *receiver) client() *http.Client {
	return &http.Client{Transport: roundTrip(func(req *http.Request) (*http.Response, error) {
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, req)
		return rec.Result(), nil
	})}
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// wait blocks until r got n requests (in a bubble, fake time runs meanwhile).
func (r *receiver) wait(t *testing.T, n int) []request {
	t.Helper()
	deadline := time.After(48 * time.Hour)
	for {
		r.mu.Lock()
		got := append([]request(nil), r.got...)
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

func (r *receiver) requests() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]request(nil), r.got...)
}

// delivered returns the webhook-ids answered 2xx, in arrival order.
func delivered(reqs []request) []string {
	var out []string
	for _, q := range reqs {
		if q.status >= 200 && q.status < 300 {
			out = append(out, q.header.Get("webhook-id"))
		}
	}
	return out
}

// verify checks both signatures of a request independently of the code.
func verify(t *testing.T, q request) {
	t.Helper()
	ts := q.header.Get("webhook-timestamp")
	if _, err := strconv.ParseInt(ts, 10, 64); err != nil {
		t.Fatalf("webhook-timestamp %q", ts)
	}
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(q.header.Get("webhook-id") + "." + ts + "." + string(q.body)))
	if got, want := q.header.Get("webhook-signature"), "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)); got != want {
		t.Fatalf("webhook-signature %q, want %q", got, want)
	}
	old := hmac.New(sha256.New, []byte(secret))
	old.Write([]byte(ts + "." + string(q.body)))
	if got, want := q.header.Get("X-Vivi-Signature"), "t="+ts+",v1="+hex.EncodeToString(old.Sum(nil)); got != want {
		t.Fatalf("X-Vivi-Signature %q, want %q", got, want)
	}
	if q.header.Get("Content-Type") != "application/json" || q.header.Get("User-Agent") != "vivi-bridge" {
		t.Fatalf("headers %v", q.header)
	}
}

func eventsChannel(id, url string) channel.Channel {
	return channel.Channel{ID: id, Name: id, OriginHost: "203.0.113.10", OriginIPs: []string{"203.0.113.10"},
		Extensions: []string{"1" + id}, EventsURL: url, EventsSecret: secret}
}

// sessionStore is what the tests write calls to.
type sessionStore interface {
	CreateSession(ctx context.Context, s *session.Session) error
	UpdateSession(ctx context.Context, callSID string, fn func(*session.Session) error) (*session.Session, error)
}

// placeCall writes a call of channel with n timeline events in all
// (answered, then dtmf digits), one write per event after the first.
func placeCall(t *testing.T, st sessionStore, sid, ch string, n int) []string {
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	if err := st.CreateSession(ctx, session.New(sid, ch, "ag", now)); err != nil {
		t.Fatal(err)
	}
	ids := []string{session.EventID(sid, 1)}
	for i := 2; i <= n; i++ {
		if _, err := st.UpdateSession(ctx, sid, func(s *session.Session) error {
			s.Record(now, session.EventDigit, strconv.Itoa(i))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, session.EventID(sid, int64(i)))
	}
	return ids
}

// run starts d until the test ends (then drains it).
func run(t *testing.T, d *delivery.Deliverer) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer scancel()
		_ = d.Stop(sctx)
		cancel()
		<-done
	})
}

// memEnv is a Memory store with the channels saved.
func memEnv(t *testing.T, chs ...channel.Channel) *store.Memory {
	t.Helper()
	st := store.NewMemory(store.Options{Outbox: delivery.Entries})
	for _, c := range chs {
		if err := st.SaveChannel(context.Background(), c); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

func identity(d time.Duration) time.Duration { return d }

// settle lets a deliverer just started trust the shards it took: their
// pending lists are claimed once on acquiring and again after the previous
// owner's last possible read (Renew 5 s + 2 s). In a bubble: fake time.
func settle() { time.Sleep(7 * time.Second) }
