package store

import (
	"context"
	"hash/fnv"
	"time"

	"github.com/vivi/bridge/session"
)

// OutboxShards is the number of outbox streams. Every entry of a call goes
// to the shard of its call SID (OutboxShard), so a call's entries keep their
// order; a shard is consumed by one pod at a time (AcquireShard).
const OutboxShards = 16

// OutboxShard returns the shard of a call.
func OutboxShard(callSID string) int {
	h := fnv.New32a()
	h.Write([]byte(callSID))
	return int(h.Sum32() % OutboxShards)
}

// Kinds of outbox entries.
const (
	OutboxEvent = "event" // a call event to post to the channel's eventsUrl
	OutboxJob   = "job"   // work to do after the call (Type names it: "analyze")
)

// OutboxEntry is one entry of an outbox stream.
type OutboxEntry struct {
	// ID is the stream entry ID, set by the store when it was appended.
	ID string
	// Shard is set by the store on append: OutboxShard(CallSID) when
	// CallSID is set (a call's entries share one stream, so keep their
	// order), else as given.
	Shard int
	Kind  string
	// EventID is the entry's stable id (session.EventID for events): the
	// same event appended twice has the same EventID.
	EventID   string
	CallSID   string
	ChannelID string
	Type      string
	// At is when the event happened (the store sets it to now when zero) (the retry horizon counts from it).
	At time.Time
	// Body is the JSON body of an event, or the job's payload.
	Body []byte
}

// SessionMark is what a session was before a write: the outbox hook
// compares it with the session written.
type SessionMark struct {
	Exists bool
	Seq    int64
	State  session.State
}

// OutboxFunc returns the entries a session write appends to the outbox, in
// the same transaction as the write (so an event is queued exactly when the
// write that recorded it commits). It must be pure: it may run several
// times for one write (optimistic retries); the last run is the stored one.
type OutboxFunc func(prev SessionMark, s *session.Session) []OutboxEntry

// Delivery states.
const (
	DeliveryPending   = "pending"   // queued, not yet tried
	DeliveryRetrying  = "retrying"  // failed, tried again at NextAttempt
	DeliveryDelivered = "delivered" // the receiver answered 2xx
	DeliveryParked    = "parked"    // gave up after the retry horizon (or a permanent refusal)
)

// Delivery is the state of one event's delivery, kept per call.
type Delivery struct {
	EventID     string     `json:"id"`
	Type        string     `json:"type"`
	State       string     `json:"state"`
	Attempts    int        `json:"attempts"`
	CreatedAt   time.Time  `json:"createdAt"`
	LastAttempt *time.Time `json:"lastAttemptAt,omitempty"`
	NextAttempt *time.Time `json:"nextAttemptAt,omitempty"`
	DeliveredAt *time.Time `json:"deliveredAt,omitempty"`
	LastStatus  int        `json:"lastStatus,omitempty"` // HTTP status of the last attempt
	LastError   string     `json:"lastError,omitempty"`
}

// ParkedEntry is an outbox entry given up on, with why.
type ParkedEntry struct {
	// ID is the entry's id in the parked list (RedeliverParked takes it).
	ID       string
	Entry    OutboxEntry
	Reason   string
	ParkedAt time.Time
}

// Outbox is the durable queue of call events and post-call jobs. The Redis
// store keeps it in streams with a consumer group; Memory in process.
type Outbox interface {
	// AppendOutbox appends entries outside a session write (a job retried,
	// an event redelivered by an operator).
	AppendOutbox(ctx context.Context, entries ...OutboxEntry) error
	// AcquireShard takes or renews the lease of a shard for consumer for
	// ttl; false when another consumer holds it.
	AcquireShard(ctx context.Context, shard int, consumer string, ttl time.Duration) (bool, error)
	// ReleaseShard gives the lease up if consumer holds it.
	ReleaseShard(ctx context.Context, shard int, consumer string) error
	// ClaimOutbox moves every entry of shard pending for another consumer
	// (one that stopped or lost the lease) to consumer and returns them
	// with consumer's own pending entries, in stream order (XAUTOCLAIM).
	ClaimOutbox(ctx context.Context, shard int, consumer string) ([]OutboxEntry, error)
	// ClaimOutboxPage is one page of ClaimOutbox: with after "" it first
	// moves the entries pending for others to consumer; it returns up to
	// limit of consumer's pending entries after the ID after, in stream
	// order (fewer than limit: the list ends).
	ClaimOutboxPage(ctx context.Context, shard int, consumer, after string, limit int) ([]OutboxEntry, error)
	// ReadOutbox returns up to count new entries of shards for consumer,
	// waiting up to block for one (XREADGROUP >); they stay pending for
	// consumer until acknowledged.
	ReadOutbox(ctx context.Context, consumer string, shards []int, count int, block time.Duration) ([]OutboxEntry, error)
	// AckOutbox acknowledges and removes entries of shard.
	AckOutbox(ctx context.Context, shard int, ids ...string) error
	// ParkOutbox moves e out of its shard to the parked list.
	ParkOutbox(ctx context.Context, e OutboxEntry, reason string) error
	// Parked lists parked entries, newest first, at most limit (<= 0: 100).
	Parked(ctx context.Context, limit int) ([]ParkedEntry, error)
	// RedeliverParked appends the parked entry id to its shard again (same
	// EventID) and removes it from the parked list, atomically; an error
	// wrapping ErrNotFound when there is none.
	RedeliverParked(ctx context.Context, id string) (OutboxEntry, error)
	// SetDelivery records the delivery state of one event of a call.
	SetDelivery(ctx context.Context, callSID string, d Delivery) error
	// Deliveries returns the delivery states of a call's events, in order.
	Deliveries(ctx context.Context, callSID string) ([]Delivery, error)
}
