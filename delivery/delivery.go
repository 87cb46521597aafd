// Package delivery is the pod's consumer of the outbox: it holds leases on
// outbox shards, posts call events to their channel's eventsUrl (signed,
// retried with backoff up to a horizon, then parked) and runs post-call
// jobs, in order per call and in parallel across calls.
package delivery

import (
	"context"
	"hash/fnv"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/store"
)

// Defaults of Config.
const (
	DefaultWorkers  = 8
	DefaultHorizon  = 24 * time.Hour
	DefaultLeaseTTL = 15 * time.Second
	DefaultRenew    = 5 * time.Second
	DefaultMaxHeld  = 10000
	readCount       = 100 // entries per shard and read
)

// Channels reads one channel (the store implements it).
type Channels interface {
	Channel(ctx context.Context, id string) (channel.Channel, error)
}

// JobResult is the outcome of one run of a job.
type JobResult struct {
	Done       bool          // finished: acknowledged
	RetryAfter time.Duration // > 0: run again after it
	Err        error         // neither: a permanent failure, logged and acknowledged
}

// JobHandler runs one kind of post-call job (Config.Jobs, by entry Type).
type JobHandler interface {
	Run(ctx context.Context, e store.OutboxEntry) JobResult
}

// Config configures New; zero fields take their defaults.
type Config struct {
	Outbox   store.Outbox
	Channels Channels
	// Client posts the events (default NewClient(AllowPrivate, Resolver)).
	Client       *http.Client
	AllowPrivate bool
	Resolver     *net.Resolver
	// Consumer names this pod in the consumer group and on leases.
	Consumer string
	// Workers is how many attempts run at once (EVENTS_WORKERS, default 8).
	Workers int
	// Horizon is how long after its event an entry is retried before it is
	// parked (EVENTS_RETRY_HORIZON, default 24h).
	Horizon time.Duration
	// LeaseTTL is the shard lease (default 15 s), renewed every Renew (default 5 s).
	LeaseTTL, Renew time.Duration
	// Peers returns how many pods are ready, for a fair share of the
	// shards (ceil(OutboxShards/peers)); nil: take every shard.
	Peers func(ctx context.Context) (int, error)
	// Jobs runs post-call jobs by type; a job of another type is parked.
	Jobs map[string]JobHandler
	// MaxHeld bounds the entries held in memory: no reads while above (default 10000).
	MaxHeld int
	Logger  *zap.Logger
	Now     func() time.Time
	// Jitter turns a backoff d into the wait (default uniform in [d/2, d]).
	Jitter     func(d time.Duration) time.Duration
	Registerer prometheus.Registerer
}

// Deliverer consumes the outbox for one pod: Run until its context ends,
// Stop to drain.
type Deliverer struct {
	cfg Config
	m   metrics

	stopOnce sync.Once
	stopc    chan struct{} // closed by Stop: drain
	done     chan struct{} // closed when Run returns
	abortMu  sync.Mutex
	abort    context.CancelFunc // cancels attempts in flight (Stop out of time)
}

// New returns a Deliverer; Run starts it.
func New(cfg Config) *Deliverer {
	if cfg.Client == nil {
		cfg.Client = NewClient(cfg.AllowPrivate, cfg.Resolver)
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.Horizon <= 0 {
		cfg.Horizon = DefaultHorizon
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.Renew <= 0 {
		cfg.Renew = DefaultRenew
	}
	if cfg.MaxHeld <= 0 {
		cfg.MaxHeld = DefaultMaxHeld
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Jitter == nil {
		cfg.Jitter = defaultJitter
	}
	return &Deliverer{cfg: cfg, m: newMetrics(cfg.Registerer), stopc: make(chan struct{}), done: make(chan struct{})}
}

// Stop drains: no new reads or attempts, attempts in flight finish
// (bounded by the HTTP timeout), retries waiting are left pending in the
// store, and the leases are released so that another pod takes the shards
// at once. When ctx ends first, attempts in flight are cancelled. Stop
// returns once Run has returned (or ctx ended).
func (d *Deliverer) Stop(ctx context.Context) error {
	d.stopOnce.Do(func() { close(d.stopc) })
	select {
	case <-d.done:
		return nil
	case <-ctx.Done():
	}
	d.abortMu.Lock()
	if d.abort != nil {
		d.abort()
	}
	d.abortMu.Unlock()
	select {
	case <-d.done:
	case <-time.After(time.Second): // Run ends as soon as its attempts see the cancel
	}
	return ctx.Err()
}

// Run consumes the outbox until ctx ends (then it returns at once, leases
// kept until they expire, as after a crash) or Stop drained it.
func (d *Deliverer) Run(ctx context.Context) {
	defer close(d.done)
	work, cancel := context.WithCancel(ctx)
	d.abortMu.Lock()
	d.abort = cancel
	d.abortMu.Unlock()
	defer cancel()
	l := &loop{
		d:        d,
		ctx:      ctx,
		work:     work,
		owned:    map[int]*shardState{},
		chains:   map[string]*chain{},
		held:     map[heldKey]bool{},
		results:  make(chan result, d.cfg.Workers),
		readDone: make(chan readResult, 1),
		wake:     make(chan string),
		quit:     make(chan struct{}),
	}
	l.run()
}

// loop is the state of Run, owned by its goroutine.
type loop struct {
	d         *Deliverer
	ctx, work context.Context

	owned    map[int]*shardState
	chains   map[string]*chain
	ready    []*chain // chains whose head waits for a worker, in turn
	held     map[heldKey]bool
	inflight int
	draining bool

	reading    bool
	readCancel context.CancelFunc

	results  chan result
	readDone chan readResult
	wake     chan string   // a chain's retry time came
	quit     chan struct{} // closed when run returns (for timers)
	wg       sync.WaitGroup
}

type shardState struct {
	releasing bool // beyond the fair share: released once its attempts finish
	lost      bool // the lease went to another pod
	inflight  int
}

type heldKey struct {
	shard int
	id    string
}

// chain is the entries of one call (or of its jobs), delivered head first.
type chain struct {
	key     string
	shard   int
	queue   []*item
	running bool // the head's attempt is in flight
	waiting bool // the head waits for its retry timer
	queued  bool // in loop.ready
	drop    bool // forget the chain once the attempt in flight ends
	timer   *time.Timer
}

// item is one entry with its attempt history; owned by the loop, or by
// the attempt goroutine while it runs.
type item struct {
	e        store.OutboxEntry
	attempts int
	created  time.Time
	settled  bool // the outcome is recorded; only the acknowledgement is left
	// parkReason is set once the entry is to be parked; only that is left.
	parkReason string
}

type result struct {
	c     *chain
	retry time.Duration // 0: the head is done
}

type readResult struct {
	entries []store.OutboxEntry
	err     error
}

func chainKey(e store.OutboxEntry) string {
	switch {
	case e.CallSID == "":
		return "entry/" + e.ID
	case e.Kind == store.OutboxJob:
		return e.CallSID + "/job"
	default:
		return e.CallSID
	}
}

func (l *loop) run() {
	defer close(l.quit)
	defer l.wg.Wait()
	log := l.d.cfg.Logger
	tick := time.NewTicker(l.d.cfg.Renew)
	defer tick.Stop()
	stopc := l.d.stopc
	l.manageShards()
	l.startRead()
	for {
		select {
		case <-l.ctx.Done():
			l.stopTimers()
			if l.readCancel != nil {
				l.readCancel()
			}
			return
		case <-stopc:
			stopc = nil
			l.draining = true
			l.stopTimers()
			if l.readCancel != nil {
				l.readCancel()
			}
		case <-tick.C:
			if !l.draining {
				l.manageShards()
			}
		case r := <-l.readDone:
			l.reading = false
			if r.err != nil && l.ctx.Err() == nil && !l.draining {
				log.Warn("outbox read failed", zap.Error(r.err))
			}
			l.add(r.entries)
		case r := <-l.results:
			l.finished(r)
		case key := <-l.wake:
			if c := l.chains[key]; c != nil && c.waiting {
				c.waiting, c.timer = false, nil
				l.enqueue(c)
			}
		}
		if l.draining && l.inflight == 0 && !l.reading {
			l.releaseAll()
			return
		}
		l.pump()
		l.startRead()
		l.d.m.held.Set(float64(len(l.held)))
	}
}

// startRead starts one read of the owned shards when none is under way.
func (l *loop) startRead() {
	if l.reading || l.draining || len(l.held) >= l.d.cfg.MaxHeld {
		return
	}
	shards := l.readable()
	if len(shards) == 0 {
		return
	}
	l.reading = true
	ctx, cancel := context.WithCancel(l.ctx)
	l.readCancel = cancel
	l.wg.Go(func() {
		defer cancel()
		es, err := l.d.cfg.Outbox.ReadOutbox(ctx, l.d.cfg.Consumer, shards, readCount, l.d.cfg.Renew)
		l.readDone <- readResult{es, err}
	})
}

func (l *loop) readable() []int {
	var out []int
	for s := range store.OutboxShards {
		if st := l.owned[s]; st != nil && !st.releasing && !st.lost {
			out = append(out, s)
		}
	}
	return out
}

// add puts entries read or claimed on their chains (once each).
func (l *loop) add(es []store.OutboxEntry) {
	for _, e := range es {
		st := l.owned[e.Shard]
		hk := heldKey{e.Shard, e.ID}
		if st == nil || st.releasing || st.lost || l.held[hk] {
			continue // stays pending for us; the shard's next owner claims it
		}
		l.held[hk] = true
		key := chainKey(e)
		c := l.chains[key]
		if c == nil {
			c = &chain{key: key, shard: e.Shard}
			l.chains[key] = c
		}
		c.queue = append(c.queue, &item{e: e})
		if len(c.queue) == 1 && !c.running && !c.waiting {
			l.enqueue(c)
		}
	}
}

func (l *loop) enqueue(c *chain) {
	if !c.queued && !l.draining {
		c.queued = true
		l.ready = append(l.ready, c)
	}
}

// pump starts the heads of ready chains while workers are free.
func (l *loop) pump() {
	for !l.draining && l.inflight < l.d.cfg.Workers && len(l.ready) > 0 {
		c := l.ready[0]
		l.ready = l.ready[1:]
		c.queued = false
		if c.drop || len(c.queue) == 0 {
			continue
		}
		c.running = true
		l.inflight++
		l.owned[c.shard].inflight++
		it := c.queue[0]
		l.wg.Go(func() { l.results <- result{c: c, retry: l.d.attempt(l.work, it)} })
	}
}

// finished takes the outcome of a chain head's attempt.
func (l *loop) finished(r result) {
	c := r.c
	c.running = false
	l.inflight--
	st := l.owned[c.shard]
	st.inflight--
	if r.retry == 0 {
		delete(l.held, heldKey{c.shard, c.queue[0].e.ID})
		c.queue = c.queue[1:]
	}
	switch {
	case c.drop || l.draining || st.releasing || st.lost:
		l.forget(c)
	case r.retry > 0:
		c.waiting = true
		key := c.key
		c.timer = time.AfterFunc(r.retry, func() {
			select {
			case l.wake <- key:
			case <-l.quit:
			}
		})
	case len(c.queue) > 0:
		l.enqueue(c)
	default:
		delete(l.chains, c.key)
	}
	l.settleShard(c.shard)
}

// forget drops a chain not in flight: its entries stay pending in the
// store (claimed again by whoever owns the shard next).
func (l *loop) forget(c *chain) {
	if c.running {
		c.drop = true
		return
	}
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	for _, it := range c.queue {
		delete(l.held, heldKey{c.shard, it.e.ID})
	}
	c.queue, c.drop = nil, true
	delete(l.chains, c.key)
}

func (l *loop) stopTimers() {
	for _, c := range l.chains {
		if c.timer != nil {
			c.timer.Stop()
			c.timer = nil
		}
	}
}

// dropShard forgets the chains of a shard being released or lost.
func (l *loop) dropShard(shard int) {
	for _, c := range l.chains {
		if c.shard == shard {
			l.forget(c)
		}
	}
	l.settleShard(shard)
}

// settleShard releases a shard given up once nothing of it is in flight.
func (l *loop) settleShard(shard int) {
	st := l.owned[shard]
	if st == nil || st.inflight > 0 || !(st.releasing || st.lost) {
		return
	}
	delete(l.owned, shard)
	if st.releasing {
		l.release(shard)
	}
}

func (l *loop) release(shard int) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(l.ctx), l.d.cfg.Renew)
	defer cancel()
	if err := l.d.cfg.Outbox.ReleaseShard(ctx, shard, l.d.cfg.Consumer); err != nil {
		l.d.cfg.Logger.Warn("outbox shard not released", zap.Int("shard", shard), zap.Error(err))
	}
}

func (l *loop) releaseAll() {
	for s, st := range l.owned {
		if !st.lost {
			l.release(s)
		}
		delete(l.owned, s)
	}
}

// manageShards renews the leases held, takes free shards up to the fair
// share and gives up those beyond it.
func (l *loop) manageShards() {
	cfg := l.d.cfg
	log := cfg.Logger
	ctx, cancel := context.WithTimeout(l.ctx, cfg.Renew)
	defer cancel()
	for s, st := range l.owned {
		if st.lost {
			continue
		}
		ok, err := cfg.Outbox.AcquireShard(ctx, s, cfg.Consumer, cfg.LeaseTTL)
		if err != nil {
			log.Warn("outbox lease not renewed", zap.Int("shard", s), zap.Error(err))
			continue
		}
		if !ok {
			log.Warn("outbox lease lost", zap.Int("shard", s))
			st.lost = true
			l.dropShard(s)
		}
	}
	share, known := store.OutboxShards, true
	if cfg.Peers != nil {
		n, err := cfg.Peers(ctx)
		if err != nil {
			log.Warn("outbox: ready pods unknown", zap.Error(err))
			known = false
		} else {
			share = (store.OutboxShards + max(n, 1) - 1) / max(n, 1)
		}
	}
	active := l.readable()
	if !known {
		return
	}
	for len(active) > share {
		s := active[len(active)-1]
		active = active[:len(active)-1]
		l.owned[s].releasing = true
		l.dropShard(s)
	}
	// Each pod starts looking at its own offset, so that pods starting
	// together spread over the shards instead of racing for the same ones.
	h := fnv.New32a()
	h.Write([]byte(cfg.Consumer))
	off := int(h.Sum32() % store.OutboxShards)
	for i := 0; i < store.OutboxShards && len(active) < share; i++ {
		s := (off + i) % store.OutboxShards
		if l.owned[s] != nil {
			continue
		}
		ok, err := cfg.Outbox.AcquireShard(ctx, s, cfg.Consumer, cfg.LeaseTTL)
		if err != nil {
			log.Warn("outbox lease not taken", zap.Int("shard", s), zap.Error(err))
			return
		}
		if !ok {
			continue
		}
		l.owned[s] = &shardState{}
		active = append(active, s)
		es, err := cfg.Outbox.ClaimOutbox(ctx, s, cfg.Consumer)
		if err != nil {
			// Claimed on the next acquisition; give the shard back meanwhile.
			log.Warn("outbox claim failed", zap.Int("shard", s), zap.Error(err))
			l.owned[s].releasing = true
			l.settleShard(s)
			continue
		}
		l.add(es)
	}
}
