package store

import "time"

// Defaults of Options.
const (
	DefaultPrefix    = "vivi:"
	DefaultActiveTTL = 4 * time.Hour
	DefaultRetention = 168 * time.Hour
)

// maxTxAttempts bounds the optimistic retry loop of read-modify-write operations.
const maxTxAttempts = 20

// subscriberBuffer is how many messages a subscriber may lag behind before
// new messages to it are dropped (publishers never block).
const subscriberBuffer = 64

// Options configures a store. Zero fields take the defaults.
type Options struct {
	// Prefix starts every Redis key and pub/sub channel name (Redis only). Default "vivi:".
	Prefix string
	// ActiveTTL is the expiry of a non-terminal session, refreshed on every write. Default 4h.
	ActiveTTL time.Duration
	// Retention is the expiry of a terminal (transferred or ended) session. Default 168h.
	Retention time.Duration
	// Now is the clock. Default time.Now. Memory uses it for every expiry;
	// Redis uses it for index scores only (Redis expires keys on its own clock).
	Now func() time.Time
	// WaitReplicas (Redis only) is how many replicas must have a session
	// write (WAIT) before CreateSession and UpdateSession return, so that a
	// write acknowledged to the call is not lost when its master dies and a
	// replica takes over (Redis replicates asynchronously). 0, the default,
	// waits for none: a single server has no replica.
	WaitReplicas int
	// WaitTimeout bounds that wait. Default 250 ms. A write whose replicas
	// do not confirm in time is still a write (it is on the master); the
	// store then stops waiting for noReplicaPause, so that a master left
	// without a replica (after a failover) costs one timeout, not one per write.
	WaitTimeout time.Duration
	// Outbox, when set, gives the outbox entries of every session write
	// (CreateSession, UpdateSession); they are appended in the same
	// transaction. Nil: session writes append nothing.
	Outbox OutboxFunc
}

func (o Options) withDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.ActiveTTL <= 0 {
		o.ActiveTTL = DefaultActiveTTL
	}
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = DefaultWaitTimeout
	}
	return o
}

// ttlFor returns how long a session in a state with the given terminality is kept.
func (o Options) ttlFor(terminal bool) time.Duration {
	if terminal {
		return o.Retention
	}
	return o.ActiveTTL
}

// score is the index score of a session written at t: milliseconds since the
// epoch, exact in a float64. Both stores order session lists by it, newest
// first, ties broken by call SID descending (what ZREVRANGE does).
func score(t time.Time) float64 { return float64(t.UnixMilli()) }
