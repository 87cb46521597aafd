package bridge

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/vivi/bridge/session"
)

// bufPool recycles the byte buffers of relayed frames, so that the audio
// path allocates nothing per frame in the steady state. A buffer belongs to
// whoever holds it: the reader that fills it, the loop that forwards it, the
// writer that writes it and puts it back.
type bufPool struct{ p sync.Pool }

// maxPooledBuf keeps unusually large buffers out of the pool.
const maxPooledBuf = 64 << 10

func (bp *bufPool) get() *[]byte {
	if b, ok := bp.p.Get().(*[]byte); ok {
		*b = (*b)[:0]
		return b
	}
	b := make([]byte, 0, 1024)
	return &b
}

func (bp *bufPool) put(b *[]byte) {
	if b != nil && cap(*b) <= maxPooledBuf {
		bp.p.Put(b)
	}
}

// mutation is one change to the session record, applied in order.
type mutation func(*session.Session)

// sessionWriter applies the call's changes to its session record in order,
// off the call loop, so that a slow store never stalls the audio. Mutations
// queued while a write is in flight are applied together in the next one.
// The queue is bounded: when it is full a mutation is dropped and counted
// (the final one, the end of the call, is never dropped).
type sessionWriter struct {
	store   Sessions
	callSID string
	log     *zap.Logger
	ctx     context.Context // not cancelled with the call: the end must be written
	timeout time.Duration

	q       chan mutation
	final   chan mutation
	dropped int // owned by the call loop (push)
}

const writerQueue = 64

func newSessionWriter(ctx context.Context, store Sessions, callSID string, log *zap.Logger, timeout time.Duration) *sessionWriter {
	return &sessionWriter{
		store: store, callSID: callSID, log: log, ctx: ctx, timeout: timeout,
		q:     make(chan mutation, writerQueue),
		final: make(chan mutation, 1),
	}
}

// push queues m without blocking. Called by the call loop only.
func (w *sessionWriter) push(m mutation) {
	select {
	case w.q <- m:
	default:
		w.dropped++
		if w.dropped == 1 || w.dropped%100 == 0 {
			w.log.Warn("session writer queue full: session update dropped (store slow?)", zap.Int("dropped", w.dropped))
		}
	}
}

// finish queues the last mutation; run applies it after everything queued
// before and returns. Called once, by the call loop.
func (w *sessionWriter) finish(m mutation) { w.final <- m }

// run applies mutations until the final one is written.
func (w *sessionWriter) run() {
	var batch []mutation
	for {
		select {
		case m := <-w.q:
			batch = w.drain(append(batch[:0], m))
			w.apply(batch)
		case m := <-w.final:
			batch = append(w.drain(batch[:0]), m)
			w.apply(batch)
			return
		}
	}
}

func (w *sessionWriter) drain(batch []mutation) []mutation {
	for {
		select {
		case m := <-w.q:
			batch = append(batch, m)
		default:
			return batch
		}
	}
}

func (w *sessionWriter) apply(batch []mutation) {
	ctx, cancel := context.WithTimeout(w.ctx, w.timeout)
	defer cancel()
	_, err := w.store.UpdateSession(ctx, w.callSID, func(s *session.Session) error {
		for _, m := range batch {
			m(s)
		}
		return nil
	})
	if err != nil {
		w.log.Warn("session update failed", zap.Int("changes", len(batch)), zap.Error(err))
	}
	clear(batch)
}
