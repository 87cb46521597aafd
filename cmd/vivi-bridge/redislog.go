package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/vivi/bridge/internal/redact"
)

// redisLogger sends go-redis's own log lines (pool and reconnect trouble,
// printed to stderr by default) through zap, at warn: go-redis logs only
// what went wrong. The text is go-redis's and may quote an address with its
// password, so it is scrubbed like any outside text.
//
// While Redis is down go-redis repeats the same line every few hundred
// milliseconds per pool; the store watch already logs the outage once, so
// each kind of line (its format) is logged at most once per redisLogEvery,
// with the count of lines suppressed since.
type redisLogger struct {
	log *zap.Logger
	now func() time.Time // nil: time.Now

	mu   sync.Mutex
	seen map[string]*redisLogState
}

type redisLogState struct {
	last       time.Time
	suppressed int
}

// redisLogEvery is how often one kind of go-redis line is logged.
const redisLogEvery = 10 * time.Second

func newRedisLogger(log *zap.Logger) *redisLogger {
	return &redisLogger{log: log, seen: map[string]*redisLogState{}}
}

func (l *redisLogger) Printf(_ context.Context, format string, v ...any) {
	now := time.Now
	if l.now != nil {
		now = l.now
	}
	t := now()
	l.mu.Lock()
	st := l.seen[format]
	if st == nil {
		if len(l.seen) >= 64 { // formats are go-redis's constants; bound it anyway
			clear(l.seen)
		}
		st = &redisLogState{}
		l.seen[format] = st
	}
	if !st.last.IsZero() && t.Sub(st.last) < redisLogEvery {
		st.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := st.suppressed
	st.last, st.suppressed = t, 0
	l.mu.Unlock()
	l.log.Warn(redact.Text(fmt.Sprintf(format, v...)), zap.Int("suppressed", suppressed))
}

var redisLoggerOnce sync.Once

// setRedisLogger installs log as go-redis's logger. It is a package global
// of go-redis, so the first logger set stays for the life of the process.
func setRedisLogger(log *zap.Logger) {
	redisLoggerOnce.Do(func() { redis.SetLogger(newRedisLogger(log.Named("redis"))) })
}
