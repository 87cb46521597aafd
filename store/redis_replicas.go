package store

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultWaitTimeout is Options.WaitTimeout's default.
const DefaultWaitTimeout = 250 * time.Millisecond

// noReplicaPause is how long the Redis store writes sessions without
// waiting for replicas after a wait timed out.
const noReplicaPause = 10 * time.Second

// waitReplicas runs WAIT on tx's connection, right after a session write's
// EXEC on it, when Options.WaitReplicas asks for it: the write is then on
// that many replicas before the caller hears it succeeded. A wait that
// times out is not an error (the write is on the master, and failing it
// would make the caller apply its change twice); it pauses waiting for
// noReplicaPause. An error of WAIT itself (the connection died after EXEC)
// is returned: whether the write survived is unknown, and the caller's
// retry may apply it a second time rather than lose it.
func (r *Redis) waitReplicas(ctx context.Context, tx *redis.Tx) error {
	n := r.opts.WaitReplicas
	if n <= 0 || time.Now().UnixNano() < r.noReplicaUntil.Load() {
		return nil
	}
	acked, err := tx.Wait(ctx, n, r.opts.WaitTimeout).Result()
	if err != nil {
		return err
	}
	if acked < int64(n) {
		r.noReplicaUntil.Store(time.Now().Add(noReplicaPause).UnixNano())
	}
	return nil
}
