package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/vivi/bridge/session"
)

// pruneLua removes index members whose session key is gone, checking each
// key at the moment of removal so that a live session is never dropped.
// KEYS[1]: the index; KEYS[i+1]: the session key of ARGV[i].
const pruneLua = `
local removed = 0
for i, member in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then
    removed = removed + redis.call('ZREM', KEYS[1], member)
  end
end
return removed
`

// listPage is how many index entries Sessions reads per round trip.
const listPage = 100

// CreateSession stores s; an error wrapping ErrExists if its call SID is taken.
func (r *Redis) CreateSession(ctx context.Context, s *session.Session) error {
	if s == nil || s.CallSID == "" {
		return fmt.Errorf("store: create session: %w", errEmptyID)
	}
	data, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("store: create session %s: %w", s.CallSID, err)
	}
	key := r.k.session(s.CallSID)
	err = r.watch(ctx, func(tx *redis.Tx) error {
		n, err := tx.Exists(ctx, key).Result()
		if err != nil {
			return err
		}
		if n > 0 {
			return ErrExists
		}
		entries := r.outboxOf(SessionMark{}, s)
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			r.queueSession(ctx, p, s.CallSID, data, s.State.Terminal())
			r.queueOutbox(ctx, p, entries)
			return nil
		})
		if err != nil {
			return err
		}
		return r.waitReplicas(ctx, tx)
	}, key)
	if err != nil {
		return fmt.Errorf("store: create session %s: %w", s.CallSID, err)
	}
	return nil
}

// Session returns the session of callSID, or an error wrapping session.ErrNotFound.
func (r *Redis) Session(ctx context.Context, callSID string) (*session.Session, error) {
	data, err := r.client.Get(ctx, r.k.session(callSID)).Bytes()
	if errors.Is(err, redis.Nil) {
		err = session.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: session %s: %w", callSID, err)
	}
	return decodeSession(data, callSID)
}

// UpdateSession applies fn to the stored session and stores the result in a
// WATCH/MULTI transaction, safe across pods. fn runs again when another writer
// got in first, so it must have no effect beyond the session it is given. An
// error from fn is returned unchanged and nothing is written.
func (r *Redis) UpdateSession(ctx context.Context, callSID string, fn func(*session.Session) error) (*session.Session, error) {
	key := r.k.session(callSID)
	var out *session.Session
	var fnErr error
	err := r.watch(ctx, func(tx *redis.Tx) error {
		data, err := tx.Get(ctx, key).Bytes()
		if errors.Is(err, redis.Nil) {
			return session.ErrNotFound
		}
		if err != nil {
			return err
		}
		s, err := decodeSession(data, callSID)
		if err != nil {
			return err
		}
		prev := SessionMark{Exists: true, Seq: s.Seq, State: s.State}
		if fnErr = fn(s); fnErr != nil {
			return fnErr
		}
		if s.CallSID != callSID {
			return fmt.Errorf("call SID changed to %q", s.CallSID)
		}
		if data, err = json.Marshal(s); err != nil {
			return err
		}
		entries := r.outboxOf(prev, s)
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			r.queueSession(ctx, p, callSID, data, s.State.Terminal())
			r.queueOutbox(ctx, p, entries)
			return nil
		})
		if err != nil {
			return err
		}
		if err := r.waitReplicas(ctx, tx); err != nil {
			return err
		}
		out, err = decodeSession(data, callSID)
		return err
	}, key)
	if fnErr != nil {
		return nil, fnErr
	}
	if err != nil {
		return nil, fmt.Errorf("store: update session %s: %w", callSID, err)
	}
	return out, nil
}

// outboxOf returns the outbox entries of writing s over prev (Options.Outbox).
func (o Options) outboxOf(prev SessionMark, s *session.Session) []OutboxEntry {
	if o.Outbox == nil {
		return nil
	}
	return o.Outbox(prev, s)
}

func (r *Redis) outboxOf(prev SessionMark, s *session.Session) []OutboxEntry {
	return r.opts.outboxOf(prev, s)
}

// queueSession queues the write of a session with its expiry, moves it to the
// index of its state (scored by the write time) and drops index entries
// older than their key's expiry.
func (r *Redis) queueSession(ctx context.Context, p redis.Pipeliner, sid string, data []byte, terminal bool) {
	now := r.opts.Now()
	from, to := r.k.endedIndex(), r.k.activeIndex()
	if terminal {
		from, to = to, from
	}
	p.Set(ctx, r.k.session(sid), data, r.opts.ttlFor(terminal))
	p.ZRem(ctx, from, sid)
	p.ZAdd(ctx, to, redis.Z{Score: score(now), Member: sid})
	p.ZRemRangeByScore(ctx, r.k.activeIndex(), "-inf", before(now.Add(-r.opts.ActiveTTL)))
	p.ZRemRangeByScore(ctx, r.k.endedIndex(), "-inf", before(now.Add(-r.opts.Retention)))
}

// before is the exclusive ZRANGEBYSCORE bound "scores older than t".
func before(t time.Time) string { return "(" + strconv.FormatFloat(score(t), 'f', -1, 64) }

// Sessions lists active (ringing, streaming, transferring) or terminal
// (transferred, ended) sessions, most recently written first; limit <= 0
// means all. Index entries whose session has expired are skipped and pruned.
func (r *Redis) Sessions(ctx context.Context, active bool, limit int) ([]*session.Session, error) {
	out, err := r.sessions(ctx, active, limit)
	if err != nil {
		return nil, fmt.Errorf("store: sessions: %w", err)
	}
	return out, nil
}

func (r *Redis) sessions(ctx context.Context, active bool, limit int) ([]*session.Session, error) {
	index := r.k.endedIndex()
	if active {
		index = r.k.activeIndex()
	}
	page := int64(listPage)
	if limit > 0 && limit < listPage {
		page = int64(limit)
	}
	out := []*session.Session{}
	for start := int64(0); ; {
		sids, err := r.client.ZRevRange(ctx, index, start, start+page-1).Result()
		if err != nil || len(sids) == 0 {
			return out, err
		}
		skeys := make([]string, len(sids))
		for i, sid := range sids {
			skeys[i] = r.k.session(sid)
		}
		vals, err := r.client.MGet(ctx, skeys...).Result()
		if err != nil {
			return nil, err
		}
		var stale, staleKeys []string
		for i, v := range vals {
			data, ok := v.(string)
			if !ok {
				stale, staleKeys = append(stale, sids[i]), append(staleKeys, skeys[i])
				continue
			}
			s, err := decodeSession([]byte(data), sids[i])
			if err != nil {
				return nil, err
			}
			if s.State.Active() == active && (limit <= 0 || len(out) < limit) {
				out = append(out, s)
			}
		}
		removed, err := r.prune(ctx, index, stale, staleKeys)
		if err != nil {
			return nil, err
		}
		if (limit > 0 && len(out) >= limit) || int64(len(sids)) < page {
			return out, nil
		}
		start += int64(len(sids)) - removed
	}
}

// prune removes the members of index whose session keys are gone.
func (r *Redis) prune(ctx context.Context, index string, members, skeys []string) (int64, error) {
	if len(members) == 0 {
		return 0, nil
	}
	args := make([]any, len(members))
	for i, m := range members {
		args[i] = m
	}
	return r.pruneScript.Run(ctx, r.client, append([]string{index}, skeys...), args...).Int64()
}

// ClaimToken records the use of stream token id for ttl (SET NX PX): true the
// first time, false while the record lasts.
func (r *Redis) ClaimToken(ctx context.Context, id string, ttl time.Duration) (bool, error) {
	if id == "" || ttl <= 0 {
		return false, fmt.Errorf("store: claim token: empty id or ttl %v", ttl)
	}
	ok, err := r.client.SetNX(ctx, r.k.token(id), 1, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("store: claim token: %w", err)
	}
	return ok, nil
}
