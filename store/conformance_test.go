package store

import (
	"context"
	"encoding/json"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/internal/testwait"
	"github.com/vivi/bridge/session"
)

// Store is the whole API that Memory and Redis both implement; the
// conformance suite runs against it.
type Store interface {
	Ping(ctx context.Context) error

	SaveAgent(ctx context.Context, a channel.Agent) error
	Agent(ctx context.Context, id string) (channel.Agent, error)
	Agents(ctx context.Context) ([]channel.Agent, error)
	DeleteAgent(ctx context.Context, id string) error

	SaveChannel(ctx context.Context, c channel.Channel) error
	SaveChannelIf(ctx context.Context, c channel.Channel, prev *channel.Channel) error
	SaveAgentIf(ctx context.Context, a channel.Agent, prev *channel.Agent) error
	Channel(ctx context.Context, id string) (channel.Channel, error)
	Channels(ctx context.Context) ([]channel.Channel, error)
	DeleteChannel(ctx context.Context, id string) error
	ChannelByOrigin(ctx context.Context, ip, ext string) (channel.Channel, error)
	Apply(ctx context.Context, agents []channel.Agent, channels []channel.Channel) error

	CreateSession(ctx context.Context, s *session.Session) error
	Session(ctx context.Context, callSID string) (*session.Session, error)
	UpdateSession(ctx context.Context, callSID string, fn func(*session.Session) error) (*session.Session, error)
	Sessions(ctx context.Context, active bool, limit int) ([]*session.Session, error)
	ClaimToken(ctx context.Context, id string, ttl time.Duration) (bool, error)

	Publish(ctx context.Context, topic string, msg []byte) error
	Subscribe(ctx context.Context, topic string) (<-chan []byte, func(), error)

	BeatPod(ctx context.Context, pod string, ready bool, now time.Time) error
	ReadyPods(ctx context.Context, since time.Time) ([]string, error)

	Outbox
}

var (
	_ Store = (*Memory)(nil)
	_ Store = (*Redis)(nil)
)

// newStoreFunc returns an empty store built with opts, cleaned up with t.
type newStoreFunc = func(t *testing.T, opts Options) Store

// testStore is the conformance suite: every store must pass all of it.
func testStore(t *testing.T, newStore newStoreFunc) {
	tests := map[string]func(t *testing.T, newStore newStoreFunc){
		"ping":                 testPing,
		"check and set":        testCheckAndSet,
		"agents":               testAgents,
		"channels":             testChannels,
		"routing":              testRouting,
		"conflict":             testConflict,
		"apply all or nothing": testApply,
		"delete agent in use":  testDeleteAgentInUse,
		"sessions":             testSessions,
		"update fn error":      testUpdateFnError,
		"list sessions":        testListSessions,
		"concurrent updates":   testConcurrentUpdates,
		"claim token":          testClaimToken,
		"session expiry":       testSessionExpiry,
		"pod presence":         testPodPresence,
		"outbox session hook":  testOutboxHook,
		"outbox claim and ack": testOutboxClaim,
		"outbox multi shard":   testOutboxMultiShard,
		"outbox lease":         testOutboxLease,
		"outbox park":          testOutboxPark,
		"outbox deliveries":    testOutboxDeliveries,
	}
	names := make([]string, 0, len(tests))
	for name := range tests {
		names = append(names, name)
	}
	sort.Strings(names)
	// Pub/sub checks for leaked goroutines, so it runs before the parallel tests start.
	t.Run("publish subscribe", func(t *testing.T) { testPubSub(t, newStore) })
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tests[name](t, newStore)
		})
	}
}

func testPing(t *testing.T, newStore newStoreFunc) {
	st := newStore(t, Options{})
	if err := st.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

// clock is a settable Options.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// sameJSON fails unless got and want encode to the same JSON (how both stores keep values).
func sameJSON(t *testing.T, what string, got, want any) {
	t.Helper()
	g, err := json.Marshal(got)
	if err != nil {
		t.Fatalf("%s: marshal got: %v", what, err)
	}
	w, err := json.Marshal(want)
	if err != nil {
		t.Fatalf("%s: marshal want: %v", what, err)
	}
	if string(g) != string(w) {
		t.Fatalf("%s:\n got %s\nwant %s", what, g, w)
	}
}

// eventually waits up to 5 s for cond on the store under test (Redis
// expiring keys tells no one; see testwait.Until).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.Until(t, 5*time.Second, what, cond)
}

// testPodPresence: a pod is listed from its ready beat until it beats not
// ready, or its beats stop (entries older than the window asked for are
// not listed; those older than podsTTL are removed).
func testPodPresence(t *testing.T, newStore newStoreFunc) {
	st := newStore(t, Options{})
	ctx := context.Background()
	t0 := time.Unix(1_800_000_000, 0)
	for _, b := range []struct {
		pod   string
		ready bool
		at    time.Time
	}{{"pod-b", true, t0}, {"pod-a", true, t0.Add(time.Second)}, {"pod-c", true, t0.Add(-10 * time.Second)}} {
		if err := st.BeatPod(ctx, b.pod, b.ready, b.at); err != nil {
			t.Fatal(err)
		}
	}
	pods, err := st.ReadyPods(ctx, t0.Add(-3*time.Second))
	if err != nil || !slices.Equal(pods, []string{"pod-a", "pod-b"}) {
		t.Fatalf("ready pods %v (%v), want pod-a, pod-b (pod-c's beat is too old)", pods, err)
	}
	if err := st.BeatPod(ctx, "pod-a", false, t0.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	pods, err = st.ReadyPods(ctx, t0.Add(-3*time.Second))
	if err != nil || !slices.Equal(pods, []string{"pod-b"}) {
		t.Fatalf("after pod-a's not-ready beat: %v (%v), want pod-b", pods, err)
	}
	if err := st.BeatPod(ctx, "pod-d", true, t0.Add(podsTTL+time.Minute)); err != nil {
		t.Fatal(err)
	}
	pods, err = st.ReadyPods(ctx, time.Unix(0, 0))
	if err != nil || !slices.Equal(pods, []string{"pod-d"}) {
		t.Fatalf("after podsTTL: %v (%v), want only pod-d (older beats removed)", pods, err)
	}
}
