package store

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/vivi/bridge/internal/redistest"
)

// TestRedisCluster runs the conformance suite against a three-master Redis
// Cluster (one replica each) on loopback ports, through the client
// cmd/vivi-bridge's openStore builds for REDIS_ADDRS without a master name.
func TestRedisCluster(t *testing.T) {
	c := redistest.StartCluster(t)
	client := NewUniversalClient(&redis.UniversalOptions{Addrs: c.Addrs})
	t.Cleanup(func() { _ = client.Close() })
	if _, ok := client.(*redis.ClusterClient); !ok {
		t.Fatalf("client for %d addresses is a %T, want *redis.ClusterClient", len(c.Addrs), client)
	}
	testStore(t, func(t *testing.T, opts Options) Store {
		opts.Prefix = ownPrefix(t)
		opts.WaitReplicas = 1 // as openStore sets it for Cluster and Sentinel
		return NewRedis(client, opts)
	})
}

// TestRedisSentinel runs the conformance suite against a master and replica
// watched by three sentinels, through the client openStore builds for
// REDIS_ADDRS (the sentinels) with REDIS_MASTER_NAME.
func TestRedisSentinel(t *testing.T) {
	s := redistest.StartSentinel(t)
	client := NewUniversalClient(&redis.UniversalOptions{Addrs: s.Addrs, MasterName: s.MasterName})
	t.Cleanup(func() { _ = client.Close() })
	if _, ok := client.(*redis.Client); !ok { // NewFailoverClient returns a *redis.Client
		t.Fatalf("client with a master name is a %T, want the failover *redis.Client", client)
	}
	testStore(t, func(t *testing.T, opts Options) Store {
		opts.Prefix = ownPrefix(t)
		opts.WaitReplicas = 1 // as openStore sets it for Cluster and Sentinel
		return NewRedis(client, opts)
	})
}

// ownPrefix is a key prefix unique to t, for servers started by the test
// itself (they are killed with their data when it ends; no cleanup needed).
func ownPrefix(t *testing.T) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "test:" + strings.NewReplacer(" ", "_", "/", ".").Replace(t.Name()) + ":" + hex.EncodeToString(b[:]) + ":"
}
