package delivery

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/vivi/bridge/store"
)

// readSlack is how long past its block a read may take before it is
// abandoned; a new owner claims a shard again this long after the
// previous owner's last possible read (Renew + readSlack after acquiring).
const readSlack = 2 * time.Second

// loop is the state of Run, owned by its goroutine.
type loop struct {
	d         *Deliverer
	ctx, work context.Context

	owned     map[int]*shardState
	chains    map[string]*chain
	ready     []*chain           // chains whose head waits for a worker, in turn
	held      map[heldKey]string // entries in memory -> their channel
	chanHeld  map[string]int     // entries held per channel
	chanPosts map[string]int     // event posts in flight per channel
	posts     int                // event posts in flight
	jobs      int                // jobs in flight
	draining  bool

	reading    bool
	readShards []int // the shards of the read in flight
	readCancel context.CancelFunc

	results   chan result
	readDone  chan readResult
	claimDone chan claimResult
	wake      chan string   // a chain's retry time came
	poke      chan struct{} // a claim's time came
	quit      chan struct{} // closed when run returns (for timers)
	wg        sync.WaitGroup
}

// shardState is one shard this pod holds (or gives up).
type shardState struct {
	releasing bool      // beyond the fair share: released once nothing of it is in flight
	lost      bool      // the lease went to another pod, or could not be renewed in time
	inflight  int       // attempts in flight
	lastOK    time.Time // last successful acquisition or renewal of the lease
	// synced is false until the shard's pending list was read after the
	// previous owner's last possible read: no attempt starts before, as an
	// older entry of a call may still come.
	synced bool
	// claimAt is when the pending list is to be read (zero: not needed);
	// recheckAt the second claim after acquiring (zero: none left).
	claimAt, recheckAt time.Time
	claiming           bool
	skips              int             // entries left pending for a channel over its quota
	claimSkips         int             // skips when the claim in flight started
	overflow           map[string]bool // channels whose new entries are left pending until claimed
	doneDuringClaim    map[string]bool // entries finished while a claim was in flight
	claimSkipped       map[string]bool // channels left pending by the claim in flight
}

type heldKey struct {
	shard int
	id    string
}

// chain is the entries of one call (or of its jobs), in stream order,
// delivered head first.
type chain struct {
	key     string
	shard   int
	channel string
	job     bool
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
	resumed  bool // the delivery record of an earlier owner was looked up
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

type claimResult struct {
	shard   int
	entries []store.OutboxEntry
	err     error
	last    bool // the pending list ends with this page
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

// compareIDs orders stream IDs ("ms-seq").
func compareIDs(a, b string) int {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	an, _ := strconv.ParseUint(am, 10, 64)
	bn, _ := strconv.ParseUint(bm, 10, 64)
	if an != bn {
		if an < bn {
			return -1
		}
		return 1
	}
	asq, _ := strconv.ParseUint(as, 10, 64)
	bsq, _ := strconv.ParseUint(bs, 10, 64)
	switch {
	case asq < bsq:
		return -1
	case asq > bsq:
		return 1
	}
	return 0
}

func (l *loop) run() {
	defer close(l.quit)
	defer l.wg.Wait()
	log := l.d.cfg.Logger
	tick := time.NewTicker(l.d.cfg.Renew)
	defer tick.Stop()
	stopc := l.d.stopc
	l.manageShards()
	l.startClaims()
	l.startRead()
	for {
		select {
		case <-l.ctx.Done():
			l.stopTimers()
			return
		case <-stopc:
			stopc = nil
			l.draining = true
			l.stopTimers()
			// What the read took stays pending for this pod: the shards
			// are released once it returned, and their next owners claim.
			l.readCancel()
		case <-tick.C:
			if !l.draining {
				l.manageShards()
			}
		case <-l.poke:
		case r := <-l.readDone:
			l.readDone2(r, log)
		case r := <-l.claimDone:
			l.claimed(r)
		case r := <-l.results:
			l.finished(r)
		case key := <-l.wake:
			if c := l.chains[key]; c != nil && c.waiting {
				c.waiting, c.timer = false, nil
				l.enqueue(c)
			}
		}
		l.expireLeases()
		if l.draining && l.posts+l.jobs == 0 && !l.reading && !l.claimingAny() {
			l.releaseAll()
			return
		}
		l.reclaimOverflow()
		l.startClaims()
		l.pump()
		l.startRead()
		l.d.m.held.Set(float64(len(l.held)))
	}
}

// readDone2 takes the outcome of a read.
func (l *loop) readDone2(r readResult, log *zap.Logger) {
	shards := l.readShards
	l.reading, l.readShards = false, nil
	if r.err != nil {
		if l.ctx.Err() == nil && !l.draining {
			log.Warn("outbox read failed", zap.Error(r.err))
		}
		// The read may have run without its reply reaching us: its entries
		// are pending for this pod, unseen. Re-read the pending lists
		// before trusting the order again.
		now := l.d.cfg.Now()
		for _, s := range shards {
			if st := l.owned[s]; st != nil && st.active() {
				st.synced = false
				st.claimAt = now
			}
		}
	}
	l.add(r.entries, false)
	for _, s := range shards {
		l.settleShard(s)
	}
}

func (l *loop) claimingAny() bool {
	for _, st := range l.owned {
		if st.claiming {
			return true
		}
	}
	return false
}

func (st *shardState) active() bool { return !st.releasing && !st.lost }

// expireLeases treats as lost a shard whose lease was not renewed in time
// (the store failing): another pod may hold it by now.
func (l *loop) expireLeases() {
	cfg := l.d.cfg
	now := cfg.Now()
	for s, st := range l.owned {
		if !st.lost && now.After(st.lastOK.Add(cfg.LeaseTTL-cfg.LeaseTTL/5)) {
			cfg.Logger.Warn("outbox lease expired unrenewed", zap.Int("shard", s))
			st.lost = true
			l.dropShard(s)
		}
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
	l.reading, l.readShards = true, shards
	block := l.d.cfg.Renew
	ctx, cancel := context.WithTimeout(l.ctx, block+readSlack)
	l.readCancel = cancel
	l.wg.Go(func() {
		defer cancel()
		es, err := l.d.cfg.Outbox.ReadOutbox(ctx, l.d.cfg.Consumer, shards, readCount, block)
		l.readDone <- readResult{es, err}
	})
}

func (l *loop) readable() []int {
	var out []int
	for s := range store.OutboxShards {
		if st := l.owned[s]; st != nil && st.active() {
			out = append(out, s)
		}
	}
	return out
}

func (l *loop) quota() int { return max(1, l.d.cfg.MaxHeld/8) }

// add puts entries read or claimed on their chains (once each, in stream
// order). Entries of a shard given up stay pending for this pod: the
// shard is released only after this read, and its next owner claims them.
// A channel over its quota has its entries left pending, claimed again
// once it drained (fromClaim: they come from such a claim).
func (l *loop) add(es []store.OutboxEntry, fromClaim bool) {
	for _, e := range es {
		st := l.owned[e.Shard]
		hk := heldKey{e.Shard, e.ID}
		if st == nil || !st.active() {
			continue
		}
		if _, ok := l.held[hk]; ok {
			continue
		}
		if fromClaim && st.doneDuringClaim[e.ID] {
			continue
		}
		// Once one of a channel's entries is left pending, its later ones
		// are too (until claimed again in order).
		if (!fromClaim && st.overflow[e.ChannelID]) || (fromClaim && st.claimSkipped[e.ChannelID]) ||
			l.chanHeld[e.ChannelID] >= l.quota() || (fromClaim && len(l.held) >= l.d.cfg.MaxHeld) {
			if st.overflow == nil {
				st.overflow = map[string]bool{}
			}
			st.overflow[e.ChannelID] = true
			if fromClaim {
				st.claimSkipped[e.ChannelID] = true
			}
			st.skips++
			continue
		}
		l.held[hk] = e.ChannelID
		l.chanHeld[e.ChannelID]++
		key := chainKey(e)
		c := l.chains[key]
		if c == nil {
			c = &chain{key: key, shard: e.Shard, channel: e.ChannelID, job: e.Kind == store.OutboxJob}
			l.chains[key] = c
		}
		it := &item{e: e}
		pos, _ := slices.BinarySearchFunc(c.queue, e.ID, func(x *item, id string) int { return compareIDs(x.e.ID, id) })
		if pos == 0 && (c.running || c.waiting) && len(c.queue) > 0 {
			pos = 1 // the head's attempt is under way: the newcomer goes next
		}
		c.queue = slices.Insert(c.queue, pos, it)
		if len(c.queue) == 1 && !c.running && !c.waiting {
			l.enqueue(c)
		}
	}
}

// unhold forgets one entry of shard held in memory.
func (l *loop) unhold(shard int, id string) {
	hk := heldKey{shard, id}
	ch, ok := l.held[hk]
	if !ok {
		return
	}
	delete(l.held, hk)
	l.chanHeld[ch]--
	if l.chanHeld[ch] <= 0 {
		delete(l.chanHeld, ch)
	}
	if st := l.owned[shard]; st != nil && st.claiming {
		st.doneDuringClaim[id] = true
	}
}

func (l *loop) enqueue(c *chain) {
	if !c.queued && !l.draining {
		c.queued = true
		l.ready = append(l.ready, c)
	}
}

// pump starts the heads of ready chains while workers are free: event
// posts and jobs have their own workers, a channel at most half the post
// workers, and a shard whose pending list is not known yet waits.
func (l *loop) pump() {
	if l.draining {
		return
	}
	cfg := l.d.cfg
	perChannel := max(1, cfg.Workers/2)
	keep := l.ready[:0]
	for _, c := range l.ready {
		if c.drop || len(c.queue) == 0 {
			c.queued = false
			continue
		}
		st := l.owned[c.shard]
		switch {
		case st == nil || !st.synced,
			c.job && l.jobs >= cfg.JobWorkers,
			!c.job && (l.posts >= cfg.Workers || l.chanPosts[c.channel] >= perChannel):
			keep = append(keep, c)
			continue
		}
		c.queued = false
		c.running = true
		if c.job {
			l.jobs++
		} else {
			l.posts++
			l.chanPosts[c.channel]++
		}
		st.inflight++
		it := c.queue[0]
		l.wg.Go(func() { l.results <- result{c: c, retry: l.d.attempt(l.work, it)} })
	}
	clear(l.ready[len(keep):])
	l.ready = keep
}

// finished takes the outcome of a chain head's attempt.
func (l *loop) finished(r result) {
	c := r.c
	c.running = false
	if c.job {
		l.jobs--
	} else {
		l.posts--
		if l.chanPosts[c.channel]--; l.chanPosts[c.channel] <= 0 {
			delete(l.chanPosts, c.channel)
		}
	}
	st := l.owned[c.shard]
	st.inflight--
	if r.retry == 0 {
		l.unhold(c.shard, c.queue[0].e.ID)
		c.queue = c.queue[1:]
	}
	switch {
	case c.drop || l.draining || !st.active():
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
		l.unhold(c.shard, it.e.ID)
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

// settleShard releases a shard given up once nothing of it is in flight:
// no attempt, no claim, and no read covering it (a read still running
// would take entries the next owner already claimed past).
func (l *loop) settleShard(shard int) {
	st := l.owned[shard]
	if st == nil || st.inflight > 0 || st.claiming || st.active() || slices.Contains(l.readShards, shard) {
		return
	}
	delete(l.owned, shard)
	if st.releasing && !st.lost {
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
