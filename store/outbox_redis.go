package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// outboxGroup is the consumer group of every outbox stream.
const outboxGroup = "vivi"

// parkedMax bounds the parked stream (MAXLEN ~).
const parkedMax = 100000

// claimPage is how many entries one XAUTOCLAIM or PEL read moves.
const claimPage = 500

func (k keys) outbox(n int) string      { return k.prefix + "{sess}:outbox:" + strconv.Itoa(n) }
func (k keys) outboxLease(n int) string { return k.prefix + "{sess}:outbox:lease:" + strconv.Itoa(n) }
func (k keys) parked() string           { return k.prefix + "{sess}:outbox:parked" }
func (k keys) delivery(sid string) string {
	return k.prefix + "{sess}:delivery:" + sid
}

// leaseLua takes the lease KEYS[1] for ARGV[1] (PX ARGV[2]) when it is
// free, or renews it when ARGV[1] holds it: 1 when ARGV[1] holds it after.
const leaseLua = `
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if cur then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`

// releaseLua deletes the lease KEYS[1] only if ARGV[1] holds it.
const releaseLua = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`

// entryValues are the stream fields of e (short names: the stream keeps
// every entry's field names).
func entryValues(e OutboxEntry) []any {
	return []any{"k", e.Kind, "e", e.EventID, "c", e.CallSID, "ch", e.ChannelID, "t", e.Type,
		"at", strconv.FormatInt(e.At.UnixMilli(), 10), "b", string(e.Body)}
}

// entryFrom decodes a stream message of shard.
func entryFrom(shard int, m redis.XMessage) OutboxEntry {
	str := func(k string) string { s, _ := m.Values[k].(string); return s }
	ms, _ := strconv.ParseInt(str("at"), 10, 64)
	return OutboxEntry{ID: m.ID, Shard: shard, Kind: str("k"), EventID: str("e"), CallSID: str("c"),
		ChannelID: str("ch"), Type: str("t"), At: time.UnixMilli(ms).UTC(), Body: []byte(str("b"))}
}

// normalize gives e its shard (that of its call, so a call's entries keep
// their order) and its time.
func (o Options) normalize(e OutboxEntry) OutboxEntry {
	if e.CallSID != "" {
		e.Shard = OutboxShard(e.CallSID)
	}
	if e.At.IsZero() {
		e.At = o.Now()
	}
	return e
}

func validShard(shard int) error {
	if shard < 0 || shard >= OutboxShards {
		return fmt.Errorf("shard %d out of range", shard)
	}
	return nil
}

// queueOutbox queues the XADD of entries (in a session write's MULTI).
func (r *Redis) queueOutbox(ctx context.Context, p redis.Pipeliner, entries []OutboxEntry) {
	for _, e := range entries {
		e = r.opts.normalize(e)
		p.XAdd(ctx, &redis.XAddArgs{Stream: r.k.outbox(e.Shard), Values: entryValues(e)})
	}
}

// AppendOutbox appends entries outside a session write.
func (r *Redis) AppendOutbox(ctx context.Context, entries ...OutboxEntry) error {
	if len(entries) == 0 {
		return nil
	}
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		r.queueOutbox(ctx, p, entries)
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: append outbox: %w", err)
	}
	return nil
}

// AcquireShard takes or renews the lease of shard for consumer.
func (r *Redis) AcquireShard(ctx context.Context, shard int, consumer string, ttl time.Duration) (bool, error) {
	if err := validShard(shard); err != nil || consumer == "" || ttl <= 0 {
		return false, fmt.Errorf("store: acquire shard: %v (consumer %q, ttl %v)", err, consumer, ttl)
	}
	n, err := r.leaseScript.Run(ctx, r.client, []string{r.k.outboxLease(shard)}, consumer, ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("store: acquire shard %d: %w", shard, err)
	}
	return n == 1, nil
}

// ReleaseShard gives the lease of shard up if consumer holds it.
func (r *Redis) ReleaseShard(ctx context.Context, shard int, consumer string) error {
	if err := validShard(shard); err != nil {
		return fmt.Errorf("store: release shard: %w", err)
	}
	if err := r.releaseScript.Run(ctx, r.client, []string{r.k.outboxLease(shard)}, consumer).Err(); err != nil {
		return fmt.Errorf("store: release shard %d: %w", shard, err)
	}
	return nil
}

// ensureGroup creates the consumer group of shard (and its stream) from id 0.
func (r *Redis) ensureGroup(ctx context.Context, shard int) error {
	if r.groups[shard].Load() {
		return nil
	}
	err := r.client.XGroupCreateMkStream(ctx, r.k.outbox(shard), outboxGroup, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return err
	}
	r.groups[shard].Store(true)
	return nil
}

// noGroup reports a stream or group that is gone (deleted key): the group
// is created again on the next call.
func (r *Redis) noGroup(err error, shards ...int) bool {
	if err == nil || !strings.HasPrefix(err.Error(), "NOGROUP") {
		return false
	}
	for _, s := range shards {
		r.groups[s].Store(false)
	}
	return true
}

// ClaimOutbox moves every pending entry of shard to consumer (XAUTOCLAIM)
// and returns consumer's whole pending list in stream order.
func (r *Redis) ClaimOutbox(ctx context.Context, shard int, consumer string) ([]OutboxEntry, error) {
	var out []OutboxEntry
	for after := ""; ; {
		page, err := r.ClaimOutboxPage(ctx, shard, consumer, after, claimPage)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if len(page) < claimPage {
			return out, nil
		}
		after = page[len(page)-1].ID
	}
}

// ClaimOutboxPage is one page of ClaimOutbox: with after "" it first
// moves every pending entry of shard to consumer; it returns up to limit
// of consumer's pending entries after the ID after, in stream order
// (fewer than limit: the list ends).
func (r *Redis) ClaimOutboxPage(ctx context.Context, shard int, consumer, after string, limit int) ([]OutboxEntry, error) {
	if err := validShard(shard); err != nil {
		return nil, fmt.Errorf("store: claim outbox: %w", err)
	}
	if limit <= 0 {
		limit = claimPage
	}
	out, err := r.claim(ctx, shard, consumer, after, limit)
	if r.noGroup(err, shard) {
		out, err = r.claim(ctx, shard, consumer, after, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("store: claim outbox %d: %w", shard, err)
	}
	return out, nil
}

func (r *Redis) claim(ctx context.Context, shard int, consumer, after string, limit int) ([]OutboxEntry, error) {
	if err := r.ensureGroup(ctx, shard); err != nil {
		return nil, err
	}
	key := r.k.outbox(shard)
	for start := "0-0"; after == ""; {
		_, next, err := r.client.XAutoClaimJustID(ctx, &redis.XAutoClaimArgs{
			Stream: key, Group: outboxGroup, Consumer: consumer, Start: start, Count: claimPage,
		}).Result()
		if err != nil {
			return nil, err
		}
		if next == "0-0" || next == "" {
			break
		}
		start = next
	}
	// The consumer's pending list, in order: deleted entries come back
	// without fields and are acknowledged away.
	var out []OutboxEntry
	from := after
	if from == "" {
		from = "0"
	}
	for len(out) < limit {
		res, err := r.client.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: outboxGroup, Consumer: consumer, Streams: []string{key, from}, Count: int64(limit - len(out)), Block: -1,
		}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		if len(res) == 0 || len(res[0].Messages) == 0 {
			return out, nil
		}
		var gone []string
		for _, m := range res[0].Messages {
			if len(m.Values) == 0 {
				gone = append(gone, m.ID)
				continue
			}
			out = append(out, entryFrom(shard, m))
		}
		if len(gone) > 0 {
			if err := r.client.XAck(ctx, key, outboxGroup, gone...).Err(); err != nil {
				return nil, err
			}
		}
		from = res[0].Messages[len(res[0].Messages)-1].ID
	}
	return out, nil
}

// ReadOutbox returns up to count new entries (per shard) of shards for
// consumer, waiting up to block for one.
func (r *Redis) ReadOutbox(ctx context.Context, consumer string, shards []int, count int, block time.Duration) ([]OutboxEntry, error) {
	if len(shards) == 0 {
		return nil, nil
	}
	out, err := r.read(ctx, consumer, shards, count, block)
	if r.noGroup(err, shards...) {
		out, err = r.read(ctx, consumer, shards, count, block)
	}
	if err != nil {
		return nil, fmt.Errorf("store: read outbox: %w", err)
	}
	return out, nil
}

func (r *Redis) read(ctx context.Context, consumer string, shards []int, count int, block time.Duration) ([]OutboxEntry, error) {
	streams := make([]string, 0, 2*len(shards))
	byKey := make(map[string]int, len(shards))
	for _, s := range shards {
		if err := validShard(s); err != nil {
			return nil, err
		}
		if err := r.ensureGroup(ctx, s); err != nil {
			return nil, err
		}
		streams = append(streams, r.k.outbox(s))
		byKey[r.k.outbox(s)] = s
	}
	for range shards {
		streams = append(streams, ">")
	}
	if block <= 0 {
		block = -1 // no BLOCK (BLOCK 0 waits forever)
	}
	res, err := r.client.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: outboxGroup, Consumer: consumer, Streams: streams, Count: int64(count), Block: block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []OutboxEntry
	for _, st := range res {
		for _, m := range st.Messages {
			out = append(out, entryFrom(byKey[st.Stream], m))
		}
	}
	return out, nil
}

// AckOutbox acknowledges and deletes entries of shard.
func (r *Redis) AckOutbox(ctx context.Context, shard int, ids ...string) error {
	if err := validShard(shard); err != nil {
		return fmt.Errorf("store: ack outbox: %w", err)
	}
	if len(ids) == 0 {
		return nil
	}
	key := r.k.outbox(shard)
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.XAck(ctx, key, outboxGroup, ids...)
		p.XDel(ctx, key, ids...)
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: ack outbox %d: %w", shard, err)
	}
	return nil
}

// ParkOutbox moves e from its shard to the parked stream.
func (r *Redis) ParkOutbox(ctx context.Context, e OutboxEntry, reason string) error {
	if err := validShard(e.Shard); err != nil {
		return fmt.Errorf("store: park outbox: %w", err)
	}
	vals := append(entryValues(e), "s", strconv.Itoa(e.Shard), "r", reason,
		"pt", strconv.FormatInt(r.opts.Now().UnixMilli(), 10))
	key := r.k.outbox(e.Shard)
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.XAdd(ctx, &redis.XAddArgs{Stream: r.k.parked(), MaxLen: parkedMax, Approx: true, Values: vals})
		if e.ID != "" {
			p.XAck(ctx, key, outboxGroup, e.ID)
			p.XDel(ctx, key, e.ID)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: park outbox %s: %w", e.EventID, err)
	}
	return nil
}

func parkedFrom(m redis.XMessage) ParkedEntry {
	str := func(k string) string { s, _ := m.Values[k].(string); return s }
	shard, _ := strconv.Atoi(str("s"))
	e := entryFrom(shard, m)
	pt, _ := strconv.ParseInt(str("pt"), 10, 64)
	return ParkedEntry{ID: m.ID, Entry: e, Reason: str("r"), ParkedAt: time.UnixMilli(pt).UTC()}
}

// Parked lists parked entries, newest first, at most limit (<= 0: 100).
func (r *Redis) Parked(ctx context.Context, limit int) ([]ParkedEntry, error) {
	if limit <= 0 {
		limit = 100
	}
	ms, err := r.client.XRevRangeN(ctx, r.k.parked(), "+", "-", int64(limit)).Result()
	if err != nil {
		return nil, fmt.Errorf("store: parked: %w", err)
	}
	out := make([]ParkedEntry, 0, len(ms))
	for _, m := range ms {
		out = append(out, parkedFrom(m))
	}
	return out, nil
}

// RedeliverParked appends the parked entry id to its shard again (same
// EventID) and removes it from the parked list, in one transaction.
func (r *Redis) RedeliverParked(ctx context.Context, id string) (OutboxEntry, error) {
	var out OutboxEntry
	key := r.k.parked()
	err := r.watch(ctx, func(tx *redis.Tx) error {
		ms, err := tx.XRange(ctx, key, id, id).Result()
		if err != nil {
			return err
		}
		if len(ms) == 0 {
			return ErrNotFound
		}
		out = parkedFrom(ms[0]).Entry
		out.At = time.Time{} // a fresh retry horizon: from now (same EventID)
		out = r.opts.normalize(out)
		out.ID = ""
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.XAdd(ctx, &redis.XAddArgs{Stream: r.k.outbox(out.Shard), Values: entryValues(out)})
			p.XDel(ctx, key, id)
			return nil
		})
		return err
	}, key)
	if err != nil {
		return OutboxEntry{}, fmt.Errorf("store: redeliver parked %s: %w", id, err)
	}
	return out, nil
}

// SetDelivery records the delivery state of one event of a call; the
// states expire with the session retention.
func (r *Redis) SetDelivery(ctx context.Context, callSID string, d Delivery) error {
	data, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("store: set delivery %s: %w", d.EventID, err)
	}
	key := r.k.delivery(callSID)
	_, err = r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, d.EventID, data)
		p.PExpire(ctx, key, r.opts.Retention)
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: set delivery %s: %w", d.EventID, err)
	}
	return nil
}

// Deliveries returns the delivery states of a call's events, in order.
func (r *Redis) Deliveries(ctx context.Context, callSID string) ([]Delivery, error) {
	vals, err := r.client.HVals(ctx, r.k.delivery(callSID)).Result()
	if err != nil {
		return nil, fmt.Errorf("store: deliveries %s: %w", callSID, err)
	}
	out := make([]Delivery, 0, len(vals))
	for _, v := range vals {
		d, err := decode[Delivery]([]byte(v), "delivery of "+callSID)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	sortDeliveries(out)
	return out, nil
}

// sortDeliveries orders deliveries by creation, then by id (numerically
// for a call's events: evt_x_9 before evt_x_10).
func sortDeliveries(ds []Delivery) {
	slices.SortStableFunc(ds, func(a, b Delivery) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		if len(a.EventID) != len(b.EventID) {
			return len(a.EventID) - len(b.EventID)
		}
		return strings.Compare(a.EventID, b.EventID)
	})
}

// PruneConsumers deletes the consumers of shard's group other than keep
// that have nothing pending and were idle longer than idle (pods gone):
// the number deleted.
func (r *Redis) PruneConsumers(ctx context.Context, shard int, keep string, idle time.Duration) (int, error) {
	if err := validShard(shard); err != nil {
		return 0, fmt.Errorf("store: prune consumers: %w", err)
	}
	key := r.k.outbox(shard)
	cs, err := r.client.XInfoConsumers(ctx, key, outboxGroup).Result()
	if r.noGroup(err, shard) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: prune consumers %d: %w", shard, err)
	}
	n := 0
	for _, c := range cs {
		if c.Name == keep || c.Pending > 0 || c.Idle <= idle {
			continue
		}
		// DELCONSUMER drops a consumer's pending entries: only one with
		// none is deleted (it had none a moment ago, and a consumer gets
		// new entries only by reading, which a pod gone does not do).
		if err := r.client.XGroupDelConsumer(ctx, key, outboxGroup, c.Name).Err(); err != nil {
			return n, fmt.Errorf("store: prune consumers %d: %w", shard, err)
		}
		n++
	}
	return n, nil
}
