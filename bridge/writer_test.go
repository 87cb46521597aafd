package bridge

import (
	"context"
	"sync"
	"testing"
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

func TestSessionWriterOrderBatchAndFinal(t *testing.T) {
	store := &slowSessions{memSessions: memSessions{m: map[string]*session.Session{}}, entered: make(chan struct{}, 1), release: make(chan struct{})}
	store.put(session.New("CA1", "ch", "ag", time.Unix(0, 0)))
	w := newSessionWriter(context.Background(), store, "CA1", zap.NewNop(), 5*time.Second)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run()
	}()
	// The store is stuck: pushing never blocks, the queue is bounded.
	w.push(func(s *session.Session) { s.Record(time.Unix(0, 0), "first", "") })
	<-store.entered
	for i := range writerQueue + 10 {
		n := i + 1
		w.push(func(s *session.Session) { s.Record(time.Unix(int64(n), 0), "e", "") })
	}
	if w.dropped == 0 {
		t.Fatal("a full queue did not drop")
	}
	w.finish(func(s *session.Session) { s.End("caller_hangup", time.Unix(9999, 0)) })
	close(store.release)
	<-done
	s := store.get("CA1")
	if s.State != session.Ended || s.EndReason != "caller_hangup" {
		t.Fatalf("final not applied: %s %q", s.State, s.EndReason)
	}
	// in order, and batched: far fewer store writes than mutations
	prev := int64(-1)
	for _, e := range s.Timeline {
		if e.Type == "e" {
			if e.At.Unix() <= prev {
				t.Fatalf("out of order at %d", e.At.Unix())
			}
			prev = e.At.Unix()
		}
	}
	if store.calls > 3 {
		t.Fatalf("%d store writes for a queue applied while stuck", store.calls)
	}
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
