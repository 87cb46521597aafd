package main

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/store"
)

// downStore is the memory store with CreateSession and Session failing
// while down is set.
type downStore struct {
	storeAPI
	down atomic.Bool
}

var errDown = errors.New("dial tcp: connection refused")

func (d *downStore) CreateSession(ctx context.Context, s *session.Session) error {
	if d.down.Load() {
		return errDown
	}
	return d.storeAPI.CreateSession(ctx, s)
}

func (d *downStore) Session(ctx context.Context, sid string) (*session.Session, error) {
	if d.down.Load() {
		return nil, errDown
	}
	return d.storeAPI.Session(ctx, sid)
}

// TestBufferedCreatesBoundedAndFlushed: while the store is down creates are
// held (found by Session) up to maxBufferedCreates, then refused; once it
// answers they are written, and one the store has already is left as is.
func TestBufferedCreatesBoundedAndFlushed(t *testing.T) {
	ctx := t.Context()
	mem := store.NewMemory(store.Options{})
	ds := &downStore{storeAPI: mem}
	b := newBufferedCreates(ds, zap.NewNop(), time.Second, prometheus.NewRegistry())
	ds.down.Store(true)
	now := time.Unix(1_700_000_000, 0)
	for i := range maxBufferedCreates {
		if err := b.CreateSession(ctx, session.New(fmt.Sprintf("CA%d", i), "ch", "ag", now)); err != nil {
			t.Fatalf("create %d while down: %v", i, err)
		}
	}
	if err := b.CreateSession(ctx, session.New("CAover", "ch", "ag", now)); !errors.Is(err, errDown) {
		t.Fatalf("create past the bound: %v; want the store's error", err)
	}
	if s, err := b.Session(ctx, "CA7"); err != nil || s.ChannelID != "ch" {
		t.Fatalf("Session of a buffered create: %+v, %v", s, err)
	}
	// The stream's writer re-created CA0 first, streaming: it is kept.
	ds.down.Store(false)
	s0 := session.New("CA0", "ch", "ag", now)
	_ = s0.Transition(session.Streaming, now)
	if err := mem.CreateSession(ctx, s0); err != nil {
		t.Fatal(err)
	}
	b.flush(ctx)
	if got, err := mem.Session(ctx, fmt.Sprintf("CA%d", maxBufferedCreates-1)); err != nil || got.State != session.Ringing {
		t.Fatalf("last buffered create after the flush: %+v, %v", got, err)
	}
	if got, _ := mem.Session(ctx, "CA0"); got.State != session.Streaming {
		t.Fatalf("CA0 overwritten by the buffered ringing session: %s", got.State)
	}
	b.mu.Lock()
	left := len(b.pending)
	b.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d creates still buffered", left)
	}
}
