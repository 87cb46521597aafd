package bridge

import (
	"context"
	"io"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"

	"github.com/vivi/bridge/session"
)

// failoverSessions is a store going through a Redis failover: its first
// update commits and then reports io.EOF (the master died between EXEC and
// WAIT's answer: an unknown outcome), the next ones fail until up is set
// (no master for the slot), then it answers.
type failoverSessions struct {
	flakySessions
	committed bool
}

func (f *failoverSessions) UpdateSession(ctx context.Context, sid string, fn func(*session.Session) error) (*session.Session, error) {
	if !f.committed {
		f.committed = true
		if _, err := f.memSessions.UpdateSession(ctx, sid, fn); err != nil {
			return nil, err
		}
		f.down.Store(true)
		return nil, io.EOF
	}
	return f.flakySessions.UpdateSession(ctx, sid, fn)
}

// TestSessionWriterWritesAtOnceAfterFailover: a writer whose first write
// hit a failover (committed, then EOF; then refused until a replica took
// over 3.5 s later) is in a backoff of 3.2 s when the store answers again.
// The end of the call (finish) and the store's recovery (retryNow) each
// make it write at that instant, not a backoff later: the record has the
// event of the unknown write once, the end after it, while a webhook
// writing the end at once would otherwise find the event missing for
// seconds (TestClusterFailoverMidCall).
func TestSessionWriterWritesAtOnceAfterFailover(t *testing.T) {
	for _, tc := range []struct {
		name string
		kick func(w *sessionWriter)
	}{
		{"finish", func(w *sessionWriter) {
			w.finish(func(s *session.Session) { s.End(ReasonCallerHangup, time.Unix(9, 0)) })
		}},
		{"retryNow", func(w *sessionWriter) { w.retryNow() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				store := &failoverSessions{flakySessions: flakySessions{memSessions: memSessions{m: map[string]*session.Session{}}}}
				store.put(session.New("CA1", "ch", "ag", time.Unix(0, 0)))
				w := newSessionWriter(context.Background(), store, "CA1", zap.NewNop(), time.Second)
				done := make(chan struct{})
				go func() {
					defer close(done)
					w.run()
				}()
				w.event(time.Unix(1, 0), session.EventModelConnected, "gpt-realtime")
				time.Sleep(3500 * time.Millisecond) // the failover: attempts at 0, .1, .3, .7, 1.5 and 3.1 s
				synctest.Wait()
				store.down.Store(false)
				recovered := time.Now()
				tc.kick(w)
				synctest.Wait()
				store.mu2.Lock()
				last := store.attempts[len(store.attempts)-1]
				store.mu2.Unlock()
				if d := last.Sub(recovered); d != 0 {
					t.Fatalf("written %v after the store answered again; want at once", d)
				}
				var types []string
				for _, e := range store.get("CA1").Timeline {
					types = append(types, e.Type)
				}
				want := []string{session.EventAnswered, session.EventModelConnected}
				if tc.name == "finish" {
					want = append(want, session.EventEnded)
				}
				if !slices.Equal(types, want) {
					t.Fatalf("timeline %v; want %v", types, want)
				}
				if tc.name == "retryNow" {
					w.finish(func(s *session.Session) { s.End(ReasonCallerHangup, time.Unix(9, 0)) })
				}
				<-done
			})
		})
	}
}

// TestSessionWriterKickOnlyCutsAFailingWait: a retryNow while the store
// was healthy does not make the writer skip the backoff of a later
// failure (the kick is spent), so a store that is down is not hammered.
func TestSessionWriterKickOnlyCutsAFailingWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &flakySessions{memSessions: memSessions{m: map[string]*session.Session{}}}
		store.put(session.New("CA1", "ch", "ag", time.Unix(0, 0)))
		w := newSessionWriter(context.Background(), store, "CA1", zap.NewNop(), time.Second)
		done := make(chan struct{})
		go func() {
			defer close(done)
			w.run()
		}()
		w.retryNow() // nothing is failing: no effect
		synctest.Wait()
		store.down.Store(true)
		w.event(time.Unix(1, 0), "e", "1")
		time.Sleep(writerRetryMin / 2)
		synctest.Wait()
		store.mu2.Lock()
		n := len(store.attempts)
		store.mu2.Unlock()
		if n != 1 {
			t.Fatalf("%d attempts within half the first backoff; want 1", n)
		}
		store.down.Store(false)
		w.finish(func(s *session.Session) { s.End(ReasonCallerHangup, time.Unix(9, 0)) })
		<-done
	})
}
