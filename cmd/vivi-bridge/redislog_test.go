package main

import (
	"context"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestRedisLoggerGoesThroughZap: go-redis's Printf lines become zap warn
// lines of logger "redis", with a URL password scrubbed.
func TestRedisLoggerGoesThroughZap(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	l := redisLogger{zap.New(core).Named("redis")}
	l.Printf(context.Background(), "redis: %s: connection pool: failed to dial after %d attempts", "redis://:s3cretpass@10.0.0.1:6379", 5)
	all := logs.All()
	if len(all) != 1 || all[0].Level != zapcore.WarnLevel || all[0].LoggerName != "redis" {
		t.Fatalf("entries %+v", all)
	}
	if m := all[0].Message; strings.Contains(m, "s3cretpass") || !strings.Contains(m, "failed to dial after 5 attempts") {
		t.Fatalf("message %q", m)
	}
}
