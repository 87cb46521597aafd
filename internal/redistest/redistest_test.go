package redistest

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestStopRestartSamePortEmpty(t *testing.T) {
	s := Start(t)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Set(ctx, "redistest:k", "v", 0).Err(); err != nil {
		t.Fatalf("set: %v", err)
	}
	s.Stop()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("ping succeeded on a stopped server")
	}
	s.Restart()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("ping after restart: %v", err)
	}
	if n, err := c.Exists(ctx, "redistest:k").Result(); err != nil || n != 0 {
		t.Fatalf("after restart: exists = %d, %v; want 0 (no persistence)", n, err)
	}
}

func TestShutdownResumeKeepsData(t *testing.T) {
	s := Start(t)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Set(ctx, "redistest:k", "v", 0).Err(); err != nil {
		t.Fatalf("set: %v", err)
	}
	s.Shutdown()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("ping succeeded on a shut down server")
	}
	s.Resume()
	if v, err := c.Get(ctx, "redistest:k").Result(); err != nil || v != "v" {
		t.Fatalf("after resume: %q, %v; want the data kept", v, err)
	}
	s.Shutdown()
	s.Restart()
	if n, _ := c.Exists(ctx, "redistest:k").Result(); n != 0 {
		t.Fatal("Restart after Shutdown kept the data")
	}
}
