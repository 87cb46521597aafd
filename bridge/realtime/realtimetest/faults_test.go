package realtimetest

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestExpiresIn: a short lifetime shows in session.created's expires_at.
func TestExpiresIn(t *testing.T) {
	s := newServer(t, Options{ExpiresIn: 3 * time.Second})
	before := time.Now()
	cl, _ := dial(t, s)
	ev := cl.expect("session.created")[0]
	at := int64(ev.obj("session").num("expires_at"))
	if lo, hi := before.Add(3*time.Second).Unix(), time.Now().Add(4*time.Second).Unix(); at < lo || at > hi {
		t.Fatalf("expires_at %d; want in [%d, %d]", at, lo, hi)
	}
}

// TestRefuseDials: the first N handshakes get the HTTP status, the next one
// a session; Dials counts them all.
func TestRefuseDials(t *testing.T) {
	for _, status := range []int{http.StatusServiceUnavailable, http.StatusTooManyRequests} {
		s := newServer(t, Options{RefuseDials: 2, RefuseStatus: status})
		url := s.URL() + "?model=gpt-realtime"
		for range 2 {
			_, resp, err := websocket.DefaultDialer.Dial(url, authHeader())
			if err == nil || resp == nil || resp.StatusCode != status {
				t.Fatalf("dial: %v, %v; want HTTP %d", resp, err, status)
			}
			_ = resp.Body.Close()
		}
		cl := dialWith(t, url, authHeader())
		cl.expect("session.created")
		if n := s.Dials(); n != 3 {
			t.Fatalf("Dials %d; want 3", n)
		}
	}
}

// TestNoUpgrade: the handshake is never answered; the dial times out.
func TestNoUpgrade(t *testing.T) {
	s := newServer(t, Options{NoUpgrade: true})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, _, err := websocket.DefaultDialer.DialContext(ctx, s.URL()+"?model=gpt-realtime", authHeader())
	if err == nil {
		t.Fatal("dial succeeded")
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if _, _, err := websocket.DefaultDialer.DialContext(ctx2, s.URL()+"?model=gpt-realtime", authHeader()); err == nil {
		t.Fatal("second dial succeeded")
	}
	if s.Dials() != 2 || len(s.Conns()) != 0 {
		t.Fatalf("dials %d conns %d", s.Dials(), len(s.Conns()))
	}
}

// TestNoSessionUpdated: session.update is recorded but never answered.
func TestNoSessionUpdated(t *testing.T) {
	s := newServer(t, Options{NoSessionUpdated: true})
	cl, c := dial(t, s)
	cl.expect("session.created")
	cl.send(map[string]any{"type": "session.update", "session": map[string]any{"type": "realtime", "instructions": "x"}})
	if _, err := c.WaitEvent(ctx(t), "session.update", 1); err != nil {
		t.Fatal(err)
	}
	cl.send(map[string]any{"type": "input_audio_buffer.clear"})
	if got := cl.read(); got.str("type") != "input_audio_buffer.cleared" {
		t.Fatalf("after session.update the first event is %q; want no session.updated", got.str("type"))
	}
}

// TestFatalError: an error with the code follows session.created and the
// connection stays open.
func TestFatalError(t *testing.T) {
	s := newServer(t, Options{FatalError: "insufficient_quota"})
	cl, _ := dial(t, s)
	cl.expect("session.created")
	cl.expectError("insufficient_quota")
	cl.send(map[string]any{"type": "input_audio_buffer.clear"})
	cl.expect("input_audio_buffer.cleared")
}
