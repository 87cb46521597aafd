package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/vivi/bridge/bridge/realtime"
)

// modelPool keeps a few connections of the default model open, so that an
// accepted call starts talking without waiting for a dial (a model
// handshake takes hundreds of milliseconds), while nothing is dialled for a
// websocket before its token is verified and claimed: the pool refills one
// connection per take, so the model sessions a pod opens follow the calls
// it accepts, plus the pool's size.
//
// A pooled connection is healthy when taken: it is added only once the
// model sent session.created, and while it waits a watcher goroutine reads
// it (gorilla answers the model's pings inside that read). The model sends
// nothing unasked after session.created, so anything the watcher reads
// while the connection is idle (an error event, a close) discards it. When
// a call takes the connection the watcher hands its pending read over to
// the call's reader (pooledConn.first) and returns: a socket has one reader
// at a time. Nothing writes to a pooled connection (no pings from us), so it
// is retired at maxAge, which stays below the read deadline of the
// connection (three ping intervals) and keeps the model's session clock,
// which starts at connect, close to the call's.
type modelPool struct {
	size   int
	maxAge time.Duration
	dial   func(ctx context.Context) (*realtime.Conn, error)
	now    func() time.Time // the age clock; tests inject one
	m      *metrics
	log    *zap.Logger
	ctx    context.Context // cancelled by stop: an in-flight dial ends
	cancel context.CancelFunc
	kickC  chan struct{} // wakes the filler: a take, a discard, a clock change
	wg     sync.WaitGroup

	mu      sync.Mutex
	idle    []*pooledConn // ready for a call, oldest first
	filling *realtime.Conn
	stopped bool
}

// pooledConn is one pooled connection. state is guarded by the pool's mu.
type pooledConn struct {
	conn *realtime.Conn
	born time.Time
	// expires is session.created's expires_at, zero when not given;
	// model is its model, "" when not given.
	expires time.Time
	model   string
	state   int             // pooledIdle, pooledTaken, pooledDiscarded
	first   chan pooledRead // cap 1: the watcher's read handed to the taker
}

const (
	pooledIdle = iota
	pooledTaken
	pooledDiscarded
)

// pooledRead is a read result of a pooled connection's watcher.
type pooledRead struct {
	msg []byte
	err error
}

// Pool retry bounds after a failed dial: doubling from the first to the last.
const (
	poolRetryMin = 100 * time.Millisecond
	poolRetryMax = 30 * time.Second
)

// Reasons a pooled connection is discarded (metrics label).
const (
	discardExpired  = "expired"
	discardClosed   = "closed_by_model"
	discardEvent    = "unexpected_event"
	discardShutdown = "shutdown"
)

func newModelPool(size int, maxAge time.Duration, dial func(context.Context) (*realtime.Conn, error),
	m *metrics, log *zap.Logger) *modelPool {
	ctx, cancel := context.WithCancel(context.Background())
	return &modelPool{
		size: size, maxAge: maxAge, dial: dial, now: time.Now, m: m, log: log.Named("model_pool"),
		ctx: ctx, cancel: cancel, kickC: make(chan struct{}, 1),
	}
}

// start runs the filler until stop.
func (p *modelPool) start() {
	p.wg.Add(1)
	go p.run()
}

func (p *modelPool) kick() {
	select {
	case p.kickC <- struct{}{}:
	default:
	}
}

// take hands out the oldest idle connection young enough to use, or nil.
// It never blocks: a miss dials as before.
func (p *modelPool) take() *pooledConn {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	now := p.now()
	var got *pooledConn
	var old []*pooledConn
	for len(p.idle) > 0 && got == nil {
		pc := p.idle[0]
		p.idle = p.idle[1:]
		if now.Sub(pc.born) >= p.maxAge {
			pc.state = pooledDiscarded
			old = append(old, pc)
			continue
		}
		pc.state = pooledTaken
		got = pc
	}
	p.m.poolSize.Set(float64(len(p.idle)))
	p.mu.Unlock()
	for _, pc := range old {
		p.discard(pc, discardExpired)
	}
	if got == nil {
		p.m.poolTakes.WithLabelValues("miss").Inc()
	} else {
		p.m.poolTakes.WithLabelValues("hit").Inc()
	}
	p.kick()
	return got
}

// discard closes a connection the pool removed from idle.
func (p *modelPool) discard(pc *pooledConn, reason string) {
	p.m.poolDiscarded.WithLabelValues(reason).Inc()
	_ = pc.conn.Close()
	if reason != discardShutdown && reason != discardExpired {
		p.log.Info("pooled model connection discarded", zap.String("reason", reason))
	}
}

// run fills the pool up to size, one dial at a time, retires connections
// at maxAge, and retries failed dials with a doubling delay.
func (p *modelPool) run() {
	defer p.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var retryAt time.Time
	failures := 0
	for {
		next := p.retire()
		now := p.now()
		if p.wanted() && !now.Before(retryAt) {
			if err := p.fill(); err != nil {
				if p.ctx.Err() != nil {
					return
				}
				failures++
				delay := min(poolRetryMin<<min(failures-1, 20), poolRetryMax)
				retryAt = p.now().Add(delay)
				p.m.poolDialFailures.Inc()
				p.log.Warn("model pool dial failed; retrying", zap.Int("failures", failures),
					zap.Float64("retry_in_s", delay.Seconds()), zap.Error(err))
			} else {
				failures, retryAt = 0, time.Time{}
			}
			continue
		}
		wait := time.Duration(0)
		if !retryAt.IsZero() && p.wanted() {
			wait = retryAt.Sub(now)
		}
		if next > 0 && (wait <= 0 || next < wait) {
			wait = next
		}
		var timerC <-chan time.Time
		if wait > 0 {
			timer.Reset(wait)
			timerC = timer.C
		}
		select {
		case <-p.ctx.Done():
			return
		case <-p.kickC:
		case <-timerC:
		}
		timer.Stop()
	}
}

// wanted reports whether the pool has room for another connection.
func (p *modelPool) wanted() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.stopped && len(p.idle) < p.size
}

// retire discards idle connections at maxAge and returns the time until
// the next one is due, or 0 when none is idle.
func (p *modelPool) retire() time.Duration {
	p.mu.Lock()
	now := p.now()
	var old []*pooledConn
	for len(p.idle) > 0 && now.Sub(p.idle[0].born) >= p.maxAge {
		pc := p.idle[0]
		p.idle = p.idle[1:]
		pc.state = pooledDiscarded
		old = append(old, pc)
	}
	next := time.Duration(0)
	if len(p.idle) > 0 {
		next = p.idle[0].born.Add(p.maxAge).Sub(now)
	}
	p.m.poolSize.Set(float64(len(p.idle)))
	p.mu.Unlock()
	for _, pc := range old {
		p.discard(pc, discardExpired)
	}
	return next
}

// fill dials one connection, waits for its session.created and adds it.
func (p *modelPool) fill() error {
	conn, err := p.dial(p.ctx)
	if err != nil {
		return err
	}
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		_ = conn.Close()
		return p.ctx.Err()
	}
	p.filling = conn // stop closes it: the read below then returns
	p.mu.Unlock()
	msg, err := conn.Read(nil)
	var expires time.Time
	var model string
	if err == nil {
		var ev *realtime.ServerEvent
		if ev, err = realtime.ParseEvent(msg); err == nil && ev.Type != realtime.TypeSessionCreated {
			err = fmt.Errorf("first model event is %q, not session.created", clip(ev.Type, 60))
		} else if err == nil && ev.Session != nil {
			if ev.Session.ExpiresAt > 0 {
				expires = time.Unix(ev.Session.ExpiresAt, 0)
			}
			model = ev.Session.Model
		}
	}
	p.mu.Lock()
	p.filling = nil
	if err == nil && p.stopped {
		err = errors.New("pool stopped")
	}
	if err != nil {
		p.mu.Unlock()
		_ = conn.Close()
		return err
	}
	pc := &pooledConn{conn: conn, born: p.now(), expires: expires, model: model, first: make(chan pooledRead, 1)}
	p.idle = append(p.idle, pc)
	p.m.poolSize.Set(float64(len(p.idle)))
	p.wg.Add(1)
	p.mu.Unlock()
	go p.watch(pc)
	return nil
}

// watch reads a pooled connection while it waits (see modelPool). Once the
// connection is taken, its next read goes to the taker and watch returns.
func (p *modelPool) watch(pc *pooledConn) {
	defer p.wg.Done()
	msg, err := pc.conn.Read(nil)
	p.mu.Lock()
	state := pc.state
	if state == pooledIdle {
		pc.state = pooledDiscarded
		for i, q := range p.idle {
			if q == pc {
				p.idle = append(p.idle[:i], p.idle[i+1:]...)
				break
			}
		}
		p.m.poolSize.Set(float64(len(p.idle)))
	}
	p.mu.Unlock()
	switch state {
	case pooledTaken:
		pc.first <- pooledRead{msg: msg, err: err}
	case pooledIdle:
		reason := discardEvent
		if err != nil {
			reason = discardClosed
		}
		p.discard(pc, reason)
		p.kick()
	}
}

// stop stops filling and closes the idle connections; taken ones belong to
// their calls. wait then waits for every goroutine of the pool.
func (p *modelPool) stop() {
	if p == nil {
		return
	}
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.stopped = true
	idle := p.idle
	p.idle = nil
	for _, pc := range idle {
		pc.state = pooledDiscarded
	}
	if p.filling != nil {
		_ = p.filling.Close()
	}
	p.m.poolSize.Set(0)
	p.mu.Unlock()
	p.cancel()
	for _, pc := range idle {
		p.discard(pc, discardShutdown)
	}
}

func (p *modelPool) wait() {
	if p != nil {
		p.wg.Wait()
	}
}

// read is a model reader's read: the pooled watcher's pending read first,
// when the connection came from the pool.
func (mc *modelConn) read(buf []byte) ([]byte, error) {
	if mc.first != nil {
		r := <-mc.first
		mc.first = nil
		return append(buf[:0], r.msg...), r.err
	}
	return mc.conn.Read(buf)
}
