package delivery_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/vivi/bridge/delivery"
	"github.com/vivi/bridge/internal/testwait"
	"github.com/vivi/bridge/store"
)

// redisStore is a store on the test Redis under a prefix unique to t
// (its keys deleted at the end; nothing else is touched).
func redisStore(t *testing.T) *store.Redis {
	t.Helper()
	url := os.Getenv("TEST_REDIS_URL")
	if url == "" {
		url = "redis://127.0.0.1:6379"
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(opt)
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "t-" + t.Name() + "-" + hex.EncodeToString(b[:]) + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		var keys []string
		iter := client.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		for _, k := range keys {
			client.Del(ctx, k)
		}
		client.Close()
	})
	if err := client.Ping(t.Context()).Err(); err != nil {
		t.Fatalf("Redis at %s: %v (the test needs a real Redis)", url, err)
	}
	return store.NewRedis(client, store.Options{Prefix: prefix, Outbox: delivery.Entries})
}

// Two pods: the first holds the shards and the calls' entries pending
// (its receiver fails) when it dies without releasing anything (SIGKILL);
// the second takes the shards once the leases expire, claims the pending
// entries and delivers each exactly once, in order per call.
func TestTakeoverAfterKill(t *testing.T) {
	st := redisStore(t)
	var up atomic.Bool
	r := newReceiver(func(n int, w http.ResponseWriter) int {
		status := http.StatusServiceUnavailable
		if up.Load() {
			status = http.StatusNoContent
		}
		w.WriteHeader(status)
		return status
	})
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	for _, id := range []string{"a", "b"} {
		if err := st.SaveChannel(t.Context(), eventsChannel(id, srv.URL+"/"+id)); err != nil {
			t.Fatal(err)
		}
	}
	cfg := func(pod string) delivery.Config {
		return delivery.Config{Outbox: st, Channels: st, AllowPrivate: true, Consumer: pod,
			LeaseTTL: 300 * time.Millisecond, Renew: 100 * time.Millisecond}
	}
	pod1 := delivery.New(cfg("pod-1"))
	ctx1, kill := context.WithCancel(context.Background())
	done1 := make(chan struct{})
	go func() { pod1.Run(ctx1); close(done1) }()

	a := placeCall(t, st, "CAkill-a", "a", 4)
	b := placeCall(t, st, "CAkill-b", "b", 3)
	r.wait(t, 2) // both calls' first events tried and failed: all entries read by pod-1
	testwait.Until(t, 5*time.Second, "pod-1 holds every entry", func() bool {
		es, err := st.ReadOutbox(t.Context(), "probe", []int{store.OutboxShard("CAkill-a"), store.OutboxShard("CAkill-b")}, 100, 0)
		return err == nil && len(es) == 0
	})
	kill() // no Stop: leases and pending entries stay as they were
	<-done1
	up.Store(true)

	pod2 := delivery.New(cfg("pod-2"))
	run(t, pod2)
	testwait.Until(t, 10*time.Second, "pod-2 delivers every event", func() bool {
		return len(delivered(r.requests())) >= len(a)+len(b)
	})
	var gotA, gotB []string
	for _, id := range delivered(r.requests()) {
		if strings.HasPrefix(id, "evt_CAkill-a_") {
			gotA = append(gotA, id)
		} else {
			gotB = append(gotB, id)
		}
	}
	if !slices.Equal(gotA, a) || !slices.Equal(gotB, b) {
		t.Fatalf("delivered a %v b %v, want %v and %v (each once, in order)", gotA, gotB, a, b)
	}
	// Every entry acknowledged: none can be delivered again.
	testwait.Until(t, 5*time.Second, "no entry left pending", func() bool {
		for _, sid := range []string{"CAkill-a", "CAkill-b"} {
			es, err := st.ClaimOutbox(t.Context(), store.OutboxShard(sid), "probe")
			if err != nil || len(es) != 0 {
				return false
			}
		}
		return true
	})
	if n := len(delivered(r.requests())); n != len(a)+len(b) {
		t.Fatalf("%d deliveries, want %d", n, len(a)+len(b))
	}
}
