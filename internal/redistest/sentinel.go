package redistest

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelDownAfter is the down-after-milliseconds of StartSentinel's
// sentinels: how long the master must be unreachable before they fail over.
const SentinelDownAfter = 2 * time.Second

// SentinelMasterName is the name the sentinels monitor the master under
// (REDIS_MASTER_NAME).
const SentinelMasterName = "vivi-test"

// Sentinel is a master, one replica and three sentinels (quorum 2) on
// loopback ports, started by StartSentinel and killed when the test ends.
type Sentinel struct {
	// MasterName is the monitored master's name (REDIS_MASTER_NAME).
	MasterName string
	// Addrs are the sentinels' addresses (REDIS_ADDRS with a master name).
	Addrs []string
	// Servers are the master and the replica, in their starting roles.
	Servers []*Node
	// Sentinels are the three sentinel processes, in the order of Addrs.
	Sentinels []*Node
	// Started is how long the set took to start and agree.
	Started time.Duration

	clients []*redis.SentinelClient
}

// StartSentinel starts a master, a replica of it and three sentinels that
// monitor it, and returns once the replica is in sync and every sentinel
// knows the replica and the two other sentinels. It fails t, never skips,
// when redis-server is missing.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	redisBinaries(t)
	begin := time.Now()
	root := t.TempDir()
	ports := freePorts(t, 5)
	s := &Sentinel{MasterName: SentinelMasterName}
	master := startNode(t, root, ports[0], []string{"protected-mode no"})
	replica := startNode(t, root, ports[1], []string{"protected-mode no", "replicaof 127.0.0.1 " + strconv.Itoa(ports[0])})
	s.Servers = []*Node{master, replica}
	pollState(t, startTimeout, "the replica in sync", func(ctx context.Context) error {
		info, err := replica.Admin().Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if infoField(info, "master_link_status") != "up" {
			return fmt.Errorf("%w: master_link_status:%s", errNotYet, infoField(info, "master_link_status"))
		}
		return nil
	})
	for _, p := range ports[2:] {
		n := startNode(t, root, p, []string{
			"protected-mode no",
			fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2", s.MasterName, ports[0]),
			fmt.Sprintf("sentinel down-after-milliseconds %s %d", s.MasterName, SentinelDownAfter.Milliseconds()),
			fmt.Sprintf("sentinel failover-timeout %s %d", s.MasterName, (10 * time.Second).Milliseconds()),
			fmt.Sprintf("sentinel parallel-syncs %s 1", s.MasterName),
		}, "--sentinel")
		s.Sentinels = append(s.Sentinels, n)
		s.Addrs = append(s.Addrs, n.Addr)
		sc := redis.NewSentinelClient(&redis.Options{Addr: n.Addr, MaxRetries: -1, DialTimeout: time.Second})
		t.Cleanup(func() { _ = sc.Close() })
		s.clients = append(s.clients, sc)
	}
	pollState(t, startTimeout, "every sentinel to know the replica and the other sentinels", func(ctx context.Context) error {
		for i, sc := range s.clients {
			m, err := sc.Master(ctx, s.MasterName).Result()
			if err != nil {
				return fmt.Errorf("%s: %w", s.Addrs[i], err)
			}
			if m["num-slaves"] != "1" || m["num-other-sentinels"] != "2" || m["flags"] != "master" {
				return fmt.Errorf("%s: %w (flags:%s num-slaves:%s num-other-sentinels:%s)", s.Addrs[i], errNotYet,
					m["flags"], m["num-slaves"], m["num-other-sentinels"])
			}
		}
		return nil
	})
	s.Started = time.Since(begin)
	t.Logf("redistest: master %s, replica %s, sentinels %v up in %v", master.Addr, replica.Addr, s.Addrs, s.Started.Round(time.Millisecond))
	return s
}

// server returns the master or replica process listening on addr, or nil.
func (s *Sentinel) server(addr string) *Node {
	for _, n := range s.Servers {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// Master returns the server every live sentinel names as master.
func (s *Sentinel) Master(t testing.TB) *Node {
	t.Helper()
	var m *Node
	pollState(t, startTimeout, "the sentinels to agree on a master", func(ctx context.Context) error {
		var err error
		m, err = s.agreedMaster(ctx, "")
		return err
	})
	return m
}

// agreedMaster returns the server that every live sentinel names as master
// (other than not), once that server says it is one.
func (s *Sentinel) agreedMaster(ctx context.Context, not string) (*Node, error) {
	var addr string
	for i, sc := range s.clients {
		if !s.Sentinels[i].Alive() {
			continue
		}
		hp, err := sc.GetMasterAddrByName(ctx, s.MasterName).Result()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.Addrs[i], err)
		}
		a := net.JoinHostPort(hp[0], hp[1])
		if addr != "" && a != addr {
			return nil, fmt.Errorf("%w: sentinels name %s and %s", errNotYet, addr, a)
		}
		addr = a
	}
	if addr == not {
		return nil, fmt.Errorf("%w: the master is still %s", errNotYet, not)
	}
	n := s.server(addr)
	if n == nil || !n.Alive() {
		return nil, fmt.Errorf("%w: master %s is not a live server of ours", errNotYet, addr)
	}
	info, err := n.Admin().Info(ctx, "replication").Result()
	if err != nil {
		return nil, err
	}
	if infoField(info, "role") != "master" {
		return nil, fmt.Errorf("%w: %s has role %s", errNotYet, addr, strings.TrimSpace(infoField(info, "role")))
	}
	return n, nil
}

// WaitMasterChange waits until every live sentinel names a master other
// than old and that server has taken the role, and returns it.
func (s *Sentinel) WaitMasterChange(t testing.TB, old *Node) *Node {
	t.Helper()
	var m *Node
	pollState(t, startTimeout, "a new master after "+old.Addr, func(ctx context.Context) error {
		var err error
		m, err = s.agreedMaster(ctx, old.Addr)
		return err
	})
	return m
}

// Failover runs SENTINEL FAILOVER on the first live sentinel: a promotion
// of the replica without waiting for the master to be down.
func (s *Sentinel) Failover(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i, sc := range s.clients {
		if s.Sentinels[i].Alive() {
			if err := sc.Failover(ctx, s.MasterName).Err(); err != nil {
				t.Fatalf("redistest: SENTINEL FAILOVER on %s: %v", s.Addrs[i], err)
			}
			return
		}
	}
	t.Fatal("redistest: no live sentinel")
}
