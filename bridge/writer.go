package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/usage"
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
// from writerRetryMin to writerRetryMax, for as long as the call lives; after
// finish, for at most writerFinalBudget, then the writer gives up (logged as
// an error, counted in vivi_bridge_session_writes_given_up_total) so that a
// store gone for good does not hold the call's goroutine forever. The wait
// is cut short by finish and by retryNow (the store answers again): a
// writer that failed through a failover would otherwise hold the call's
// changes, its end among them, for up to writerRetryMax after the store is
// back, while the other writers of the record (the webhooks) write at once.
//
// A write that finds no record (the store came back empty, or the webhook's
// record is still buffered on another pod) re-creates it, when the store can
// create: from the last record written, or from seed when none was, with the
// pending changes applied, so the live call's record is never lost for good.
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
	// written, when set, runs after every UpdateSession of apply with its
	// outcome, on the writer's goroutine: what a mutation computed inside
	// the update (which a store may run more than once) counts only once
	// the write committed (the fence an adopting stream took). Set before run.
	written func(ok bool)

	// Set by the call before run starts, then read by run only.
	creator sessionCreator          // nil: a missing record is not re-created
	seed    func() *session.Session // the record to create when none was written yet
	metrics *writerMetrics          // nil: not counted
	prices  usage.Prices            // prices the record's usage when a batch changes it
	last    *session.Session        // the record after the last write; owned by run

	mu      sync.Mutex
	busy    bool // a write is in flight
	pending []pendingSeg
	final   bool          // finish was called
	wake    chan struct{} // capacity 1: pending changed
	kick    chan struct{} // capacity 1: retry a failed write now (finish, retryNow)
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
		wake: make(chan struct{}, 1), kick: make(chan struct{}, 1), fenced: make(chan struct{}),
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

// toolTurn queues a function call and its output as a transcript turn.
func (w *sessionWriter) toolTurn(now time.Time, tc session.ToolCall) {
	w.mu.Lock()
	w.tail().AddToolTurn(now, tc)
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
	w.retryNow() // the end is written now, not a backoff later
}

// retryNow ends the wait before the next retry of a failed write, without
// blocking: the store answers again, or the call ended. Safe from any
// goroutine; a writer that is not waiting ignores it.
func (w *sessionWriter) retryNow() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
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
	var failingSince, endedAt time.Time
	for {
		if delay == 0 {
			<-w.wake
		}
		batch, final := w.take()
		if final && endedAt.IsZero() {
			endedAt = time.Now()
		}
		if len(batch) == 0 {
			if final {
				return
			}
			continue
		}
		w.drainKick() // a kick counts for the waits after this write only
		err := w.apply(batch)
		requeued := err != nil && !isFenced(err) && !errors.Is(err, session.ErrNotFound)
		if requeued {
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
		case errors.Is(err, session.ErrNotFound) && w.creator != nil && (w.last != nil || w.seed != nil):
			err = w.recreate(batch)
			if err == nil {
				delay = 0
				if final {
					w.signal()
				}
				continue
			}
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
		if !requeued {
			w.putBack(batch) // a re-create that failed: retried like any write
		}
		// The budget runs from the end of the call (or the first failure
		// after it): while the call lives, nothing is given up.
		if final && time.Since(latest(failingSince, endedAt)) > writerFinalBudget {
			w.log.Error("session update given up: the store kept failing after the call ended",
				zap.Float64("failing_for_s", time.Since(failingSince).Seconds()), zap.Error(err))
			if w.metrics != nil {
				w.metrics.givenUp.Inc()
			}
			return
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-w.kick:
			t.Stop()
		}
	}
}

func (w *sessionWriter) drainKick() {
	select {
	case <-w.kick:
	default:
	}
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// apply writes batch in one UpdateSession.
func (w *sessionWriter) apply(batch []pendingSeg) error {
	if !slices.ContainsFunc(batch, func(seg pendingSeg) bool { return seg.fn != nil || seg.adds != nil }) {
		return nil // only nil mutations (the end of a migrated stream): nothing to write
	}
	ctx, cancel := context.WithTimeout(w.ctx, w.timeout)
	defer cancel()
	out, err := w.store.UpdateSession(ctx, w.callSID, func(s *session.Session) error {
		if w.guard != nil {
			if err := w.guard(s); err != nil {
				return err
			}
		}
		applyBatch(s, batch)
		w.priceBatch(s, batch)
		return nil
	})
	if err == nil && out != nil {
		w.last = out
	}
	if w.written != nil {
		w.written(err == nil)
	}
	return err
}

func applyBatch(s *session.Session, batch []pendingSeg) {
	for _, seg := range batch {
		if seg.fn != nil {
			seg.fn(s)
		}
		if seg.adds != nil {
			applyAdds(s, seg.adds)
		}
	}
}

// recreateSeqGap is how far a re-created record's event numbers jump
// (Session.Seq), more than other writers record in a call's life.
const recreateSeqGap = 1000

// sessionCreator is the store's CreateSession, which the writer uses to
// re-create a record the store lost (store.Memory and store.Redis have it).
type sessionCreator interface {
	CreateSession(ctx context.Context, s *session.Session) error
}

// recreate creates the record, missing from the store, from the last one
// written (or the seed) with batch applied. On an error (the store fails,
// or another writer created it meanwhile) the caller retries batch as an
// update, so nothing is applied twice.
func (w *sessionWriter) recreate(batch []pendingSeg) error {
	var base *session.Session
	if w.last != nil {
		base = cloneSession(w.last)
	}
	if base == nil {
		base = w.seed()
	}
	// Other writers (callbacks, commands) may have recorded events in the
	// lost record since this one was written: the events recorded now are
	// numbered past them, so that no event id is given twice.
	base.Seq += recreateSeqGap
	applyBatch(base, batch)
	w.priceBatch(base, batch)
	ctx, cancel := context.WithTimeout(w.ctx, w.timeout)
	defer cancel()
	if err := w.creator.CreateSession(ctx, base); err != nil {
		return err
	}
	w.last = base
	w.log.Warn("session record was missing from the store (lost or not written yet): re-created from the call's own copy",
		zap.String("state", string(base.State)))
	if w.metrics != nil {
		w.metrics.recreated.Inc()
	}
	return nil
}

// touch queues a write that changes nothing, so that a record the store
// lost is re-created now rather than at the call's next change.
func (w *sessionWriter) touch() { w.push(func(*session.Session) {}) }

// cloneSession deep-copies s through its JSON form (how both stores keep it).
func cloneSession(s *session.Session) *session.Session {
	b, err := json.Marshal(s)
	if err != nil {
		return nil
	}
	var out session.Session
	if err := json.Unmarshal(b, &out); err != nil {
		return nil
	}
	return &out
}

// writerMetrics count what session writers could not do as asked.
type writerMetrics struct {
	givenUp   prometheus.Counter
	recreated prometheus.Counter
}

func newWriterMetrics(reg prometheus.Registerer) (*writerMetrics, error) {
	m := &writerMetrics{
		givenUp: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "vivi", Subsystem: "bridge", Name: "session_writes_given_up_total",
			Help: "Calls whose last session changes were dropped because the store kept failing for writerFinalBudget (2 min) after the call ended.",
		}),
		recreated: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "vivi", Subsystem: "bridge", Name: "session_records_recreated_total",
			Help: "Session records of live calls re-created by their writer because the store had none (it lost its data, or the webhook's record was still buffered).",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.givenUp, m.recreated} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// applyAdds appends the events and turns of the scratch record adds to s,
// and puts its usage totals (putUsage; putting a total again adds nothing).
// It does not change adds: a store may call its update func more than once.
//
// A batch applied again after a write whose outcome was unknown (the
// connection died after Redis committed it, before the replica wait
// answered) is not appended twice: an event or turn equal to one among the
// record's latest, to the nanosecond of its time, is already there.
func applyAdds(s, adds *session.Session) {
	recentEvents := s.Timeline[max(0, len(s.Timeline)-len(adds.Timeline)-8):]
	for _, e := range adds.Timeline {
		if slices.ContainsFunc(recentEvents, func(o session.Event) bool {
			return o.At.Equal(e.At) && o.Type == e.Type && o.Detail == e.Detail
		}) {
			continue
		}
		s.Record(e.At, e.Type, e.Detail)
	}
	s.Folded += adds.Folded
	recentTurns := s.Transcript[max(0, len(s.Transcript)-len(adds.Transcript)-8):]
	for _, t := range adds.Transcript {
		if slices.ContainsFunc(recentTurns, func(o session.Turn) bool {
			return o.At.Equal(t.At) && o.Role == t.Role && o.Text == t.Text
		}) {
			continue
		}
		s.PutTurn(t)
	}
	s.TranscriptFolded += adds.TranscriptFolded
	putUsage(s, adds)
}

// seedSession returns what the writer creates when the store has no record
// of the call and the writer wrote none yet: the record the set-up read
// (sess, nil when the store failed) or, lacking it, one made from the
// token's claims, streaming here on this stream.
func (c *call) seedSession(sess *session.Session) func() *session.Session {
	if sess != nil {
		snap := cloneSession(sess)
		return func() *session.Session { return cloneSession(snap) }
	}
	callSID, streamSID, claims, pod, at := c.callSID, c.streamSID, c.claims, c.cfg.PodID, c.startedAt
	return func() *session.Session {
		s := session.New(callSID, claims.ChannelID, claims.AgentID, at)
		startStream(s, pod, streamSID, at)
		return s
	}
}

// RewriteSessions makes every live call on this pod write its session
// record now, re-creating it when the store lost it (cmd calls it when
// Redis came back empty). It returns how many calls were asked.
func (s *Server) RewriteSessions() int {
	return s.eachWriter((*sessionWriter).touch)
}

// RetrySessionWrites makes every live call on this pod whose session
// writes are failing retry them now instead of at the end of its backoff
// (cmd calls it when the store answers again after an outage). It returns
// how many calls were asked.
func (s *Server) RetrySessionWrites() int {
	return s.eachWriter((*sessionWriter).retryNow)
}

// eachWriter hands fn the session writer of every live call on this pod,
// on the call's own loop, and returns how many calls took it.
func (s *Server) eachWriter(fn func(*sessionWriter)) int {
	s.mu.Lock()
	var sids []string
	for c := range s.calls {
		if p := c.sid.Load(); p != nil {
			sids = append(sids, *p)
		}
	}
	s.mu.Unlock()
	n := 0
	for _, sid := range sids {
		err := s.deliver(sid, func(c *call) {
			if c.writer != nil {
				fn(c.writer)
			}
		})
		if err == nil {
			n++
		}
	}
	return n
}
