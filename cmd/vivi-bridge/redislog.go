package main

import (
	"context"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/vivi/bridge/internal/redact"
)

// redisLogger sends go-redis's own log lines (pool and reconnect trouble,
// printed to stderr by default) through zap, at warn: go-redis logs only
// what went wrong. The text is go-redis's and may quote an address with its
// password, so it is scrubbed like any outside text.
type redisLogger struct{ log *zap.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Warn(redact.Text(fmt.Sprintf(format, v...)))
}

var redisLoggerOnce sync.Once

// setRedisLogger installs log as go-redis's logger. It is a package global
// of go-redis, so the first logger set stays for the life of the process.
func setRedisLogger(log *zap.Logger) {
	redisLoggerOnce.Do(func() { redis.SetLogger(redisLogger{log.Named("redis")}) })
}
