package delivery

import (
	"context"
	"hash/fnv"
	"time"

	"go.uber.org/zap"

	"github.com/vivi/bridge/store"
)

// claimTimeout bounds one claim of a shard's pending list.
const claimTimeout = 10 * time.Second

// manageShards renews the leases held, takes free shards up to the fair
// share (none once draining) and gives up those beyond it.
func (l *loop) manageShards() {
	cfg := l.d.cfg
	log := cfg.Logger
	ctx, cancel := context.WithTimeout(l.ctx, cfg.Renew)
	defer cancel()
	// A shard being released is renewed too until it is: its next owner
	// must not take it while a read covering it is still running.
	for s, st := range l.owned {
		if st.lost {
			continue
		}
		ok, err := cfg.Outbox.AcquireShard(ctx, s, cfg.Consumer, cfg.LeaseTTL)
		if err != nil {
			log.Warn("outbox lease not renewed", zap.Int("shard", s), zap.Error(err))
			continue // lost once lastOK is too old (expireLeases)
		}
		if !ok {
			log.Warn("outbox lease lost", zap.Int("shard", s))
			st.lost = true
			l.dropShard(s)
			continue
		}
		st.lastOK = cfg.Now()
	}
	l.expireLeases()
	share, known := store.OutboxShards, true
	if cfg.Peers != nil {
		n, err := cfg.Peers(ctx)
		if err != nil {
			log.Warn("outbox: ready pods unknown", zap.Error(err))
			known = false
		} else {
			peers := max(n, 0) + 1 // this pod counts itself while it runs
			share = (store.OutboxShards + peers - 1) / peers
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
	select {
	case <-l.d.drainc:
		return // going away: the ready pods take the rest
	default:
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
		// The previous owner's last read may still be running: claim now
		// and once more after it must have ended, before trusting order.
		now := cfg.Now()
		l.owned[s] = &shardState{lastOK: now, claimAt: now, recheckAt: now.Add(cfg.Renew + readSlack)}
		active = append(active, s)
	}
}

// claimPageMax bounds one page of a claim.
const claimPageMax = 500

// startClaims starts the claims of pending lists whose time came.
func (l *loop) startClaims() {
	if l.draining {
		return
	}
	now := l.d.cfg.Now()
	for s, st := range l.owned {
		if st.claiming || st.claimAt.IsZero() || !st.active() || now.Before(st.claimAt) {
			continue
		}
		st.claiming, st.claimAt = true, time.Time{}
		st.claimSkips, st.doneDuringClaim, st.claimSkipped = st.skips, map[string]bool{}, map[string]bool{}
		l.claimPage(s, "")
	}
}

// claimPage reads one page of shard's pending list after the ID after,
// off the loop goroutine (a claim may be long) with its own deadline; the
// page is no larger than the room left in memory.
func (l *loop) claimPage(shard int, after string) {
	limit := max(1, min(claimPageMax, l.d.cfg.MaxHeld-len(l.held)))
	l.wg.Go(func() {
		ctx, cancel := context.WithTimeout(l.ctx, claimTimeout)
		defer cancel()
		es, err := l.d.cfg.Outbox.ClaimOutboxPage(ctx, shard, l.d.cfg.Consumer, after, limit)
		l.claimDone <- claimResult{shard: shard, entries: es, err: err, last: len(es) < limit}
	})
}

// claimed merges a page of a claimed pending list by ID into the chains,
// and asks for the next page, if any.
func (l *loop) claimed(r claimResult) {
	cfg := l.d.cfg
	st := l.owned[r.shard]
	if st == nil {
		return
	}
	if !st.active() {
		st.claiming = false
		st.doneDuringClaim = nil
		l.settleShard(r.shard) // left pending for the next owner, who claims it
		return
	}
	now := cfg.Now()
	if r.err != nil {
		st.claiming, st.doneDuringClaim = false, nil
		if l.ctx.Err() == nil {
			cfg.Logger.Warn("outbox claim failed", zap.Int("shard", r.shard), zap.Error(r.err))
		}
		l.pokeAt(r.shard, now.Add(storeRetry))
		return
	}
	l.add(r.entries, true)
	if !r.last && !l.draining {
		l.claimPage(r.shard, r.entries[len(r.entries)-1].ID)
		return
	}
	st.claiming, st.doneDuringClaim = false, nil
	if st.skips == st.claimSkips {
		st.overflow = nil // every entry left pending is in this claim
	}
	switch {
	case l.draining:
	case !st.recheckAt.IsZero():
		at := st.recheckAt
		st.recheckAt = time.Time{}
		l.pokeAt(r.shard, at)
	case st.claimAt.IsZero():
		st.synced = true
	}
	l.settleShard(r.shard)
	l.pruneConsumers(r.shard)
}

// reclaimOverflow claims again the pending lists of shards holding
// entries left pending for a channel over its quota, once the channel
// drained to half its quota and memory has room.
func (l *loop) reclaimOverflow() {
	if l.draining || len(l.held) >= l.d.cfg.MaxHeld {
		return
	}
	now := l.d.cfg.Now()
	for _, st := range l.owned {
		if st.claiming || !st.claimAt.IsZero() || !st.active() {
			continue
		}
		for ch := range st.overflow {
			if l.chanHeld[ch] <= l.quota()/2 {
				st.claimAt = now
				break
			}
		}
	}
}

// pokeAt schedules a claim of shard at at and wakes the loop then.
func (l *loop) pokeAt(shard int, at time.Time) {
	st := l.owned[shard]
	st.claimAt = at
	d := at.Sub(l.d.cfg.Now())
	if d <= 0 {
		return // the loop starts it after this event
	}
	time.AfterFunc(d, func() {
		select {
		case l.poke <- struct{}{}:
		default:
		}
	})
}

// consumerPruner is implemented by stores that keep consumers (Redis).
type consumerPruner interface {
	PruneConsumers(ctx context.Context, shard int, keep string, idle time.Duration) (int, error)
}

// pruneConsumers deletes, off the loop, the shard's consumers with nothing
// pending idle longer than a lease (pods gone), so they do not pile up.
func (l *loop) pruneConsumers(shard int) {
	p, ok := l.d.cfg.Outbox.(consumerPruner)
	if !ok {
		return
	}
	l.wg.Go(func() {
		ctx, cancel := context.WithTimeout(l.ctx, claimTimeout)
		defer cancel()
		if _, err := p.PruneConsumers(ctx, shard, l.d.cfg.Consumer, l.d.cfg.LeaseTTL); err != nil && ctx.Err() == nil {
			l.d.cfg.Logger.Warn("outbox consumers not pruned", zap.Int("shard", shard), zap.Error(err))
		}
	})
}
