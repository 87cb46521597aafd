package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/vivi/bridge/channel"
)

// Redis is the store shared by every pod, on a go-redis UniversalClient (a
// single node, Cluster or Sentinel). The key layout is in the package doc.
//
// Atomicity: read-modify-write operations run as WATCH + MULTI/EXEC with a
// bounded retry loop (maxTxAttempts). The rules (routing conflicts, in-use
// agents, session state) then live in Go, shared with Memory, instead of
// being written a second time in Lua; writes of configuration are rare and
// each session has one writer most of the time, so retries are rare too.
// Config writers all WATCH one version key and INCR it, which serializes them
// without watching every index key. Lua is used only for two read paths
// where one round trip and a consistent snapshot matter: the routing lookup
// and the pruning of stale session index entries.
type Redis struct {
	client redis.UniversalClient
	opts   Options
	k      keys

	routeScript *redis.Script
	pruneScript *redis.Script

	leaseScript, releaseScript *redis.Script
	// groups[n] is set once the consumer group of outbox shard n exists.
	groups [OutboxShards]atomic.Bool

	// noReplicaUntil (Unix ns) pauses waitReplicas after a WAIT timed out.
	noReplicaUntil atomic.Int64
}

// NewRedis returns a store on client; client's lifetime stays the caller's.
func NewRedis(client redis.UniversalClient, opts Options) *Redis {
	opts = opts.withDefaults()
	return &Redis{
		client:      client,
		opts:        opts,
		k:           keys{opts.Prefix},
		routeScript: redis.NewScript(routeLua),
		pruneScript: redis.NewScript(pruneLua),

		leaseScript:   redis.NewScript(leaseLua),
		releaseScript: redis.NewScript(releaseLua),
	}
}

// keys names every Redis key (see the package doc). Config keys share the
// hash tag {cfg} and session keys {sess}, so the transactions over each group
// work on Cluster.
type keys struct{ prefix string }

func (k keys) cfgVersion() string        { return k.prefix + "{cfg}:version" }
func (k keys) agents() string            { return k.prefix + "{cfg}:agents" }
func (k keys) channels() string          { return k.prefix + "{cfg}:channels" }
func (k keys) routes() string            { return k.prefix + "{cfg}:routes" }
func (k keys) ip(ip string) string       { return k.prefix + "{cfg}:ip:" + ip }
func (k keys) session(sid string) string { return k.prefix + "{sess}:call:" + sid }
func (k keys) activeIndex() string       { return k.prefix + "{sess}:active" }
func (k keys) endedIndex() string        { return k.prefix + "{sess}:ended" }
func (k keys) token(id string) string    { return k.prefix + "token:" + id }
func (k keys) topic(t string) string     { return k.prefix + "topic:" + t }

// routeLua resolves (ip, ext) in one round trip: the channel JSON, or 1 when
// the IP is known but not the extension, or 0 when the IP is unknown.
// KEYS: routes, channels, ip set. ARGV: route field.
const routeLua = `
local id = redis.call('HGET', KEYS[1], ARGV[1])
if id then
  local c = redis.call('HGET', KEYS[2], id)
  if c then return c end
  return 1
end
return redis.call('EXISTS', KEYS[3])
`

// Ping reports whether Redis answers.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	return nil
}

// watch runs fn in a WATCH on keys until its MULTI/EXEC commits, at most
// maxTxAttempts times with a short jittered pause between attempts. Errors of
// fn are returned unchanged.
func (r *Redis) watch(ctx context.Context, fn func(*redis.Tx) error, keys ...string) error {
	for attempt := range maxTxAttempts {
		err := r.client.Watch(ctx, fn, keys...)
		if !errors.Is(err, redis.TxFailedErr) {
			return err
		}
		pause := time.NewTimer(rand.N(time.Duration(attempt+1) * time.Millisecond))
		select {
		case <-ctx.Done():
			pause.Stop()
			return ctx.Err()
		case <-pause.C:
		}
	}
	return errContention
}

// SaveAgent creates or replaces the agent with a.ID.
func (r *Redis) SaveAgent(ctx context.Context, a channel.Agent) error {
	enc, err := encodeAgents([]channel.Agent{a})
	if err != nil {
		return fmt.Errorf("store: save agent: %w", err)
	}
	_, err = r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, r.k.agents(), a.ID, enc[a.ID])
		p.Incr(ctx, r.k.cfgVersion())
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: save agent %s: %w", a.ID, err)
	}
	return nil
}

// Agent returns the agent with id, or an error wrapping channel.ErrNotFound.
func (r *Redis) Agent(ctx context.Context, id string) (channel.Agent, error) {
	data, err := r.client.HGet(ctx, r.k.agents(), id).Bytes()
	if errors.Is(err, redis.Nil) {
		err = channel.ErrNotFound
	}
	if err != nil {
		return channel.Agent{}, fmt.Errorf("store: agent %s: %w", id, err)
	}
	return decode[channel.Agent](data, "agent "+id)
}

// Agents returns every agent, sorted by ID.
func (r *Redis) Agents(ctx context.Context) ([]channel.Agent, error) {
	vals, err := r.client.HVals(ctx, r.k.agents()).Result()
	if err != nil {
		return nil, fmt.Errorf("store: agents: %w", err)
	}
	return decodeSorted(vals, "agents", func(a channel.Agent) string { return a.ID })
}

// DeleteAgent deletes the agent with id unless a channel uses it (*InUseError).
func (r *Redis) DeleteAgent(ctx context.Context, id string) error {
	err := r.watch(ctx, func(tx *redis.Tx) error {
		ok, err := tx.HExists(ctx, r.k.agents(), id).Result()
		if err != nil {
			return err
		}
		if !ok {
			return channel.ErrNotFound
		}
		vals, err := tx.HVals(ctx, r.k.channels()).Result()
		if err != nil {
			return err
		}
		chans, err := decodeSorted(vals, "channels", func(c channel.Channel) string { return c.ID })
		if err != nil {
			return err
		}
		if err := inUse(id, chans); err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HDel(ctx, r.k.agents(), id)
			p.Incr(ctx, r.k.cfgVersion())
			return nil
		})
		return err
	}, r.k.cfgVersion())
	if err != nil {
		return fmt.Errorf("store: delete agent %s: %w", id, err)
	}
	return nil
}

// SaveChannel creates or replaces c together with its routing index entries.
// A pair owned by another channel fails with a *ConflictError and changes nothing.
func (r *Redis) SaveChannel(ctx context.Context, c channel.Channel) error {
	b, err := newBatch([]channel.Channel{c}, nil)
	if err != nil {
		return fmt.Errorf("store: save channel: %w", err)
	}
	err = r.watch(ctx, func(tx *redis.Tx) error { return r.applyTx(ctx, tx, b, nil) }, r.k.cfgVersion())
	if err != nil {
		return fmt.Errorf("store: save channel %s: %w", c.ID, err)
	}
	return nil
}

// SaveChannelIf saves c if the stored channel c.ID is prev (nil: none),
// checked inside the same WATCH/MULTI as the write; see
// channel.Repository.
func (r *Redis) SaveChannelIf(ctx context.Context, c channel.Channel, prev *channel.Channel) error {
	b, err := newBatch([]channel.Channel{c}, nil)
	if err != nil {
		return fmt.Errorf("store: save channel: %w", err)
	}
	b.expect = map[string]*channel.Channel{c.ID: prev}
	err = r.watch(ctx, func(tx *redis.Tx) error { return r.applyTx(ctx, tx, b, nil) }, r.k.cfgVersion())
	if err != nil {
		return fmt.Errorf("store: save channel %s: %w", c.ID, err)
	}
	return nil
}

// SaveAgentIf saves a if the stored agent a.ID is prev (nil: none), checked
// inside the same WATCH/MULTI as the write; see channel.Repository.
func (r *Redis) SaveAgentIf(ctx context.Context, a channel.Agent, prev *channel.Agent) error {
	enc, err := encodeAgents([]channel.Agent{a})
	if err != nil {
		return fmt.Errorf("store: save agent: %w", err)
	}
	err = r.watch(ctx, func(tx *redis.Tx) error {
		data, err := tx.HGet(ctx, r.k.agents(), a.ID).Bytes()
		switch {
		case errors.Is(err, redis.Nil):
			data = nil
		case err != nil:
			return err
		}
		if err := checkAgent(a.ID, data, prev); err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, r.k.agents(), a.ID, enc[a.ID])
			p.Incr(ctx, r.k.cfgVersion())
			return nil
		})
		return err
	}, r.k.cfgVersion())
	if err != nil {
		return fmt.Errorf("store: save agent %s: %w", a.ID, err)
	}
	return nil
}

// Channel returns the channel with id, or an error wrapping channel.ErrNotFound.
func (r *Redis) Channel(ctx context.Context, id string) (channel.Channel, error) {
	data, err := r.client.HGet(ctx, r.k.channels(), id).Bytes()
	if errors.Is(err, redis.Nil) {
		err = channel.ErrNotFound
	}
	if err != nil {
		return channel.Channel{}, fmt.Errorf("store: channel %s: %w", id, err)
	}
	return decode[channel.Channel](data, "channel "+id)
}

// Channels returns every channel, sorted by ID.
func (r *Redis) Channels(ctx context.Context) ([]channel.Channel, error) {
	vals, err := r.client.HVals(ctx, r.k.channels()).Result()
	if err != nil {
		return nil, fmt.Errorf("store: channels: %w", err)
	}
	return decodeSorted(vals, "channels", func(c channel.Channel) string { return c.ID })
}

// DeleteChannel deletes the channel with id and its routing index entries.
func (r *Redis) DeleteChannel(ctx context.Context, id string) error {
	b, _ := newBatch(nil, []string{id})
	err := r.watch(ctx, func(tx *redis.Tx) error {
		ok, err := tx.HExists(ctx, r.k.channels(), id).Result()
		if err != nil {
			return err
		}
		if !ok {
			return channel.ErrNotFound
		}
		return r.applyTx(ctx, tx, b, nil)
	}, r.k.cfgVersion())
	if err != nil {
		return fmt.Errorf("store: delete channel %s: %w", id, err)
	}
	return nil
}

// ChannelByOrigin returns the channel that routes calls from ip to ext, in
// one round trip. It returns channel.ErrUnknownSourceIP when no channel lists
// ip and channel.ErrUnknownExtension when none of those that do lists ext.
func (r *Redis) ChannelByOrigin(ctx context.Context, ip, ext string) (channel.Channel, error) {
	res, err := r.routeScript.Run(ctx, r.client,
		[]string{r.k.routes(), r.k.channels(), r.k.ip(ip)}, pair{ip, ext}.field()).Result()
	if err != nil {
		return channel.Channel{}, fmt.Errorf("store: route %s/%s: %w", ip, ext, err)
	}
	switch v := res.(type) {
	case string:
		return decode[channel.Channel]([]byte(v), "channel for "+ip+"/"+ext)
	case int64:
		if v == 0 {
			return channel.Channel{}, channel.ErrUnknownSourceIP
		}
		return channel.Channel{}, channel.ErrUnknownExtension
	}
	return channel.Channel{}, fmt.Errorf("store: route %s/%s: unexpected reply %T", ip, ext, res)
}

// Apply writes all agents and channels as one atomic change: on a conflict
// (between channels of the batch, or with a stored channel outside it)
// nothing is written. Channels of the batch replace their stored versions and
// may take pairs from one another; of two entries with one ID the last wins.
func (r *Redis) Apply(ctx context.Context, agents []channel.Agent, channels []channel.Channel) error {
	b, err := newBatch(channels, nil)
	if err != nil {
		return fmt.Errorf("store: apply: %w", err)
	}
	enc, err := encodeAgents(agents)
	if err != nil {
		return fmt.Errorf("store: apply: %w", err)
	}
	err = r.watch(ctx, func(tx *redis.Tx) error { return r.applyTx(ctx, tx, b, enc) }, r.k.cfgVersion())
	if err != nil {
		return fmt.Errorf("store: apply: %w", err)
	}
	return nil
}

// applyTx reads what b's plan needs, plans it and, without a conflict, writes
// it with agents (ID -> JSON) in one MULTI/EXEC. tx watches the version key.
func (r *Redis) applyTx(ctx context.Context, tx *redis.Tx, b channelBatch, agents map[string][]byte) error {
	ids, pairs := b.ids(), b.pairs()
	fields := make([]string, len(pairs))
	for i, p := range pairs {
		fields[i] = p.field()
	}
	var chanCmd, routeCmd *redis.SliceCmd
	_, err := tx.Pipelined(ctx, func(p redis.Pipeliner) error {
		if len(ids) > 0 {
			chanCmd = p.HMGet(ctx, r.k.channels(), ids...)
		}
		if len(fields) > 0 {
			routeCmd = p.HMGet(ctx, r.k.routes(), fields...)
		}
		return nil
	})
	if err != nil {
		return err
	}
	stored := make(map[string]channel.Channel)
	if chanCmd != nil {
		for i, v := range chanCmd.Val() {
			if s, ok := v.(string); ok {
				c, err := decode[channel.Channel]([]byte(s), "channel "+ids[i])
				if err != nil {
					return err
				}
				stored[ids[i]] = c
			}
		}
	}
	owners := make(map[pair]string)
	if routeCmd != nil {
		for i, v := range routeCmd.Val() {
			if s, ok := v.(string); ok {
				owners[pairs[i]] = s
			}
		}
	}
	change, err := b.plan(stored, owners)
	if err != nil {
		return err
	}
	put := make([]any, 0, 2*len(b.put))
	for _, c := range b.put {
		data, err := json.Marshal(c)
		if err != nil {
			return fmt.Errorf("channel %s: %w", c.ID, err)
		}
		put = append(put, c.ID, data)
	}
	_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
		r.queueChange(ctx, p, b.del, put, change, agents)
		return nil
	})
	return err
}

// queueChange queues the writes of a planned batch; deletions come first so
// that a pair or IP moving between channels of the batch ends up set.
func (r *Redis) queueChange(ctx context.Context, p redis.Pipeliner, del []string, put []any, ch *configChange, agents map[string][]byte) {
	if len(del) > 0 {
		p.HDel(ctx, r.k.channels(), del...)
	}
	if len(put) > 0 {
		p.HSet(ctx, r.k.channels(), put...)
	}
	if len(ch.delRoutes) > 0 {
		fields := make([]string, len(ch.delRoutes))
		for i, pr := range ch.delRoutes {
			fields[i] = pr.field()
		}
		p.HDel(ctx, r.k.routes(), fields...)
	}
	if len(ch.setRoutes) > 0 {
		args := make([]any, 0, 2*len(ch.setRoutes))
		for _, rt := range ch.setRoutes {
			args = append(args, rt.field(), rt.channelID)
		}
		p.HSet(ctx, r.k.routes(), args...)
	}
	for _, im := range ch.ipRemove {
		p.SRem(ctx, r.k.ip(im.ip), im.channelID)
	}
	for _, im := range ch.ipAdd {
		p.SAdd(ctx, r.k.ip(im.ip), im.channelID)
	}
	if len(agents) > 0 {
		args := make([]any, 0, 2*len(agents))
		for id, data := range agents {
			args = append(args, id, data)
		}
		p.HSet(ctx, r.k.agents(), args...)
	}
	p.Incr(ctx, r.k.cfgVersion())
}

// decodeSorted unmarshals stored JSON values and sorts them by key(v).
func decodeSorted[T any](vals []string, what string, key func(T) string) ([]T, error) {
	out := make([]T, 0, len(vals))
	for _, s := range vals {
		v, err := decode[T]([]byte(s), what)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return key(out[i]) < key(out[j]) })
	return out, nil
}
