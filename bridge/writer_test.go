package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"

	"github.com/vivi/bridge/session"
)

// slowSessions blocks each update until release is closed.
type slowSessions struct {
	memSessions
	entered chan struct{} // receives once per update, before it blocks
	release chan struct{}
	calls   int
	mu      sync.Mutex
}

func (s *slowSessions) UpdateSession(ctx context.Context, sid string, fn func(*session.Session) error) (*session.Session, error) {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	select {
	case <-s.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s.mu.Lock()
	s.calls++
	s.mu.Unlock()
	return s.memSessions.UpdateSession(ctx, sid, fn)
}

// TestSessionWriterCoalescesWhileStoreBlocked: with the store stuck, 10,000
// changes are merged rather than dropped: the pending changes stay bounded,
// and once the store answers the record has the latest state, every change
// in order (the head and the latest events kept, the rest counted as
// folded) and a bounded size, in a few writes.
func TestSessionWriterCoalescesWhileStoreBlocked(t *testing.T) {
	store := &slowSessions{memSessions: memSessions{m: map[string]*session.Session{}}, entered: make(chan struct{}, 1), release: make(chan struct{})}
	store.put(session.New("CA1", "ch", "ag", time.Unix(0, 0)))
	w := newSessionWriter(context.Background(), store, "CA1", zap.NewNop(), time.Minute)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run()
	}()
	w.push(func(s *session.Session) { _ = s.Transition(session.Streaming, time.Unix(0, 0)) })
	<-store.entered // the first write is stuck in the store
	const n = 10_000
	for i := range n {
		at := time.Unix(int64(i+1), 0)
		switch {
		case i%2 == 0:
			w.event(at, "e", strconv.Itoa(i))
		default:
			w.turn(at, session.RoleCaller, "turn "+strconv.Itoa(i))
		}
		if i == n/2 {
			w.push(func(s *session.Session) { s.PodID = "pod-b" }) // a state change among the appends
		}
	}
	// bounded while the store is stuck: a scratch record per segment, folded like the real one
	w.mu.Lock()
	events, turns, segs := 0, 0, len(w.pending)
	for _, seg := range w.pending {
		if seg.adds != nil {
			events += len(seg.adds.Timeline)
			turns += len(seg.adds.Transcript)
		}
	}
	w.mu.Unlock()
	if segs > 3 || events > 2*session.MaxTimelineEvents || turns > 2*session.MaxTranscriptTurns {
		t.Fatalf("pending not bounded: %d segments, %d events, %d turns", segs, events, turns)
	}
	w.finish(func(s *session.Session) { s.End("caller_hangup", time.Unix(n+1, 0)) })
	close(store.release)
	<-done
	s := store.get("CA1")
	if s.State != session.Ended || s.EndReason != "caller_hangup" || s.PodID != "pod-b" {
		t.Fatalf("latest state not written: %s %q pod %q", s.State, s.EndReason, s.PodID)
	}
	if len(s.Timeline) != session.MaxTimelineEvents || s.Folded != 1+n/2+1-session.MaxTimelineEvents {
		t.Fatalf("timeline %d events, %d folded", len(s.Timeline), s.Folded)
	}
	if last := s.Timeline[len(s.Timeline)-2]; last.Detail != strconv.Itoa(n-2) || s.Timeline[len(s.Timeline)-1].Type != session.EventEnded {
		t.Fatalf("latest events not kept: %+v", s.Timeline[len(s.Timeline)-2:])
	}
	if s.Timeline[0].Type != session.EventAnswered || s.Timeline[1].Detail != "0" {
		t.Fatalf("head not kept: %+v", s.Timeline[:2])
	}
	prev := int64(-1)
	for _, e := range s.Timeline {
		if e.At.Unix() < prev {
			t.Fatalf("out of order at %d", e.At.Unix())
		}
		prev = e.At.Unix()
	}
	if got := s.Transcript[len(s.Transcript)-1].Text; got != "turn "+strconv.Itoa(n-1) || len(s.Transcript)+s.TranscriptFolded != n/2 {
		t.Fatalf("transcript: last %q, %d kept + %d folded", got, len(s.Transcript), s.TranscriptFolded)
	}
	if b, _ := json.Marshal(s); len(b) > 200<<10 {
		t.Fatalf("record is %d bytes", len(b))
	}
	if store.calls > 3 {
		t.Fatalf("%d store writes for changes merged while stuck", store.calls)
	}
}

// flakySessions fails every update while down is set.
type flakySessions struct {
	memSessions
	down     atomic.Bool
	mu2      sync.Mutex
	attempts []time.Time
}

func (f *flakySessions) UpdateSession(ctx context.Context, sid string, fn func(*session.Session) error) (*session.Session, error) {
	f.mu2.Lock()
	f.attempts = append(f.attempts, time.Now())
	f.mu2.Unlock()
	if f.down.Load() {
		return nil, errors.New("store down")
	}
	return f.memSessions.UpdateSession(ctx, sid, fn)
}

// TestSessionWriterRetriesUntilStoreRecovers: writes that fail are retried
// with a bounded backoff, merged with what came since; when the store is
// back everything lands, the end last.
func TestSessionWriterRetriesUntilStoreRecovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &flakySessions{memSessions: memSessions{m: map[string]*session.Session{}}}
		store.put(session.New("CA1", "ch", "ag", time.Unix(0, 0)))
		store.down.Store(true)
		w := newSessionWriter(context.Background(), store, "CA1", zap.NewNop(), time.Second)
		done := make(chan struct{})
		go func() {
			defer close(done)
			w.run()
		}()
		start := time.Now()
		w.event(time.Unix(1, 0), "e", "1")
		time.Sleep(time.Minute) // fake time: the writer keeps retrying
		w.event(time.Unix(2, 0), "e", "2")
		w.turn(time.Unix(3, 0), session.RoleAgent, "hello")
		synctest.Wait()
		store.mu2.Lock()
		at := slices.Clone(store.attempts)
		store.mu2.Unlock()
		if len(at) < 5 || len(at) > 30 {
			t.Fatalf("%d attempts in a minute", len(at))
		}
		for i := 1; i < len(at); i++ {
			if gap := at[i].Sub(at[i-1]); gap < writerRetryMin || gap > writerRetryMax {
				t.Fatalf("retry %d after %s", i, gap)
			}
		}
		if at[len(at)-1].Sub(at[len(at)-2]) != writerRetryMax {
			t.Fatalf("backoff not capped at %s: %s", writerRetryMax, at[len(at)-1].Sub(at[len(at)-2]))
		}
		if got := store.get("CA1"); len(got.Timeline) != 1 {
			t.Fatalf("written while the store was down: %+v", got.Timeline)
		}
		store.down.Store(false)
		w.finish(func(s *session.Session) { s.End("caller_hangup", time.Unix(4, 0)) })
		<-done
		if time.Since(start) > time.Minute+writerRetryMax {
			t.Fatalf("recovery took %s", time.Since(start))
		}
		s := store.get("CA1")
		var types []string
		for _, e := range s.Timeline {
			types = append(types, e.Type+e.Detail)
		}
		if !slices.Equal(types, []string{"answered", "e1", "e2", "endedcaller_hangup"}) || len(s.Transcript) != 1 || s.State != session.Ended {
			t.Fatalf("after recovery: %v, %d turns, %s", types, len(s.Transcript), s.State)
		}
	})
}

// TestSessionWriterGivesUpAfterFinalBudget: a store that never comes back
// does not hold the call's writer forever once the call has ended.
func TestSessionWriterGivesUpAfterFinalBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &flakySessions{memSessions: memSessions{m: map[string]*session.Session{}}}
		store.put(session.New("CA1", "ch", "ag", time.Unix(0, 0)))
		store.down.Store(true)
		w := newSessionWriter(context.Background(), store, "CA1", zap.NewNop(), time.Second)
		start := time.Now()
		w.finish(func(s *session.Session) { s.End("caller_hangup", time.Unix(4, 0)) })
		w.run()
		if d := time.Since(start); d < writerFinalBudget || d > writerFinalBudget+2*writerRetryMax {
			t.Fatalf("gave up after %s", d)
		}
	})
}

func TestEndMutation(t *testing.T) {
	now := time.Unix(100, 0)
	c := &call{streamSID: "MZ1"}
	tests := map[string]struct {
		state  session.State
		stream string
		reason string
		want   session.State
	}{
		"stop ends":                     {session.Streaming, "MZ1", ReasonCallerHangup, session.Ended},
		"stop while transferring":       {session.Transferring, "MZ1", ReasonCallerHangup, session.Transferring},
		"drop while transferring":       {session.Transferring, "MZ1", ReasonTwilioDisconnected, session.Transferring},
		"model drop while transferring": {session.Transferring, "MZ1", ReasonModelDropped, session.Ended},
		"another stream took over":      {session.Streaming, "MZ2", ReasonCallerHangup, session.Streaming},
		"already transferred":           {session.Transferred, "MZ1", ReasonCallerHangup, session.Transferred},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := &session.Session{CallSID: "CA1", State: tc.state, StreamSID: tc.stream}
			c.endMutation(tc.reason, now)(s)
			if s.State != tc.want {
				t.Fatalf("state %s, want %s", s.State, tc.want)
			}
		})
	}
}

func TestSlowTwilioEndsCall(t *testing.T) {
	srv := &Server{log: zap.NewNop()}
	c := &call{srv: srv, twOut: make(chan outFrame, 2), log: zap.NewNop()}
	for range 3 {
		c.toTwilio(outFrame{buf: srv.pool.get()})
	}
	if c.endReason != ReasonTwilioDisconnected {
		t.Fatalf("end reason %q", c.endReason)
	}
}

// maybeWrittenSessions commits the first update and then reports an error,
// as Redis does when the connection dies after EXEC and before the replica
// wait answered: the write landed, the writer cannot know it.
type maybeWrittenSessions struct {
	memSessions
	failed atomic.Bool
}

func (s *maybeWrittenSessions) UpdateSession(ctx context.Context, sid string, fn func(*session.Session) error) (*session.Session, error) {
	out, err := s.memSessions.UpdateSession(ctx, sid, fn)
	if err == nil && s.failed.CompareAndSwap(false, true) {
		return nil, errors.New("redis: connection reset after EXEC")
	}
	return out, err
}

// TestSessionWriterReappliesWithoutDuplicates: a batch retried after a
// write of unknown outcome that had in fact landed appends its events and
// turns once, not twice (the record seeds the next model session).
func TestSessionWriterReappliesWithoutDuplicates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &maybeWrittenSessions{memSessions: memSessions{m: map[string]*session.Session{}}}
		store.put(session.New("CA1", "ch", "ag", time.Unix(0, 0)))
		w := newSessionWriter(context.Background(), store, "CA1", zap.NewNop(), time.Second)
		done := make(chan struct{})
		go func() {
			defer close(done)
			w.run()
		}()
		w.event(time.Unix(1, 0), "e", "1")
		w.turn(time.Unix(2, 0), session.RoleCaller, "I would like to book")
		w.turn(time.Unix(2, 0), session.RoleAgent, "Sure")
		time.Sleep(time.Minute) // fake time: the retry after the unknown outcome
		w.finish(func(s *session.Session) { s.End("caller_hangup", time.Unix(4, 0)) })
		<-done
		s := store.get("CA1")
		var types []string
		for _, e := range s.Timeline {
			types = append(types, e.Type+e.Detail)
		}
		if !slices.Equal(types, []string{"answered", "e1", "endedcaller_hangup"}) || len(s.Transcript) != 2 {
			t.Fatalf("after the retry: %v, %d turns %+v", types, len(s.Transcript), s.Transcript)
		}
	})
}
