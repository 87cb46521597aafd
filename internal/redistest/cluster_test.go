package redistest

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestCluster: the helper's cluster serves a cluster client across all
// three masters, and a killed master's slot moves to its replica. (How a
// client copes with the failover is store's TestRedisClusterFailover.)
func TestCluster(t *testing.T) {
	c := StartCluster(t)
	ctx := t.Context()
	if got := len(c.Masters(t)); got != 3 {
		t.Fatalf("masters = %d, want 3", got)
	}
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
	defer client.Close()
	for _, k := range []string{"a", "b", "c", "{sess}:x"} {
		if err := client.Set(ctx, "redistest:"+k, "v", time.Minute).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
	}
	old := c.MasterFor(t, "{sess}")
	replica := c.ReplicaFor(t, "{sess}")
	old.Kill()
	begin := time.Now()
	if got := c.WaitMasterChange(t, "{sess}", old); got != replica {
		t.Fatalf("new master %s, want the replica %s", got.Addr, replica.Addr)
	}
	t.Logf("replica %s took over from %s in %v", replica.Addr, old.Addr, time.Since(begin).Round(time.Millisecond))
}

// TestSentinel: the helper's sentinels hand the master role to the replica
// when the master is killed.
func TestSentinel(t *testing.T) {
	s := StartSentinel(t)
	old := s.Master(t)
	if old != s.Servers[0] {
		t.Fatalf("master = %s, want %s", old.Addr, s.Servers[0].Addr)
	}
	old.Kill()
	begin := time.Now()
	if got := s.WaitMasterChange(t, old); got != s.Servers[1] {
		t.Fatalf("new master %s, want the replica %s", got.Addr, s.Servers[1].Addr)
	}
	t.Logf("sentinels promoted %s in %v", s.Servers[1].Addr, time.Since(begin).Round(time.Millisecond))
}
