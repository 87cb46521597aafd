// Package delivery is the pod's consumer of the outbox: it holds leases on
// outbox shards, posts call events to their channel's eventsUrl (signed,
// retried with backoff up to a horizon, then parked) and runs post-call
// jobs, in order per call and in parallel across calls.
package delivery

import (
	"context"
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
	// Workers is how many event posts run at once (EVENTS_WORKERS, default
	// 8); one channel has at most max(1, Workers/2) of them.
	Workers int
	// JobWorkers is how many jobs run at once, apart from the posts
	// (default Workers), so that slow jobs never take the event workers.
	JobWorkers int
	// Horizon is how long after its event an entry is retried before it is
	// parked (EVENTS_RETRY_HORIZON, default 24h).
	Horizon time.Duration
	// LeaseTTL is the shard lease (default 15 s), renewed every Renew (default 5 s).
	LeaseTTL, Renew time.Duration
	// Peers returns how many other pods are ready, for a fair share of the
	// shards: ceil(OutboxShards/(peers+1)), this pod counting itself
	// while it runs, draining or not; nil: take every shard.
	Peers func(ctx context.Context) (int, error)
	// Jobs runs post-call jobs by type; a job of another type is parked.
	Jobs map[string]JobHandler
	// MaxHeld bounds the entries held in memory: no reads while above
	// (default 10000). One channel holds at most max(1, MaxHeld/8): its
	// entries beyond stay pending in the store and are claimed again once
	// its chains drain, so that a dead receiver holds no other channel up.
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

	stopOnce  sync.Once
	stopc     chan struct{} // closed by Stop: drain
	drainOnce sync.Once
	drainc    chan struct{} // closed by Draining: take no new shards
	done      chan struct{} // closed when Run returns
	abortMu   sync.Mutex
	abort     context.CancelFunc // cancels attempts in flight (Stop out of time)
}

// New returns a Deliverer; Run starts it.
func New(cfg Config) *Deliverer {
	if cfg.Client == nil {
		cfg.Client = NewClient(cfg.AllowPrivate, cfg.Resolver)
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.JobWorkers <= 0 {
		cfg.JobWorkers = cfg.Workers
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
	return &Deliverer{cfg: cfg, m: newMetrics(cfg.Registerer), stopc: make(chan struct{}),
		drainc: make(chan struct{}), done: make(chan struct{})}
}

// Draining tells the deliverer that the pod is going away: it takes no
// new shards from now on (those it holds are kept until Stop), so that
// the ready pods take them.
func (d *Deliverer) Draining() {
	d.drainOnce.Do(func() { close(d.drainc) })
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
		d:          d,
		ctx:        ctx,
		work:       work,
		owned:      map[int]*shardState{},
		chains:     map[string]*chain{},
		held:       map[heldKey]string{},
		chanHeld:   map[string]int{},
		chanPosts:  map[string]int{},
		results:    make(chan result, d.cfg.Workers+d.cfg.JobWorkers),
		readDone:   make(chan readResult, 1),
		readCancel: func() {},
		claimDone:  make(chan claimResult, store.OutboxShards),
		wake:       make(chan string),
		poke:       make(chan struct{}, 1),
		quit:       make(chan struct{}),
	}
	l.run()
}
