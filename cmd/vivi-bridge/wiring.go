package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/vivi/bridge/delivery"
	"github.com/vivi/bridge/store"
)

// newLogger builds the process logger from LOG_LEVEL and LOG_FORMAT.
func newLogger(c config, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(c.LogLevel)
	if err != nil {
		return nil, errConfig("LOG_LEVEL: %v", err)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "ts"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	ec.EncodeDuration = zapcore.SecondsDurationEncoder // numbers; our fields are *_s floats anyway
	var enc zapcore.Encoder
	if c.LogFormat == "console" {
		ec.EncodeLevel = zapcore.CapitalColorLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		enc = zapcore.NewJSONEncoder(ec)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl)
	return zap.New(core), nil
}

// openStore returns the Redis store when REDIS_URL or REDIS_ADDRS is set,
// else the in-memory one. The returned close func releases the client.
// REDIS_ADDRS with REDIS_MASTER_NAME names sentinels (a Sentinel client that
// follows the master they elect); REDIS_ADDRS with two or more addresses and
// no master name names Cluster seed nodes; one address alone is one server.
// store.NewUniversalClient bounds the timeouts and reloads a Cluster's slot
// map when a node fails, so a failover costs seconds.
func openStore(ctx context.Context, c config) (storeAPI, func(), error) {
	opts := store.Options{Prefix: c.RedisPrefix, Retention: c.SessionRetention, Outbox: delivery.Entries}
	var client redis.UniversalClient
	switch {
	case c.RedisURL != "":
		o, err := redis.ParseURL(c.RedisURL)
		if err != nil {
			return nil, nil, errConfig("REDIS_URL: %v", err)
		}
		client = redis.NewClient(o)
	case len(c.RedisAddrs) > 0:
		client = store.NewUniversalClient(&redis.UniversalOptions{Addrs: c.RedisAddrs, MasterName: c.RedisMasterName})
		if c.RedisMasterName != "" || len(c.RedisAddrs) > 1 {
			// Sentinel or Cluster: masters have replicas, and a session
			// write must be on one before the call counts it as written.
			opts.WaitReplicas = 1
		}
	default:
		return store.NewMemory(opts), func() {}, nil
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := client.Ping(pctx).Err(); err != nil {
		client.Close()
		return nil, nil, fmt.Errorf("redis: %w", err)
	}
	return store.NewRedis(client, opts), func() { client.Close() }, nil
}
