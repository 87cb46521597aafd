package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestRedisLoggerGoesThroughZap: go-redis's Printf lines become zap warn
// lines of logger "redis", with a URL password scrubbed.
func TestRedisLoggerGoesThroughZap(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	l := newRedisLogger(zap.New(core).Named("redis"))
	l.Printf(context.Background(), "redis: %s: connection pool: failed to dial after %d attempts", "redis://:s3cretpass@10.0.0.1:6379", 5)
	all := logs.All()
	if len(all) != 1 || all[0].Level != zapcore.WarnLevel || all[0].LoggerName != "redis" {
		t.Fatalf("entries %+v", all)
	}
	if m := all[0].Message; strings.Contains(m, "s3cretpass") || !strings.Contains(m, "failed to dial after 5 attempts") {
		t.Fatalf("message %q", m)
	}
}

// TestRedisLoggerRateLimited: the same go-redis line repeated during an
// outage is logged once per redisLogEvery, with the count suppressed since;
// another kind of line is not held back by it.
func TestRedisLoggerRateLimited(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	now := time.Unix(1_800_000_000, 0)
	l := newRedisLogger(zap.New(core))
	l.now = func() time.Time { return now }
	const dial = "redis: connection pool: failed to dial after %d attempts: %v"
	for range 30 { // 3 s of go-redis retrying every 100 ms
		l.Printf(context.Background(), dial, 5, "connection refused")
		now = now.Add(100 * time.Millisecond)
	}
	l.Printf(context.Background(), "redis: discarding bad PubSub connection: %v", "EOF")
	now = now.Add(redisLogEvery)
	l.Printf(context.Background(), dial, 5, "connection refused")
	all := logs.All()
	if len(all) != 3 {
		t.Fatalf("%d lines, want 3: %+v", len(all), all)
	}
	if got := all[2].ContextMap()["suppressed"]; got != int64(29) {
		t.Fatalf("suppressed %v, want 29", got)
	}
}
