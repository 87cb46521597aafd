package store

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/vivi/bridge/internal/redistest"
	"github.com/vivi/bridge/internal/testwait"
	"github.com/vivi/bridge/session"
)

// writeTimeout bounds one session write attempt in the failover tests, as
// the bridge's session writer bounds its own.
const writeTimeout = 5 * time.Second

// failoverBudget is the longest the store may be unusable after a master
// dies: the servers' failure detection (ClusterNodeTimeout or
// SentinelDownAfter, 2 s) plus the election and the client noticing. With
// go-redis's defaults a Cluster client would keep dialing the dead master
// until its 60 s slot map reload.
const failoverBudget = 20 * time.Second

// callWriter is a call's owner writing its session in a loop: it keeps the
// authoritative transcript and writes all of it each time, so the final
// state is right even if a write were lost; it also counts the turns the
// first write after the failover found missing (acknowledged, then lost
// with the master), which WaitReplicas makes 0.
type callWriter struct {
	t   *testing.T
	st  *Redis
	sid string

	turns []string // what the owner knows, in order

	acked     int           // turns Redis has acknowledged
	retried   int           // failed write attempts (each then retried)
	maxFailed time.Duration // the longest a failed attempt took
	seen      int           // turns stored when the last write read the session
}

func newCallWriter(t *testing.T, st *Redis, sid string) *callWriter {
	if err := st.CreateSession(t.Context(), session.New(sid, "ch", "ag", time.Now())); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	return &callWriter{t: t, st: st, sid: sid}
}

// write adds one turn and writes the session until Redis acknowledges it,
// failing the test when that takes longer than failoverBudget.
func (w *callWriter) write() {
	w.t.Helper()
	w.turns = append(w.turns, fmt.Sprintf("turn %d", len(w.turns)+1))
	begin := time.Now()
	for {
		ctx, cancel := context.WithTimeout(w.t.Context(), writeTimeout)
		attempt := time.Now()
		_, err := w.st.UpdateSession(ctx, w.sid, func(s *session.Session) error {
			w.seen = len(s.Transcript)
			s.Transcript = s.Transcript[:0]
			for _, text := range w.turns {
				s.Transcript = append(s.Transcript, session.Turn{At: attempt, Role: "caller", Text: text})
			}
			s.UpdatedAt = attempt
			return nil
		})
		cancel()
		if err == nil {
			w.acked = len(w.turns)
			return
		}
		w.retried++
		w.maxFailed = max(w.maxFailed, time.Since(attempt))
		if time.Since(begin) > failoverBudget {
			w.t.Fatalf("turn %d not written %v after the first attempt (%d attempts failed): %v",
				len(w.turns), failoverBudget, w.retried, err)
		}
	}
}

// check reads the session back and compares its transcript with the owner's.
func (w *callWriter) check() {
	w.t.Helper()
	s, err := w.st.Session(w.t.Context(), w.sid)
	if err != nil {
		w.t.Fatalf("Session: %v", err)
	}
	var got []string
	for _, turn := range s.Transcript {
		got = append(got, turn.Text)
	}
	if !slices.Equal(got, w.turns) {
		w.t.Fatalf("stored transcript (%d turns) = %q,\nwant the owner's %d turns %q", len(got), got, len(w.turns), w.turns)
	}
	list, err := w.st.Sessions(w.t.Context(), true, 0)
	if err != nil || len(list) != 1 || list[0].CallSID != w.sid {
		w.t.Fatalf("active sessions = %v, %v; want %s alone", list, err, w.sid)
	}
}

// failover writes before, kills (or fails over) with fail, writes on until
// the store answers again and then some, and reports what the client saw.
// It returns how many acknowledged turns the first write after the
// failover found missing.
func (w *callWriter) failover(fail func()) (lost int) {
	w.t.Helper()
	for range 20 {
		w.write()
	}
	ackedBefore := w.acked
	fail()
	killed := time.Now()
	w.write() // the first write after the failure: retried until it lands
	recovered := time.Since(killed)
	lost = ackedBefore - w.seen
	for range 20 {
		w.write()
	}
	w.check()
	w.t.Logf("store unusable for %v after the failure (the first write landed then); %d attempts failed and were retried, "+
		"the longest failed attempt took %v; %d acknowledged turns missing after the failover (on a master left without a replica the first write includes one WAIT timeout)",
		recovered.Round(time.Millisecond), w.retried, w.maxFailed.Round(time.Millisecond), lost)
	if w.maxFailed > writeTimeout+time.Second {
		w.t.Errorf("a failed write took %v, want it bounded by the client's timeouts", w.maxFailed)
	}
	return lost
}

// clusterStore returns a store on a fresh three-master Cluster, through
// NewUniversalClient as openStore builds it.
func clusterStore(t *testing.T) (*redistest.Cluster, *Redis) {
	c := redistest.StartCluster(t)
	client := NewUniversalClient(&redis.UniversalOptions{Addrs: c.Addrs})
	t.Cleanup(func() { _ = client.Close() })
	return c, NewRedis(client, Options{Prefix: ownPrefix(t), WaitReplicas: 1, WaitTimeout: time.Second})
}

// TestRedisClusterFailover: the master of the sessions' slot is killed
// (SIGKILL) while a call's session is written in a loop; its replica takes
// over, the writes land again within seconds (bounded attempts, no attempt
// hangs), no acknowledged write is lost (each waited for the replica), the
// final session is the owner's, and pub/sub on the failed node's slot
// delivers again.
func TestRedisClusterFailover(t *testing.T) {
	c, st := clusterStore(t)
	sessKey := st.k.activeIndex()
	w := newCallWriter(t, st, "CA-failover")
	// A topic whose channel name hashes to the sessions' slot, so its
	// subscription sits on the master that is killed.
	msgs, cancel, err := st.Subscribe(t.Context(), "{sess}commands")
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	defer cancel()
	old, replica := c.MasterFor(t, sessKey), c.ReplicaFor(t, sessKey)
	if c.MasterFor(t, st.k.topic("{sess}commands")) != old {
		t.Fatal("the test topic is not on the sessions' master")
	}
	if lost := w.failover(old.Kill); lost != 0 {
		t.Errorf("%d acknowledged turns lost, want 0: each write waited for the replica (WaitReplicas)", lost)
	}
	if got := c.WaitMasterChange(t, sessKey, old); got != replica {
		t.Fatalf("sessions' slot went to %s, want its replica %s", got.Addr, replica.Addr)
	}
	// The subscription reconnects to the new master (go-redis resubscribes);
	// messages published before that are lost, as pub/sub always loses them.
	begin := time.Now()
	got := false
	if err := testwait.Poll(failoverBudget, func() bool {
		select {
		case <-msgs:
			got = true
			return true
		default:
		}
		_ = st.Publish(t.Context(), "{sess}commands", []byte("ping"))
		return false
	}); err != nil || !got {
		t.Fatalf("no message on the failed-over slot's subscription within %v", failoverBudget)
	}
	t.Logf("subscription delivering again %v after the cluster settled", time.Since(begin).Round(time.Millisecond))
}

// TestRedisClusterManualFailover: CLUSTER FAILOVER on the replica of the
// sessions' slot (the operator's graceful switch) mid-call: writes go on,
// and nothing acknowledged is lost, since a manual failover waits for the
// replica to catch up.
func TestRedisClusterManualFailover(t *testing.T) {
	c, st := clusterStore(t)
	sessKey := st.k.activeIndex()
	w := newCallWriter(t, st, "CA-manual")
	old, replica := c.MasterFor(t, sessKey), c.ReplicaFor(t, sessKey)
	lost := w.failover(func() { c.ManualFailover(t, replica) })
	if got := c.WaitMasterChange(t, sessKey, old); got != replica {
		t.Fatalf("sessions' slot went to %s, want %s", got.Addr, replica.Addr)
	}
	if lost != 0 {
		t.Errorf("%d acknowledged turns lost in a manual failover, want 0", lost)
	}
}

// TestRedisSentinelFailover: the master is killed while a call's session is
// written in a loop; the sentinels promote the replica, the Sentinel
// client follows it and the writes land again within seconds.
func TestRedisSentinelFailover(t *testing.T) {
	s := redistest.StartSentinel(t)
	client := NewUniversalClient(&redis.UniversalOptions{Addrs: s.Addrs, MasterName: s.MasterName})
	t.Cleanup(func() { _ = client.Close() })
	st := NewRedis(client, Options{Prefix: ownPrefix(t), WaitReplicas: 1, WaitTimeout: time.Second})
	w := newCallWriter(t, st, "CA-sentinel")
	old := s.Master(t)
	if lost := w.failover(old.Kill); lost != 0 {
		t.Errorf("%d acknowledged turns lost, want 0: each write waited for the replica", lost)
	}
	if got := s.WaitMasterChange(t, old); got != s.Servers[1] {
		t.Fatalf("new master %s, want the replica %s", got.Addr, s.Servers[1].Addr)
	}
}

// TestRedisWaitReplicasPause: with WaitReplicas on a master that has no
// replica (the plain test server), the first session write waits
// WaitTimeout and still succeeds; the writes after it send no WAIT for
// noReplicaPause instead of each paying the timeout. Without WaitReplicas
// no WAIT is sent at all.
func TestRedisWaitReplicasPause(t *testing.T) {
	for _, tc := range []struct {
		name  string
		wait  int
		waits int
	}{{"off", 0, 0}, {"no replica", 1, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			st := NewRedis(testClient(t, rec), Options{Prefix: testPrefix(t), WaitReplicas: tc.wait, WaitTimeout: 20 * time.Millisecond})
			ctx := t.Context()
			if err := st.CreateSession(ctx, session.New("CA-wait", "ch", "ag", time.Now())); err != nil {
				t.Fatalf("CreateSession: %v", err)
			}
			for range 3 {
				if _, err := st.UpdateSession(ctx, "CA-wait", func(s *session.Session) error { s.Record(time.Now(), "tick", ""); return nil }); err != nil {
					t.Fatalf("UpdateSession: %v", err)
				}
			}
			waits := 0
			rec.mu.Lock()
			for _, args := range rec.cmds {
				if fmt.Sprint(args[0]) == "wait" {
					waits++
				}
			}
			rec.mu.Unlock()
			if waits != tc.waits {
				t.Fatalf("WAIT sent %d times in 4 session writes, want %d", waits, tc.waits)
			}
			if s, err := st.Session(ctx, "CA-wait"); err != nil || len(s.Timeline) != 4 {
				t.Fatalf("session after the writes: %v, %v; want 4 timeline events", s, err)
			}
		})
	}
}
