package bridge

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/vivi/bridge/bridge/realtime"
	"github.com/vivi/bridge/twiliotest"
)

// fakeClock is an injected Config.Now that tests move by hand.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func poolHarness(t *testing.T, size int, mod func(*Config)) *harness {
	t.Helper()
	h := newHarness(t, harnessOpts{cfg: func(c *Config) {
		c.ModelPoolSize = size
		if mod != nil {
			mod(c)
		}
	}})
	return h
}

func (h *harness) waitPool(idle, conns int) {
	h.t.Helper()
	waitFor(h.t, "the model pool to fill", func() bool {
		return h.counter("vivi_bridge_model_pool_idle", "", "") == float64(idle) && len(h.model.Conns()) == conns
	})
}

// refusedHandshakes opens n signed websockets that never get an agent:
// half send no start and hang up, half send a start with a bad token.
func (h *harness) refusedHandshakes(n int) {
	h.t.Helper()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if i%2 == 0 {
				hdr := http.Header{twiliotest.SignatureHeader: {twiliotest.SignForm(testAuthToken, testSignURL, nil)}}
				ws, _, err := websocket.DefaultDialer.Dial(h.url, hdr)
				if err != nil {
					h.t.Error(err)
					return
				}
				_ = ws.Close()
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			c, err := twiliotest.Dial(ctx, twiliotest.CallConfig{
				URL: h.url, SignURL: testSignURL, AuthToken: testAuthToken, AccountSID: testAccount,
				CallSID: twiliotest.NewCallSID(), Parameters: map[string]string{"token": "forged.token"},
			})
			if err != nil {
				h.t.Error(err)
				return
			}
			<-c.Done()
		})
	}
	wg.Wait()
	waitFor(h.t, "the refused streams to close", func() bool { return h.srv.ActiveCalls() == 0 })
}

// A replayed handshake signature without a valid token opens no model
// session: N of them leave the model with only the pool's connections.
func TestHandshakesWithoutTokenOpenNoModelSession(t *testing.T) {
	for _, size := range []int{0, 2} {
		h := poolHarness(t, size, nil)
		h.waitPool(size, size)
		h.refusedHandshakes(40)
		if n := len(h.model.Conns()); n != size {
			t.Fatalf("pool %d: 40 refused streams opened %d model sessions, want %d (the pool's)", size, n, size)
		}
	}
}

// An accepted call takes a connection the pool opened before the stream
// existed (no dial on the answer path); the pool refills and stays bounded.
func TestCallTakesPooledConnection(t *testing.T) {
	h := poolHarness(t, 2, nil)
	h.waitPool(2, 2)
	pooled := h.model.Conns()
	for i := range 2 {
		sid, tok := h.newSession(nil)
		h.dial(sid, tok)
		mc := pooled[i] // the oldest idle one
		waitEvent(t, mc, "session.update", 1)
		waitEvent(t, mc, "response.create", 1) // the hand-over: the watcher's read of session.updated
		keepsRelaying(t, mc)
		h.waitPool(2, 3+i) // one refill per take, never more
	}
	if v := h.counter("vivi_bridge_model_pool_takes_total", "result", "hit"); v != 2 {
		t.Fatalf("pool hits = %v, want 2", v)
	}
	if v := h.counter("vivi_bridge_model_pool_takes_total", "result", "miss"); v != 0 {
		t.Fatalf("pool misses = %v, want 0", v)
	}
}

// A miss (an empty pool) dials as before and counts.
func TestPoolMissDials(t *testing.T) {
	h := poolHarness(t, 1, nil)
	h.waitPool(1, 1)
	first, _ := h.call(nil)
	sid, tok := h.newSession(nil)
	// The refill may or may not be back: either way the second call talks.
	h.dial(sid, tok)
	waitFor(t, "two calls relaying", func() bool {
		n := 0
		for _, mc := range h.model.Conns() {
			if len(mc.InputAudio()) > 0 {
				n++
			}
		}
		return n == 2
	})
	_ = first
	hits := h.counter("vivi_bridge_model_pool_takes_total", "result", "hit")
	misses := h.counter("vivi_bridge_model_pool_takes_total", "result", "miss")
	if hits+misses != 2 || hits < 1 {
		t.Fatalf("pool takes: %v hits, %v misses", hits, misses)
	}
}

// Idle connections are retired at their age limit (injected clock) and
// replaced; one closed by the model while idle is replaced too.
func TestPoolRetiresAndReplaces(t *testing.T) {
	clk := newFakeClock()
	h := poolHarness(t, 2, func(c *Config) { c.Now = clk.Now })
	h.waitPool(2, 2)
	old := h.model.Conns()
	clk.Advance(h.srv.cfg.ModelPoolMaxAge)
	h.srv.models.kick()
	for _, mc := range old {
		select {
		case <-mc.Done():
		case <-time.After(waitLimit):
			t.Fatal("an expired pooled connection was not closed")
		}
	}
	h.waitPool(2, 4)
	if v := h.counter("vivi_bridge_model_pool_discarded_total", "reason", discardExpired); v != 2 {
		t.Fatalf("discarded{expired} = %v", v)
	}
	h.model.Conns()[2].CloseWith(websocket.CloseGoingAway, "idle")
	h.waitPool(2, 5)
	if v := h.counter("vivi_bridge_model_pool_discarded_total", "reason", discardClosed); v != 1 {
		t.Fatalf("discarded{closed_by_model} = %v", v)
	}
}

// A connection past its age limit is never handed out, even before the
// filler retired it.
func TestPoolNeverHandsOutExpired(t *testing.T) {
	clk := newFakeClock()
	h := poolHarness(t, 1, func(c *Config) { c.Now = clk.Now })
	h.waitPool(1, 1)
	clk.Advance(h.srv.cfg.ModelPoolMaxAge)
	if pc := h.srv.models.take(); pc != nil {
		_ = pc.conn.Close()
		t.Fatal("an expired connection was handed out")
	}
}

func TestPoolClosedOnShutdown(t *testing.T) {
	h := poolHarness(t, 3, nil)
	h.waitPool(3, 3)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, mc := range h.model.Conns() {
		select {
		case <-mc.Done():
		case <-time.After(waitLimit):
			t.Fatal("a pooled connection outlived Shutdown")
		}
	}
	if v := h.counter("vivi_bridge_model_pool_discarded_total", "reason", discardShutdown); v != 3 {
		t.Fatalf("discarded{shutdown} = %v", v)
	}
	if len(h.model.Conns()) != 3 {
		t.Fatal("the pool dialled after Shutdown")
	}
}

// Failed dials are retried with a doubling delay, not in a spin.
func TestPoolDialBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, err := newMetrics(nil)
		if err != nil {
			t.Fatal(err)
		}
		var dials atomic.Int32
		p := newModelPool(2, time.Minute, func(context.Context) (*realtime.Conn, error) {
			dials.Add(1)
			return nil, errors.New("connection refused")
		}, m, zap.NewNop())
		p.start()
		time.Sleep(10 * time.Second) // fake time: retries at 0, .1, .3, .7, 1.5, 3.1, 6.3 s
		p.stop()
		p.wait()
		if n := dials.Load(); n != 7 {
			t.Fatalf("%d dials in 10 s, want 7", n)
		}
	})
}
