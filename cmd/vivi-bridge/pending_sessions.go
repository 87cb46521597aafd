package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/store"
)

// maxBufferedCreates bounds the ringing sessions a pod holds while the
// store is down; past it the webhook refuses calls as busy, as before.
const maxBufferedCreates = 1000

// bufferedCreates is the store as the voice webhook sees it: a ringing
// session it cannot create because the store fails is kept here and
// created when the store answers again, so that a call is answered during
// an outage (its stream is accepted on the signed token). Session finds a
// buffered session, so a webhook retried during the outage answers the
// same token. What another component wrote first (the stream's writer
// re-creates a record it finds missing) wins: the buffered one is then
// dropped on ErrExists.
type bufferedCreates struct {
	storeAPI
	log   *zap.Logger
	gauge prometheus.Gauge
	every time.Duration

	mu      sync.Mutex
	pending map[string][]byte // call SID -> session JSON
	wake    chan struct{}
}

func newBufferedCreates(st storeAPI, log *zap.Logger, every time.Duration, reg prometheus.Registerer) *bufferedCreates {
	b := &bufferedCreates{
		storeAPI: st, log: log, every: every, pending: map[string][]byte{}, wake: make(chan struct{}, 1),
		gauge: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "vivi", Name: "store_buffered_sessions",
			Help: "Ringing sessions the voice webhook created while the store was down, not written yet."}),
	}
	reg.MustRegister(b.gauge)
	return b
}

func (b *bufferedCreates) CreateSession(ctx context.Context, s *session.Session) error {
	err := b.storeAPI.CreateSession(ctx, s)
	if err == nil || errors.Is(err, store.ErrExists) {
		return err
	}
	data, merr := json.Marshal(s)
	if merr != nil {
		return err
	}
	b.mu.Lock()
	if _, ok := b.pending[s.CallSID]; !ok && len(b.pending) >= maxBufferedCreates {
		b.mu.Unlock()
		return fmt.Errorf("%w (and %d sessions are buffered already)", err, maxBufferedCreates)
	}
	b.pending[s.CallSID] = data
	b.gauge.Set(float64(len(b.pending)))
	b.mu.Unlock()
	b.log.Warn("store down: ringing session buffered, written when the store answers", zap.String("call_sid", s.CallSID), zap.Error(err))
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return nil
}

func (b *bufferedCreates) Session(ctx context.Context, callSID string) (*session.Session, error) {
	s, err := b.storeAPI.Session(ctx, callSID)
	if err == nil {
		return s, nil
	}
	b.mu.Lock()
	data, ok := b.pending[callSID]
	b.mu.Unlock()
	if !ok {
		return nil, err
	}
	var out session.Session
	if jerr := json.Unmarshal(data, &out); jerr != nil {
		return nil, err
	}
	return &out, nil
}

// run writes the buffered sessions every b.every until ctx ends.
func (b *bufferedCreates) run(ctx context.Context) {
	t := time.NewTicker(b.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-b.wake:
			continue // the tick writes it: the store has just failed
		}
		b.flush(ctx)
	}
}

// flush creates each buffered session; it stops at the first store error.
func (b *bufferedCreates) flush(ctx context.Context) {
	b.mu.Lock()
	batch := make(map[string][]byte, len(b.pending))
	for k, v := range b.pending {
		batch[k] = v
	}
	b.mu.Unlock()
	for sid, data := range batch {
		var s session.Session
		if err := json.Unmarshal(data, &s); err != nil {
			b.drop(sid)
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, b.every+time.Second)
		err := b.storeAPI.CreateSession(cctx, &s)
		cancel()
		switch {
		case err == nil:
			b.log.Info("buffered ringing session written", zap.String("call_sid", sid))
		case errors.Is(err, store.ErrExists):
			b.log.Info("buffered ringing session not written: the call's record exists already", zap.String("call_sid", sid))
		default:
			return
		}
		b.drop(sid)
	}
}

func (b *bufferedCreates) drop(sid string) {
	b.mu.Lock()
	delete(b.pending, sid)
	b.gauge.Set(float64(len(b.pending)))
	b.mu.Unlock()
}
