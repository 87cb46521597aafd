package redistest

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterNodeTimeout is the cluster-node-timeout of StartCluster's nodes:
// how long a master must be unreachable before its replica takes over.
// Short, so failovers happen in seconds; not so short that a loaded test
// machine triggers them by itself.
const ClusterNodeTimeout = 2 * time.Second

// Cluster is a Redis Cluster of three masters with one replica each, six
// redis-server processes on loopback ports (no persistence), started by
// StartCluster and killed when the test ends.
type Cluster struct {
	// Addrs are the addresses of all six nodes: the seeds a cluster client
	// (redis.NewUniversalClient with several Addrs) starts from.
	Addrs []string
	// Nodes are the processes, in the order of Addrs.
	Nodes []*Node
	// Started is how long the cluster took to start and agree (cluster_state:ok).
	Started time.Duration
}

// StartCluster starts a three-master Redis Cluster with one replica per
// master (`redis-cli --cluster create --cluster-replicas 1`) and returns
// once every node reports cluster_state:ok, all agree on the slot map and
// every replica is in sync. It fails t, never skips, when redis-server or
// redis-cli is missing.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	redisBinaries(t)
	begin := time.Now()
	root := t.TempDir()
	ports := freePorts(t, 12) // six client ports, then six bus ports
	c := &Cluster{}
	for i := range 6 {
		n := startNode(t, root, ports[i], []string{
			"cluster-enabled yes",
			"cluster-port " + strconv.Itoa(ports[6+i]),
			"cluster-config-file nodes.conf",
			"cluster-node-timeout " + strconv.FormatInt(ClusterNodeTimeout.Milliseconds(), 10),
			// A replica may always take over, however long since it last
			// heard from its master (the tests kill masters on purpose).
			"cluster-replica-validity-factor 0",
			"protected-mode no",
		})
		c.Nodes = append(c.Nodes, n)
		c.Addrs = append(c.Addrs, n.Addr)
	}
	nodesUp := time.Since(begin)
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	created := time.Since(begin)
	c.WaitStable(t)
	stable := time.Since(begin)
	pollState(t, startTimeout, "every replica in sync and known to every node", func(ctx context.Context) error {
		for _, n := range c.Nodes {
			slots, _, err := slotMap(ctx, n.Admin())
			if err != nil {
				return fmt.Errorf("%s: %w", n.Addr, err)
			}
			for _, s := range slots {
				if s.Master == "" || len(s.Replicas) != 1 {
					return fmt.Errorf("%s: %w: slots %d-%d: master %q, replicas %v", n.Addr, errNotYet, s.Start, s.End, s.Master, s.Replicas)
				}
			}
		}
		for _, m := range c.Masters(t) {
			info, err := m.Admin().Info(ctx, "replication").Result()
			if err != nil {
				return err
			}
			if infoField(info, "connected_slaves") != "1" || !strings.Contains(infoField(info, "slave0"), "state=online") {
				return fmt.Errorf("master %s: %w (connected_slaves:%s slave0:%s)", m.Addr, errNotYet,
					infoField(info, "connected_slaves"), infoField(info, "slave0"))
			}
		}
		return nil
	})
	c.Started = time.Since(begin)
	t.Logf("redistest: Redis Cluster of 3 masters + 3 replicas on %v up in %v (processes %v, redis-cli --cluster create %v, cluster_state:ok %v, replicas synced and known %v)",
		c.Addrs, c.Started.Round(time.Millisecond), nodesUp.Round(time.Millisecond), (created - nodesUp).Round(time.Millisecond),
		(stable - created).Round(time.Millisecond), (c.Started - stable).Round(time.Millisecond))
	return c
}

// node returns the node listening on addr, or nil.
func (c *Cluster) node(addr string) *Node {
	for _, n := range c.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// alive returns the nodes whose process still runs.
func (c *Cluster) alive() []*Node {
	var out []*Node
	for _, n := range c.Nodes {
		if n.Alive() {
			out = append(out, n)
		}
	}
	return out
}

// slotRange is one range of the slot map: its master and live replicas.
type slotRange struct {
	Start, End int
	Master     string   // "" when the range's master has failed
	Replicas   []string // replicas that have not failed
}

// slotMap reads CLUSTER SHARDS from n as slot ranges sorted by start, and
// as text ("start-end master replicas..." lines) for comparing two nodes'.
func slotMap(ctx context.Context, n *redis.Client) ([]slotRange, string, error) {
	shards, err := n.ClusterShards(ctx).Result()
	if err != nil {
		return nil, "", err
	}
	var out []slotRange
	for _, sh := range shards {
		var master string
		var replicas []string
		for _, nd := range sh.Nodes {
			// "loading" is also a replica that has not yet seen a write
			// (its offset is 0); only a failed node is left out.
			if nd.Health == "fail" || nd.Health == "failed" {
				continue
			}
			addr := net.JoinHostPort(nd.IP, strconv.FormatInt(nd.Port, 10))
			if nd.Role == "master" {
				master = addr
			} else {
				replicas = append(replicas, addr)
			}
		}
		slices.Sort(replicas)
		for _, r := range sh.Slots {
			out = append(out, slotRange{Start: int(r.Start), End: int(r.End), Master: master, Replicas: replicas})
		}
	}
	slices.SortFunc(out, func(a, b slotRange) int { return a.Start - b.Start })
	var b strings.Builder
	for _, r := range out {
		fmt.Fprintf(&b, "%d-%d %s %v\n", r.Start, r.End, r.Master, r.Replicas)
	}
	return out, b.String(), nil
}

// WaitStable waits until every live node reports cluster_state:ok, all of
// them give the same slot map, every slot is covered, and every master in
// that map is a live process. It is how a test waits for a failover to
// settle.
func (c *Cluster) WaitStable(t testing.TB) {
	t.Helper()
	pollState(t, startTimeout, "the cluster to be stable (cluster_state:ok, one slot map)", func(ctx context.Context) error {
		var want string
		for _, n := range c.alive() {
			cl := n.Admin()
			info, err := cl.ClusterInfo(ctx).Result()
			if err != nil {
				return fmt.Errorf("%s: %w", n.Addr, err)
			}
			if infoField(info, "cluster_state") != "ok" || infoField(info, "cluster_slots_ok") != "16384" {
				return fmt.Errorf("%s: %w (cluster_state:%s cluster_slots_ok:%s)", n.Addr, errNotYet,
					infoField(info, "cluster_state"), infoField(info, "cluster_slots_ok"))
			}
			slots, m, err := slotMap(ctx, cl)
			if err != nil {
				return fmt.Errorf("%s: %w", n.Addr, err)
			}
			covered := 0
			for _, s := range slots {
				covered += s.End - s.Start + 1
				if m := c.node(s.Master); m == nil || !m.Alive() {
					return fmt.Errorf("%s: %w: slots %d-%d have no live master", n.Addr, errNotYet, s.Start, s.End)
				}
			}
			if covered != 16384 {
				return fmt.Errorf("%s: %w: %d slots covered", n.Addr, errNotYet, covered)
			}
			if want == "" {
				want = m
			} else if m != want {
				return fmt.Errorf("%w: nodes disagree on the slot map:\n%s\nvs\n%s", errNotYet, want, m)
			}
		}
		return nil
	})
}

// slotEntry returns the slot map entry holding key's slot, read from a live node.
func (c *Cluster) slotEntry(t testing.TB, key string) slotRange {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, n := range c.alive() {
		cl := n.Admin()
		slot, err := cl.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			continue
		}
		slots, _, err := slotMap(ctx, cl)
		if err != nil {
			continue
		}
		for _, s := range slots {
			if int64(s.Start) <= slot && slot <= int64(s.End) {
				return s
			}
		}
	}
	t.Fatalf("redistest: no live node knows the slot of %q", key)
	return slotRange{}
}

// MasterFor returns the node that is master of key's slot (hash tags count,
// so "vivi:{sess}:active" names the sessions' slot).
func (c *Cluster) MasterFor(t testing.TB, key string) *Node {
	t.Helper()
	s := c.slotEntry(t, key)
	n := c.node(s.Master)
	if n == nil {
		t.Fatalf("redistest: master %q of %q is not one of ours", s.Master, key)
	}
	return n
}

// ReplicaFor returns a replica of key's slot.
func (c *Cluster) ReplicaFor(t testing.TB, key string) *Node {
	t.Helper()
	s := c.slotEntry(t, key)
	for _, addr := range s.Replicas {
		if n := c.node(addr); n != nil && n.Alive() {
			return n
		}
	}
	t.Fatalf("redistest: the slot of %q has no live replica (%v)", key, s.Replicas)
	return nil
}

// Masters returns the live masters of the slot map.
func (c *Cluster) Masters(t testing.TB) []*Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, n := range c.alive() {
		slots, _, err := slotMap(ctx, n.Admin())
		if err != nil {
			continue
		}
		var out []*Node
		for _, s := range slots {
			if m := c.node(s.Master); m != nil && m.Alive() && !slices.Contains(out, m) {
				out = append(out, m)
			}
		}
		return out
	}
	t.Fatal("redistest: no live node answers CLUSTER SLOTS")
	return nil
}

// WaitMasterChange waits until the cluster is stable with key's slot served
// by a master other than old, and returns the new master.
func (c *Cluster) WaitMasterChange(t testing.TB, key string, old *Node) *Node {
	t.Helper()
	pollState(t, startTimeout, "a new master of "+key, func(context.Context) error {
		for _, n := range c.alive() {
			if slotMasterAt(n, key) == old.Addr {
				return fmt.Errorf("%w: %s still names %s", errNotYet, n.Addr, old.Addr)
			}
		}
		return nil
	})
	c.WaitStable(t)
	return c.MasterFor(t, key)
}

// slotMasterAt is the master of key's slot in n's slot map ("" on error).
func slotMasterAt(n *Node, key string) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	cl := n.Admin()
	slot, err := cl.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		return ""
	}
	slots, _, err := slotMap(ctx, cl)
	if err != nil {
		return ""
	}
	for _, s := range slots {
		if int64(s.Start) <= slot && slot <= int64(s.End) {
			return s.Master
		}
	}
	return ""
}

// ManualFailover runs CLUSTER FAILOVER on replica (the graceful, operator
// initiated hand-over: the master stops taking writes until the replica has
// caught up, so nothing acknowledged is lost).
func (c *Cluster) ManualFailover(t testing.TB, replica *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := replica.Admin().ClusterFailover(ctx).Err(); err != nil {
		t.Fatalf("redistest: CLUSTER FAILOVER on %s: %v", replica.Addr, err)
	}
}
