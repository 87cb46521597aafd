package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/vivi/bridge/session"
)

// sweepEvery is how many session and token writes Memory lets pass between
// two sweeps of expired entries (lookups already hide and drop them).
const sweepEvery = 1024

// memSession is one stored session: its JSON and the facts the index needs.
type memSession struct {
	data     []byte
	terminal bool
	version  uint64 // bumped on every write; the optimistic check of UpdateSession
	written  time.Time
	expires  time.Time
}

type memToken struct{ expires time.Time }

// CreateSession stores s; an error wrapping ErrExists if its call SID is taken.
func (m *Memory) CreateSession(_ context.Context, s *session.Session) error {
	if s == nil || s.CallSID == "" {
		return fmt.Errorf("store: create session: %w", errEmptyID)
	}
	data, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("store: create session %s: %w", s.CallSID, err)
	}
	m.sessMu.Lock()
	defer m.sessMu.Unlock()
	now := m.opts.Now()
	if _, ok := m.liveLocked(s.CallSID, now); ok {
		return fmt.Errorf("store: create session %s: %w", s.CallSID, ErrExists)
	}
	entries := m.opts.outboxOf(SessionMark{}, s)
	m.putLocked(s.CallSID, data, s.State.Terminal(), 1, now)
	m.outbox.mu.Lock()
	m.appendOutboxLocked(entries)
	m.outbox.mu.Unlock()
	return nil
}

// Session returns the session of callSID, or an error wrapping session.ErrNotFound.
func (m *Memory) Session(_ context.Context, callSID string) (*session.Session, error) {
	m.sessMu.Lock()
	e, ok := m.liveLocked(callSID, m.opts.Now())
	m.sessMu.Unlock()
	if !ok {
		return nil, fmt.Errorf("store: session %s: %w", callSID, session.ErrNotFound)
	}
	return decodeSession(e.data, callSID)
}

// UpdateSession applies fn to the stored session and stores the result,
// optimistically: fn runs without the lock and is run again when another
// writer got in first, so it must have no effect beyond the session it is
// given. An error from fn is returned unchanged and nothing is written.
func (m *Memory) UpdateSession(_ context.Context, callSID string, fn func(*session.Session) error) (*session.Session, error) {
	for range maxTxAttempts {
		m.sessMu.Lock()
		e, ok := m.liveLocked(callSID, m.opts.Now())
		m.sessMu.Unlock()
		if !ok {
			return nil, fmt.Errorf("store: update session %s: %w", callSID, session.ErrNotFound)
		}
		s, err := decodeSession(e.data, callSID)
		if err != nil {
			return nil, err
		}
		prev := SessionMark{Exists: true, Seq: s.Seq, State: s.State}
		if err := fn(s); err != nil {
			return nil, err
		}
		if s.CallSID != callSID {
			return nil, fmt.Errorf("store: update session %s: call SID changed to %q", callSID, s.CallSID)
		}
		data, err := json.Marshal(s)
		if err != nil {
			return nil, fmt.Errorf("store: update session %s: %w", callSID, err)
		}
		entries := m.opts.outboxOf(prev, s)
		m.sessMu.Lock()
		now := m.opts.Now()
		cur, ok := m.liveLocked(callSID, now)
		if ok && cur.version == e.version {
			m.putLocked(callSID, data, s.State.Terminal(), e.version+1, now)
			m.outbox.mu.Lock()
			m.appendOutboxLocked(entries)
			m.outbox.mu.Unlock()
			m.sessMu.Unlock()
			return decodeSession(data, callSID)
		}
		m.sessMu.Unlock()
		if !ok {
			return nil, fmt.Errorf("store: update session %s: %w", callSID, session.ErrNotFound)
		}
	}
	return nil, fmt.Errorf("store: update session %s: %w", callSID, errContention)
}

// Sessions lists active (ringing, streaming, transferring) or terminal
// (transferred, ended) sessions, most recently written first; limit <= 0
// means all.
func (m *Memory) Sessions(_ context.Context, active bool, limit int) ([]*session.Session, error) {
	m.sessMu.Lock()
	now := m.opts.Now()
	type hit struct {
		sid string
		e   *memSession
	}
	var hits []hit
	for sid := range m.sessions {
		if e, ok := m.liveLocked(sid, now); ok && e.terminal != active {
			hits = append(hits, hit{sid, e})
		}
	}
	m.sessMu.Unlock()
	sort.Slice(hits, func(i, j int) bool {
		si, sj := score(hits[i].e.written), score(hits[j].e.written)
		if si != sj {
			return si > sj
		}
		return hits[i].sid > hits[j].sid
	})
	if limit > 0 && len(hits) > limit {
		hits = hits[:limit]
	}
	out := make([]*session.Session, 0, len(hits))
	for _, h := range hits {
		s, err := decodeSession(h.e.data, h.sid)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// ClaimToken records the use of stream token id for ttl: true the first time,
// false while the record lasts.
func (m *Memory) ClaimToken(_ context.Context, id string, ttl time.Duration) (bool, error) {
	if id == "" || ttl <= 0 {
		return false, fmt.Errorf("store: claim token: empty id or ttl %v", ttl)
	}
	m.sessMu.Lock()
	defer m.sessMu.Unlock()
	now := m.opts.Now()
	if t, ok := m.tokens[id]; ok && now.Before(t.expires) {
		return false, nil
	}
	m.tokens[id] = memToken{expires: now.Add(ttl)}
	m.wroteLocked(now)
	return true, nil
}

// liveLocked returns the unexpired session of sid, dropping an expired one.
func (m *Memory) liveLocked(sid string, now time.Time) (*memSession, bool) {
	e, ok := m.sessions[sid]
	if !ok {
		return nil, false
	}
	if !now.Before(e.expires) {
		delete(m.sessions, sid)
		return nil, false
	}
	return e, true
}

func (m *Memory) putLocked(sid string, data []byte, terminal bool, version uint64, now time.Time) {
	m.sessions[sid] = &memSession{
		data:     data,
		terminal: terminal,
		version:  version,
		written:  now,
		expires:  now.Add(m.opts.ttlFor(terminal)),
	}
	m.wroteLocked(now)
}

// wroteLocked counts a write and sweeps expired entries every sweepEvery writes.
func (m *Memory) wroteLocked(now time.Time) {
	m.writes++
	if m.writes < sweepEvery {
		return
	}
	m.writes = 0
	for sid := range m.sessions {
		m.liveLocked(sid, now)
	}
	for id, t := range m.tokens {
		if !now.Before(t.expires) {
			delete(m.tokens, id)
		}
	}
}

func decodeSession(data []byte, sid string) (*session.Session, error) {
	s, err := decode[session.Session](data, "session "+sid)
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// memSub is one subscriber; ch is closed by its cancel func under subMu.
type memSub struct{ ch chan []byte }

// Publish delivers a copy of msg to every subscriber of topic in this process.
// A subscriber whose buffer is full misses the message; Publish never blocks.
func (m *Memory) Publish(_ context.Context, topic string, msg []byte) error {
	m.subMu.RLock()
	defer m.subMu.RUnlock()
	for sub := range m.subs[topic] {
		select {
		case sub.ch <- slices.Clone(msg):
		default: // slow subscriber: drop rather than block the publisher
		}
	}
	return nil
}

// Subscribe returns the messages published to topic from now on, until the
// returned cancel func is called; cancel closes the channel. No goroutine is
// involved.
func (m *Memory) Subscribe(ctx context.Context, topic string) (<-chan []byte, func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("store: subscribe %s: %w", topic, err)
	}
	sub := &memSub{ch: make(chan []byte, subscriberBuffer)}
	m.subMu.Lock()
	if m.subs[topic] == nil {
		m.subs[topic] = make(map[*memSub]struct{})
	}
	m.subs[topic][sub] = struct{}{}
	m.subMu.Unlock()
	var once sync.Once
	cancel := func() {
		once.Do(func() {
			m.subMu.Lock()
			defer m.subMu.Unlock()
			delete(m.subs[topic], sub)
			if len(m.subs[topic]) == 0 {
				delete(m.subs, topic)
			}
			close(sub.ch)
		})
	}
	return sub.ch, cancel, nil
}
