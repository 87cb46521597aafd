package main

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vivi/bridge/internal/redistest"
	"github.com/vivi/bridge/internal/testwait"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/store"
)

// openTestStore runs openStore on env (REDIS_* variables) and returns the
// Redis store it built, closed when t ends.
func openTestStore(t *testing.T, env map[string]string) *store.Redis {
	t.Helper()
	c, err := loadConfig(func(k string) string { return env[k] }, false)
	if err != nil {
		t.Fatalf("loadConfig: %v", err)
	}
	st, closeStore, err := openStore(t.Context(), c)
	if err != nil {
		t.Fatalf("openStore: %v", err)
	}
	awaitDialProbes(t)
	t.Cleanup(closeStore)
	rs, ok := st.(*store.Redis)
	if !ok {
		t.Fatalf("openStore gave a %T, want *store.Redis", st)
	}
	return rs
}

// awaitDialProbes, registered before the cleanup that closes a client,
// waits until go-redis's dial probes of dead nodes have ended: a pool that
// failed to dial probes on in a goroutine that notices the pool's close
// only after its 1 s pause, and TestMain's leak check would catch it.
func awaitDialProbes(t *testing.T) {
	t.Cleanup(func() {
		testwait.Until(t, 10*time.Second, "go-redis dial probes to end", func() bool {
			buf := make([]byte, 1<<20)
			return !bytes.Contains(buf[:runtime.Stack(buf, true)], []byte("pool.(*ConnPool).tryDial"))
		})
	})
}

// TestOpenStoreClusterFailover: REDIS_ADDRS naming the nodes of a real
// three-master Cluster (no master name) gives a store on the Cluster, and
// after the master of the sessions' slot is killed a session write lands
// again within seconds, on the promoted replica.
func TestOpenStoreClusterFailover(t *testing.T) {
	c := redistest.StartCluster(t)
	const prefix = "test:openstore:"
	st := openTestStore(t, map[string]string{"REDIS_ADDRS": strings.Join(c.Addrs, ","), "REDIS_PREFIX": prefix})
	ctx := t.Context()
	if err := st.CreateSession(ctx, session.New("CA-open", "ch", "ag", time.Now())); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	key := prefix + "{sess}:call:CA-open"
	old, replica := c.MasterFor(t, key), c.ReplicaFor(t, key)
	if n, err := old.Admin().Exists(ctx, key).Result(); err != nil || n != 1 {
		t.Fatalf("EXISTS %s on the slot's master %s = %d, %v: the store does not write to the Cluster", key, old.Addr, n, err)
	}
	old.Kill()
	killed := time.Now()
	for attempt := 1; ; attempt++ {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := st.UpdateSession(wctx, "CA-open", func(s *session.Session) error {
			s.Record(time.Now(), "tick", "")
			return nil
		})
		cancel()
		if err == nil {
			t.Logf("a session write landed %v after the master was killed (attempt %d)", time.Since(killed).Round(time.Millisecond), attempt)
			break
		}
		if time.Since(killed) > 20*time.Second {
			t.Fatalf("no session write landed within 20 s of the master's death (%d attempts): %v", attempt, err)
		}
	}
	if got := c.WaitMasterChange(t, key, old); got != replica {
		t.Fatalf("the sessions' slot went to %s, want its replica %s", got.Addr, replica.Addr)
	}
}

// TestOpenStoreSentinel: REDIS_ADDRS naming three sentinels with
// REDIS_MASTER_NAME gives a store on the master they monitor.
func TestOpenStoreSentinel(t *testing.T) {
	s := redistest.StartSentinel(t)
	const prefix = "test:openstore:"
	st := openTestStore(t, map[string]string{
		"REDIS_ADDRS": strings.Join(s.Addrs, ","), "REDIS_MASTER_NAME": s.MasterName, "REDIS_PREFIX": prefix,
	})
	ctx := t.Context()
	if err := st.CreateSession(ctx, session.New("CA-open", "ch", "ag", time.Now())); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	key := prefix + "{sess}:call:CA-open"
	if n, err := s.Master(t).Admin().Exists(ctx, key).Result(); err != nil || n != 1 {
		t.Fatalf("EXISTS %s on the master = %d, %v: the store does not write through the sentinels' master", key, n, err)
	}
}
