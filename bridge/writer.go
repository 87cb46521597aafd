package bridge

import (
	"context"
	"errors"
	"slices"
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
// off the call loop, so that a slow store never stalls the audio. Nothing
// is dropped: what is queued while a write is in flight (or while the store
// is down) is merged into the next write, and the merged pending changes are
// bounded by design. Timeline events and transcript turns, the changes a
// peer can make frequent, accumulate in a scratch record with the same
// head/tail folding as the real one (session.Record, AddTurn), so that
// applying the scratch gives the record what applying every change would
// have. Other mutations (state changes: the start and the end of a stream)
// are few per call and kept in order between the appends.
//
// A failed write is retried with the merged state after a backoff doubling
// from writerRetryMin to writerRetryMax; after finish, for at most
// writerFinalBudget, then the writer gives up (logged as an error) so that a
// store gone for good does not hold the call's goroutine forever.
type sessionWriter struct {
	store   Sessions
	callSID string
	log     *zap.Logger
	ctx     context.Context // not cancelled with the call: the end must be written
	timeout time.Duration
	// guard, when set, runs first in every write: an error refuses the
	// whole write (the fence check, lease.go). Set before run.
	guard func(*session.Session) error
	// fenced is closed when guard refused a write with session.ErrFenced:
	// the writer has stopped and drops what is queued.
	fenced chan struct{}

	mu      sync.Mutex
	busy    bool // a write is in flight
	pending []pendingSeg
	final   bool          // finish was called
	wake    chan struct{} // capacity 1: pending changed
}

// pendingSeg is an optional mutation followed by the appends queued after it.
type pendingSeg struct {
	fn   mutation
	adds *session.Session // Timeline, Transcript and their fold counts only
}

// Retry schedule of failed session writes.
const (
	writerRetryMin    = 100 * time.Millisecond
	writerRetryMax    = 5 * time.Second
	writerFinalBudget = 2 * time.Minute
)

func newSessionWriter(ctx context.Context, store Sessions, callSID string, log *zap.Logger, timeout time.Duration) *sessionWriter {
	return &sessionWriter{
		store: store, callSID: callSID, log: log, ctx: ctx, timeout: timeout,
		wake: make(chan struct{}, 1), fenced: make(chan struct{}),
	}
}

// push queues the mutation m without blocking. For the few state changes of
// a call; events and turns go through event and turn.
func (w *sessionWriter) push(m mutation) {
	w.mu.Lock()
	w.pending = append(w.pending, pendingSeg{fn: m})
	w.mu.Unlock()
	w.signal()
}

// event queues a timeline event without blocking.
func (w *sessionWriter) event(now time.Time, typ, detail string) {
	w.mu.Lock()
	w.tail().Record(now, typ, detail)
	w.mu.Unlock()
	w.signal()
}

// turn queues a transcript turn without blocking.
func (w *sessionWriter) turn(now time.Time, role, text string) {
	w.mu.Lock()
	w.tail().AddTurn(now, role, text)
	w.mu.Unlock()
	w.signal()
}

// tail returns the scratch record of the last pending segment. w.mu is held.
func (w *sessionWriter) tail() *session.Session {
	if n := len(w.pending); n == 0 || w.pending[n-1].adds == nil {
		if n == 0 {
			w.pending = append(w.pending, pendingSeg{})
		}
		w.pending[len(w.pending)-1].adds = &session.Session{}
	}
	return w.pending[len(w.pending)-1].adds
}

func (w *sessionWriter) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// finish queues the last mutation; run applies it after everything queued
// before and returns. Called once, by the call loop.
func (w *sessionWriter) finish(m mutation) {
	w.mu.Lock()
	w.pending = append(w.pending, pendingSeg{fn: m})
	w.final = true
	w.mu.Unlock()
	w.signal()
}

// take removes and returns everything pending, and whether finish was called.
func (w *sessionWriter) take() ([]pendingSeg, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	batch := w.pending
	w.pending = nil
	w.busy = len(batch) > 0
	return batch, w.final
}

// idle reports whether everything queued has been written.
func (w *sessionWriter) idle() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending) == 0 && !w.busy
}

func (w *sessionWriter) settled() {
	w.mu.Lock()
	w.busy = false
	w.mu.Unlock()
}

// putBack puts a batch whose write failed in front of what was queued since,
// merging the appends that follow it into its last scratch record.
func (w *sessionWriter) putBack(batch []pendingSeg) {
	w.mu.Lock()
	defer w.mu.Unlock()
	later := w.pending
	if last := &batch[len(batch)-1]; len(later) > 0 && later[0].fn == nil {
		if last.adds == nil {
			last.adds = later[0].adds
		} else {
			applyAdds(last.adds, later[0].adds)
		}
		later = later[1:]
	}
	w.pending = append(batch, later...)
}

// run writes the pending changes until the final one is written.
func (w *sessionWriter) run() {
	delay := time.Duration(0)
	var failingSince time.Time
	for {
		if delay == 0 {
			<-w.wake
		}
		batch, final := w.take()
		if len(batch) == 0 {
			if final {
				return
			}
			continue
		}
		err := w.apply(batch)
		if err != nil && !isFenced(err) && !errors.Is(err, session.ErrNotFound) {
			w.putBack(batch) // retried below; before settled, so idle stays false
		}
		w.settled()
		switch {
		case isFenced(err):
			w.log.Warn("session writes stopped: a newer stream owns the call (fenced)")
			close(w.fenced)
			return
		case err == nil:
			if delay > 0 {
				w.log.Info("session updates written after the store recovered", zap.Float64("failing_for_s", time.Since(failingSince).Seconds()))
			}
			delay = 0
			if final {
				w.signal() // anything queued after the take: write it too (normally nothing)
			}
			continue
		case errors.Is(err, session.ErrNotFound):
			w.log.Warn("session update not written: no session record", zap.Error(err))
			delay = 0
			if final {
				return
			}
			continue
		}
		if delay == 0 {
			failingSince = time.Now()
			delay = writerRetryMin
			w.log.Warn("session update failed; retrying with what is queued since", zap.Error(err))
		} else {
			delay = min(2*delay, writerRetryMax)
		}
		if final && time.Since(failingSince) > writerFinalBudget {
			w.log.Error("session update given up: the store kept failing after the call ended",
				zap.Float64("failing_for_s", time.Since(failingSince).Seconds()), zap.Error(err))
			return
		}
		t := time.NewTimer(delay)
		<-t.C
	}
}

// apply writes batch in one UpdateSession.
func (w *sessionWriter) apply(batch []pendingSeg) error {
	if !slices.ContainsFunc(batch, func(seg pendingSeg) bool { return seg.fn != nil || seg.adds != nil }) {
		return nil // only nil mutations (the end of a migrated stream): nothing to write
	}
	ctx, cancel := context.WithTimeout(w.ctx, w.timeout)
	defer cancel()
	_, err := w.store.UpdateSession(ctx, w.callSID, func(s *session.Session) error {
		if w.guard != nil {
			if err := w.guard(s); err != nil {
				return err
			}
		}
		for _, seg := range batch {
			if seg.fn != nil {
				seg.fn(s)
			}
			if seg.adds != nil {
				applyAdds(s, seg.adds)
			}
		}
		return nil
	})
	return err
}

// applyAdds appends the events and turns of the scratch record adds to s.
// It does not change adds: a store may call its update func more than once.
func applyAdds(s, adds *session.Session) {
	for _, e := range adds.Timeline {
		s.Record(e.At, e.Type, e.Detail)
	}
	s.Folded += adds.Folded
	for _, t := range adds.Transcript {
		s.AddTurn(t.At, t.Role, t.Text)
	}
	s.TranscriptFolded += adds.TranscriptFolded
}
