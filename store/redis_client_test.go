package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"
)

// redisErr is a reply error as go-redis returns it (it implements redis.Error).
type redisErr string

func (e redisErr) Error() string { return string(e) }
func (redisErr) RedisError()     {}

// TestStaleSlotMap: which command errors make a Cluster client reload its
// slot map (TestRedisClusterFailover shows the reload on a real Cluster).
func TestStaleSlotMap(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	tests := map[string]struct {
		err  error
		want bool
	}{
		"nil":                {nil, false},
		"key missing":        {redis.Nil, false},
		"tx conflict":        {redis.TxFailedErr, false},
		"cancelled":          {context.Canceled, false},
		"deadline":           {fmt.Errorf("x: %w", context.DeadlineExceeded), false},
		"connection refused": {refused, true},
		"connection lost":    {io.EOF, true},
		"cut mid-reply":      {fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		"moved":              {redisErr("MOVED 3999 127.0.0.1:6381"), true},
		"ask":                {redisErr("ASK 3999 127.0.0.1:6381"), true},
		"replica":            {redisErr("READONLY You can't write against a read only replica."), true},
		"cluster down":       {redisErr("CLUSTERDOWN The cluster is down"), true},
		"wrong type":         {redisErr("WRONGTYPE Operation against a key holding the wrong kind of value"), false},
		"app error":          {errors.New("channel in use"), false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := staleSlotMap(tc.err); got != tc.want {
				t.Fatalf("staleSlotMap(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
