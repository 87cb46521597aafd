package channel_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"reflect"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/store"
)

// newRedisStore returns a store on the real Redis at 127.0.0.1:6379 under
// a key prefix of its own, whose keys are deleted when the test ends.
func newRedisStore(t *testing.T) *store.Redis {
	t.Helper()
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	if err := client.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("Redis must run at 127.0.0.1:6379 for this test (start redis-server): %v", err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix := "test:channel:" + strings.ReplaceAll(t.Name(), "/", "_") + ":" + hex.EncodeToString(b) + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		iter := client.Scan(ctx, 0, prefix+"*", 100).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if len(keys) > 0 {
			client.Del(ctx, keys...)
		}
		client.Close()
	})
	return store.NewRedis(client, store.Options{Prefix: prefix})
}

// TestApplyOnRedis runs the apply path on the Redis store: created, routed,
// idempotent, and a refused file changes nothing.
func TestApplyOnRedis(t *testing.T) {
	e := newEnv(t)
	e.dns.setA("pbx.acme.test", "198.51.100.20")
	rs := newRedisStore(t)
	prov := e.provisioner(rs)
	ctx := context.Background()

	if _, err := prov.Apply(ctx, mustParse(t, goodYAML)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	m, err := channel.NewRouter(rs).Route(ctx, "198.51.100.20", "1001")
	if err != nil || m.Channel.ID != "acme" || m.Agent.ID != "front" {
		t.Fatalf("Route = %+v, %v", m, err)
	}
	before := takeSnapshot(t, rs)
	res, err := prov.Apply(ctx, mustParse(t, goodYAML))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range append(res.Agents, res.Channels...) {
		if c.Action != channel.ActionUnchanged {
			t.Errorf("second apply: %+v", c)
		}
	}
	bad := strings.Replace(goodYAML, "pbx.acme.test", "missing.acme.test", 1)
	if _, err := prov.Apply(ctx, mustParse(t, bad)); err == nil {
		t.Fatal("a file with an unresolvable host was applied")
	}
	if after := takeSnapshot(t, rs); !reflect.DeepEqual(before, after) {
		t.Errorf("store changed:\n%+v\n%+v", before, after)
	}
}
