package store

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// memOutbox is Memory's outbox: per shard an ordered log with the
// consumer each delivered entry is pending for, leases on opts.Now, the
// parked list and the delivery states. Appends close notify, which wakes
// every blocked ReadOutbox (a broadcast without polling).
type memOutbox struct {
	mu     sync.Mutex
	seq    uint64
	shards [OutboxShards]memShard
	leases [OutboxShards]memLease
	parked []ParkedEntry // oldest first
	deliv  map[string]*memDeliveries
	notify chan struct{}
}

type memShard struct {
	log []memOutEntry // stream order; acknowledged entries are removed
}

type memOutEntry struct {
	e     OutboxEntry
	owner string // "" until read; then the consumer it is pending for
}

type memLease struct {
	consumer string
	expires  time.Time
}

type memDeliveries struct {
	byID    map[string]Delivery
	expires time.Time
}

func (o *memOutbox) initLocked() {
	if o.notify == nil {
		o.notify = make(chan struct{})
		o.deliv = make(map[string]*memDeliveries)
	}
}

// appendLocked appends normalized entries and wakes the readers.
func (m *Memory) appendOutboxLocked(entries []OutboxEntry) {
	o := &m.outbox
	o.initLocked()
	if len(entries) == 0 {
		return
	}
	for _, e := range entries {
		e = m.opts.normalize(e)
		o.seq++
		e.ID = strconv.FormatUint(o.seq, 10) + "-0"
		o.shards[e.Shard].log = append(o.shards[e.Shard].log, memOutEntry{e: e})
	}
	close(o.notify)
	o.notify = make(chan struct{})
}

// AppendOutbox appends entries outside a session write.
func (m *Memory) AppendOutbox(_ context.Context, entries ...OutboxEntry) error {
	for _, e := range entries {
		if err := validShard(m.opts.normalize(e).Shard); err != nil {
			return fmt.Errorf("store: append outbox: %w", err)
		}
	}
	m.outbox.mu.Lock()
	defer m.outbox.mu.Unlock()
	m.appendOutboxLocked(entries)
	return nil
}

// AcquireShard takes or renews the lease of shard for consumer.
func (m *Memory) AcquireShard(_ context.Context, shard int, consumer string, ttl time.Duration) (bool, error) {
	if err := validShard(shard); err != nil || consumer == "" || ttl <= 0 {
		return false, fmt.Errorf("store: acquire shard: %v (consumer %q, ttl %v)", err, consumer, ttl)
	}
	o := &m.outbox
	o.mu.Lock()
	defer o.mu.Unlock()
	now := m.opts.Now()
	l := &o.leases[shard]
	if l.consumer != "" && l.consumer != consumer && now.Before(l.expires) {
		return false, nil
	}
	*l = memLease{consumer: consumer, expires: now.Add(ttl)}
	return true, nil
}

// ReleaseShard gives the lease of shard up if consumer holds it.
func (m *Memory) ReleaseShard(_ context.Context, shard int, consumer string) error {
	if err := validShard(shard); err != nil {
		return fmt.Errorf("store: release shard: %w", err)
	}
	o := &m.outbox
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.leases[shard].consumer == consumer {
		o.leases[shard] = memLease{}
	}
	return nil
}

// ClaimOutbox moves every pending entry of shard to consumer and returns
// consumer's pending entries in stream order.
func (m *Memory) ClaimOutbox(ctx context.Context, shard int, consumer string) ([]OutboxEntry, error) {
	return m.ClaimOutboxPage(ctx, shard, consumer, "", 0)
}

// ClaimOutboxPage is one page of ClaimOutbox: with after "" it first
// moves every pending entry of shard to consumer; it returns up to limit
// (<= 0: all) of consumer's pending entries after the ID after.
func (m *Memory) ClaimOutboxPage(_ context.Context, shard int, consumer, after string, limit int) ([]OutboxEntry, error) {
	if err := validShard(shard); err != nil {
		return nil, fmt.Errorf("store: claim outbox: %w", err)
	}
	o := &m.outbox
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []OutboxEntry
	log := o.shards[shard].log
	for i := range log {
		if log[i].owner != "" && after == "" {
			log[i].owner = consumer
		}
		if log[i].owner != consumer || (after != "" && memSeq(log[i].e.ID) <= memSeq(after)) {
			continue
		}
		if limit > 0 && len(out) >= limit {
			break
		}
		out = append(out, log[i].e)
	}
	return out, nil
}

// memSeq is the sequence number of a Memory stream ID ("n-0").
func memSeq(id string) uint64 {
	n, _ := strconv.ParseUint(strings.TrimSuffix(id, "-0"), 10, 64)
	return n
}

// ReadOutbox returns up to count new entries per shard of shards for
// consumer, waiting up to block (or until ctx ends) for one.
func (m *Memory) ReadOutbox(ctx context.Context, consumer string, shards []int, count int, block time.Duration) ([]OutboxEntry, error) {
	for _, s := range shards {
		if err := validShard(s); err != nil {
			return nil, fmt.Errorf("store: read outbox: %w", err)
		}
	}
	if len(shards) == 0 {
		return nil, nil
	}
	var timeout <-chan time.Time
	if block > 0 {
		t := time.NewTimer(block)
		defer t.Stop()
		timeout = t.C
	}
	o := &m.outbox
	for {
		o.mu.Lock()
		o.initLocked()
		var out []OutboxEntry
		for _, s := range shards {
			n := 0
			log := o.shards[s].log
			for i := range log {
				if count > 0 && n >= count {
					break
				}
				if log[i].owner == "" {
					log[i].owner = consumer
					out = append(out, log[i].e)
					n++
				}
			}
		}
		wake := o.notify
		o.mu.Unlock()
		if len(out) > 0 || timeout == nil {
			return out, nil
		}
		select {
		case <-wake:
		case <-timeout:
			return nil, nil
		case <-ctx.Done():
			return nil, fmt.Errorf("store: read outbox: %w", ctx.Err())
		}
	}
}

// AckOutbox acknowledges and removes entries of shard.
func (m *Memory) AckOutbox(_ context.Context, shard int, ids ...string) error {
	if err := validShard(shard); err != nil {
		return fmt.Errorf("store: ack outbox: %w", err)
	}
	o := &m.outbox
	o.mu.Lock()
	defer o.mu.Unlock()
	o.removeLocked(shard, ids...)
	return nil
}

func (o *memOutbox) removeLocked(shard int, ids ...string) {
	o.shards[shard].log = slices.DeleteFunc(o.shards[shard].log, func(x memOutEntry) bool {
		return slices.Contains(ids, x.e.ID)
	})
}

// ParkOutbox moves e from its shard to the parked list.
func (m *Memory) ParkOutbox(_ context.Context, e OutboxEntry, reason string) error {
	if err := validShard(e.Shard); err != nil {
		return fmt.Errorf("store: park outbox: %w", err)
	}
	o := &m.outbox
	o.mu.Lock()
	defer o.mu.Unlock()
	if e.ID != "" {
		o.removeLocked(e.Shard, e.ID)
	}
	o.seq++
	o.parked = append(o.parked, ParkedEntry{ID: strconv.FormatUint(o.seq, 10) + "-0", Entry: e,
		Reason: reason, ParkedAt: m.opts.Now().UTC()})
	if len(o.parked) > parkedMax {
		o.parked = slices.Delete(o.parked, 0, len(o.parked)-parkedMax)
	}
	return nil
}

// Parked lists parked entries, newest first, at most limit (<= 0: 100).
func (m *Memory) Parked(_ context.Context, limit int) ([]ParkedEntry, error) {
	if limit <= 0 {
		limit = 100
	}
	o := &m.outbox
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]ParkedEntry, 0, min(limit, len(o.parked)))
	for i := len(o.parked) - 1; i >= 0 && len(out) < limit; i-- {
		out = append(out, o.parked[i])
	}
	return out, nil
}

// RedeliverParked appends the parked entry id to its shard again and
// removes it from the parked list.
func (m *Memory) RedeliverParked(_ context.Context, id string) (OutboxEntry, error) {
	o := &m.outbox
	o.mu.Lock()
	defer o.mu.Unlock()
	i := slices.IndexFunc(o.parked, func(p ParkedEntry) bool { return p.ID == id })
	if i < 0 {
		return OutboxEntry{}, fmt.Errorf("store: redeliver parked %s: %w", id, ErrNotFound)
	}
	e := o.parked[i].Entry
	e.At = time.Time{} // a fresh retry horizon: from now (same EventID)
	o.parked = slices.Delete(o.parked, i, i+1)
	m.appendOutboxLocked([]OutboxEntry{e})
	log := o.shards[m.opts.normalize(e).Shard].log
	return log[len(log)-1].e, nil
}

// SetDelivery records the delivery state of one event of a call.
func (m *Memory) SetDelivery(_ context.Context, callSID string, d Delivery) error {
	o := &m.outbox
	o.mu.Lock()
	defer o.mu.Unlock()
	o.initLocked()
	now := m.opts.Now()
	ds, ok := o.deliv[callSID]
	if !ok || !now.Before(ds.expires) {
		ds = &memDeliveries{byID: make(map[string]Delivery)}
		o.deliv[callSID] = ds
	}
	ds.byID[d.EventID] = d
	ds.expires = now.Add(m.opts.Retention)
	return nil
}

// Deliveries returns the delivery states of a call's events, in order.
func (m *Memory) Deliveries(_ context.Context, callSID string) ([]Delivery, error) {
	o := &m.outbox
	o.mu.Lock()
	defer o.mu.Unlock()
	out := []Delivery{}
	ds, ok := o.deliv[callSID]
	if !ok || !m.opts.Now().Before(ds.expires) {
		delete(o.deliv, callSID)
		return out, nil
	}
	for _, d := range ds.byID {
		out = append(out, d)
	}
	sortDeliveries(out)
	return out, nil
}
