package bridge

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/vivi/bridge/session"
)

// creatingSessions is memSessions with CreateSession, and a way to lose
// every record (a Redis restarted without persistence).
type creatingSessions struct{ memSessions }

func (cs *creatingSessions) CreateSession(_ context.Context, s *session.Session) error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if _, ok := cs.m[s.CallSID]; ok {
		return errors.New("exists")
	}
	cs.m[s.CallSID] = clone(s)
	return nil
}

func (cs *creatingSessions) lose() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.m = map[string]*session.Session{}
}

// TestSessionWriterRecreatesLostRecord: after the store lost the record of
// a live call, the writer's next write re-creates it from the last record
// written, with the new change on top; nothing written before is lost.
func TestSessionWriterRecreatesLostRecord(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &creatingSessions{memSessions{m: map[string]*session.Session{}}}
		s := session.New("CA1", "ch", "ag", time.Unix(0, 0))
		s.From = testFrom
		store.put(s)
		reg := prometheus.NewRegistry()
		m, err := newWriterMetrics(reg)
		if err != nil {
			t.Fatal(err)
		}
		w := newSessionWriter(context.Background(), store, "CA1", zap.NewNop(), time.Second)
		w.creator, w.metrics = store, m
		w.seed = func() *session.Session { t.Error("seed used though a record was written"); return nil }
		done := make(chan struct{})
		go func() {
			defer close(done)
			w.run()
		}()
		w.push(func(s *session.Session) { _ = s.Transition(session.Streaming, time.Unix(1, 0)) })
		w.turn(time.Unix(2, 0), session.RoleCaller, "hello")
		synctest.Wait()
		store.lose()
		w.touch()
		synctest.Wait()
		got := store.get("CA1")
		if got == nil || got.State != session.Streaming || got.From != testFrom || len(got.Transcript) != 1 {
			t.Fatalf("after the loss and a touch: %+v", got)
		}
		w.turn(time.Unix(3, 0), session.RoleAgent, "hi")
		w.finish(func(s *session.Session) { s.End(ReasonCallerHangup, time.Unix(4, 0)) })
		<-done
		got = store.get("CA1")
		if got.State != session.Ended || len(got.Transcript) != 2 {
			t.Fatalf("at the end: state %s, %d turns; want ended with 2", got.State, len(got.Transcript))
		}
		if n := counterValue(t, reg, "vivi_bridge_session_records_recreated_total"); n != 1 {
			t.Fatalf("recreated = %v; want 1", n)
		}
	})
}

// TestSessionWriterCreatesFromSeed: a call whose record the store never had
// (its webhook's create is still buffered elsewhere) gets one from the seed
// at its first write.
func TestSessionWriterCreatesFromSeed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &creatingSessions{memSessions{m: map[string]*session.Session{}}}
		w := newSessionWriter(context.Background(), store, "CA1", zap.NewNop(), time.Second)
		w.creator = store
		w.seed = func() *session.Session {
			s := session.New("CA1", "ch", "ag", time.Unix(0, 0))
			startStream(s, "pod-a", "MZ1", time.Unix(0, 0))
			return s
		}
		w.event(time.Unix(1, 0), "e", "1")
		w.finish(func(s *session.Session) { s.End(ReasonCallerHangup, time.Unix(2, 0)) })
		w.run()
		got := store.get("CA1")
		if got == nil || got.State != session.Ended || got.PodID != "pod-a" {
			t.Fatalf("record = %+v; want one created from the seed and ended", got)
		}
	})
}

// TestSessionWriterNeverGivesUpWhileLive: with the store down for an hour of
// a live call the writer keeps retrying; after the call ends it gives up
// after writerFinalBudget and counts it.
func TestSessionWriterNeverGivesUpWhileLive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &flakySessions{memSessions: memSessions{m: map[string]*session.Session{}}}
		store.put(session.New("CA1", "ch", "ag", time.Unix(0, 0)))
		store.down.Store(true)
		reg := prometheus.NewRegistry()
		m, _ := newWriterMetrics(reg)
		w := newSessionWriter(context.Background(), store, "CA1", zap.NewNop(), time.Second)
		w.metrics = m
		done := make(chan struct{})
		go func() {
			defer close(done)
			w.run()
		}()
		w.event(time.Unix(1, 0), "e", "1")
		time.Sleep(time.Hour) // fake time
		select {
		case <-done:
			t.Fatal("the writer of a live call gave up")
		default:
		}
		ended := time.Now()
		w.finish(func(s *session.Session) { s.End(ReasonCallerHangup, time.Unix(2, 0)) })
		<-done
		if d := time.Since(ended); d < writerFinalBudget-writerRetryMax || d > writerFinalBudget+2*writerRetryMax {
			t.Fatalf("gave up %s after the end; want about %s", d, writerFinalBudget)
		}
		if n := counterValue(t, reg, "vivi_bridge_session_writes_given_up_total"); n != 1 {
			t.Fatalf("given up = %v; want 1", n)
		}
	})
}

// counterValue reads the counter name from reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no counter %s", name)
	return 0
}

// TestSessionWriterRecreateNumbersPastOthers: events another writer (a
// status callback) recorded in a record the store then lost are not
// numbered again by the re-created record, so no event id is given to two
// different events.
func TestSessionWriterRecreateNumbersPastOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &creatingSessions{memSessions{m: map[string]*session.Session{}}}
		store.put(session.New("CA1", "ch", "ag", time.Unix(0, 0)))
		w := newSessionWriter(context.Background(), store, "CA1", zap.NewNop(), time.Second)
		w.creator = store
		done := make(chan struct{})
		go func() {
			defer close(done)
			w.run()
		}()
		w.push(func(s *session.Session) { _ = s.Transition(session.Streaming, time.Unix(1, 0)) })
		synctest.Wait()
		// Another writer records an event; then the store loses the record.
		other := store.get("CA1")
		other.Record(time.Unix(2, 0), session.EventOperator, "by a callback")
		otherSeq := other.Seq
		store.put(other)
		store.lose()
		w.event(time.Unix(3, 0), session.EventDigit, "5")
		w.finish(func(s *session.Session) { s.End(ReasonCallerHangup, time.Unix(4, 0)) })
		<-done
		got := store.get("CA1")
		for _, ev := range got.Timeline {
			if ev.Type == session.EventDigit && ev.Seq <= otherSeq {
				t.Fatalf("re-created record numbered its event %d, not past the %d another writer gave", ev.Seq, otherSeq)
			}
		}
	})
}
