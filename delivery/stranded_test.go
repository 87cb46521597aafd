package delivery_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vivi/bridge/delivery"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/store"
)

// faulty is a Memory store with faults injected into the outbox calls
// of one consumer.
type faulty struct {
	*store.Memory
	mu sync.Mutex
	// read, when set, runs instead of a read (next is the real one).
	read func(ctx context.Context, shards []int, next func(block time.Duration) ([]store.OutboxEntry, error)) ([]store.OutboxEntry, error)
	// acquire, when set, answers AcquireShard instead.
	acquire func(shard int) (bool, error)
	// onClaim, when set, is called after each claim.
	onClaim func(shard int)
	reads   []readCall
}

type readCall struct {
	at     time.Time
	shards []int
}

func (f *faulty) ReadOutbox(ctx context.Context, consumer string, shards []int, count int, block time.Duration) ([]store.OutboxEntry, error) {
	f.mu.Lock()
	read := f.read
	f.reads = append(f.reads, readCall{time.Now(), slices.Clone(shards)})
	f.mu.Unlock()
	next := func(b time.Duration) ([]store.OutboxEntry, error) {
		return f.Memory.ReadOutbox(ctx, consumer, shards, count, b)
	}
	if read != nil {
		return read(ctx, shards, next)
	}
	return next(block)
}

func (f *faulty) AcquireShard(ctx context.Context, shard int, consumer string, ttl time.Duration) (bool, error) {
	f.mu.Lock()
	acquire := f.acquire
	f.mu.Unlock()
	if acquire != nil {
		return acquire(shard)
	}
	return f.Memory.AcquireShard(ctx, shard, consumer, ttl)
}

func (f *faulty) ClaimOutboxPage(ctx context.Context, shard int, consumer, after string, limit int) ([]store.OutboxEntry, error) {
	es, err := f.Memory.ClaimOutboxPage(ctx, shard, consumer, after, limit)
	f.mu.Lock()
	onClaim := f.onClaim
	f.mu.Unlock()
	if onClaim != nil {
		onClaim(shard)
	}
	return es, err
}

func (f *faulty) set(fn func(f *faulty)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// record appends n digit events to a call.
func record(t *testing.T, st sessionStore, sid string, from, n int) []string {
	t.Helper()
	var ids []string
	for i := from; i < from+n; i++ {
		if _, err := st.UpdateSession(context.Background(), sid, func(s *session.Session) error {
			s.Record(time.Now(), session.EventDigit, strconv.Itoa(i))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, session.EventID(sid, int64(i)))
	}
	return ids
}

// A read whose reply is lost (it ran: the entry is pending for the pod)
// strands nothing: the pending list is claimed again before the next
// entries of the call, which are delivered after it, in order.
func TestLostReadReplyNotStranded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newReceiver(nil)
		mem := memEnv(t, eventsChannel("pbx", "https://hooks.example/e"))
		f := &faulty{Memory: mem}
		var lost atomic.Bool
		f.read = func(ctx context.Context, shards []int, next func(time.Duration) ([]store.OutboxEntry, error)) ([]store.OutboxEntry, error) {
			es, err := next(time.Second)
			if len(es) > 0 && lost.CompareAndSwap(false, true) {
				return nil, errors.New("i/o timeout") // the entries were taken: the reply is lost
			}
			return es, err
		}
		run(t, delivery.New(delivery.Config{Outbox: f, Channels: mem, Client: r.client(), AllowPrivate: true,
			Consumer: "pod-a", Jitter: identity}))
		settle()
		want := placeCall(t, mem, "CA1", "pbx", 1)
		synctest.Wait()
		want = append(want, record(t, mem, "CA1", 2, 2)...)
		r.wait(t, 3)
		synctest.Wait()
		if !lost.Load() {
			t.Fatal("no read reply was lost")
		}
		if got := delivered(r.requests()); !slices.Equal(got, want) {
			t.Fatalf("delivered %v, want %v (the lost one first, each once)", got, want)
		}
	})
}

// A shard given up (beyond the fair share) while a read covering it is
// still running is released only once the read returned: what the read
// took is then claimed by the next owner, and delivered.
func TestReleaseWaitsForReadInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newReceiver(nil)
		mem := memEnv(t, eventsChannel("pbx", "https://hooks.example/e"))
		fa, fb := &faulty{Memory: mem}, &faulty{Memory: mem}
		var peers atomic.Int64
		peersFn := func(context.Context) (int, error) { return int(peers.Load()), nil }
		run(t, delivery.New(delivery.Config{Outbox: fa, Channels: mem, Client: r.client(), AllowPrivate: true,
			Consumer: "pod-a", Jitter: identity, Peers: peersFn}))
		settle()
		// pod-a's next read stalls (its reply is slow) past the lease TTL,
		// then takes what is there, before pod-b reads anything.
		entered, letA, doneA, letB := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
		var once sync.Once
		fa.set(func(f *faulty) {
			f.read = func(ctx context.Context, shards []int, next func(time.Duration) ([]store.OutboxEntry, error)) ([]store.OutboxEntry, error) {
				stall := false
				once.Do(func() { stall = true })
				if !stall {
					return next(time.Second)
				}
				close(entered)
				<-letA
				defer close(doneA)
				return next(0)
			}
		})
		fb.read = func(ctx context.Context, shards []int, next func(time.Duration) ([]store.OutboxEntry, error)) ([]store.OutboxEntry, error) {
			<-letB
			return next(time.Second)
		}
		<-entered
		peers.Store(1) // pod-b comes: pod-a keeps 8 shards and gives up the others
		var sid string
		for i := 0; ; i++ {
			if sid = "CArel" + strconv.Itoa(i); store.OutboxShard(sid) >= 8 {
				break
			}
		}
		run(t, delivery.New(delivery.Config{Outbox: fb, Channels: mem, Client: r.client(), AllowPrivate: true,
			Consumer: "pod-b", Jitter: identity, Peers: peersFn}))
		time.Sleep(30 * time.Second) // pod-a gives the shards up; pod-b tries them
		want := placeCall(t, mem, sid, "pbx", 1)
		close(letA) // pod-a's stalled read takes the entry of a shard it gives up
		<-doneA
		close(letB)
		got := r.wait(t, 1)
		if ids := delivered(got); !slices.Equal(ids, want) {
			t.Fatalf("delivered %v, want %v", ids, want)
		}
	})
}

// A lease whose renewal fails is held no longer than TTL - TTL/5 after
// its last renewal: no read covers the shard after that, and an entry
// appended then is not posted by this pod.
func TestUnrenewedLeaseIsLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newReceiver(nil)
		mem := memEnv(t, eventsChannel("pbx", "https://hooks.example/e"))
		f := &faulty{Memory: mem}
		run(t, delivery.New(delivery.Config{Outbox: f, Channels: mem, Client: r.client(), AllowPrivate: true,
			Consumer: "pod-a", Jitter: identity}))
		settle()
		failFrom := time.Now()
		f.set(func(f *faulty) {
			f.acquire = func(int) (bool, error) { return false, errors.New("connection refused") }
		})
		time.Sleep(20 * time.Second)
		placeCall(t, mem, "CA1", "pbx", 1)
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := len(r.requests()); n != 0 {
			t.Fatalf("%d posts after the lease was lost, want none", n)
		}
		// The last renewal was at most Renew (5 s) before failFrom.
		limit := failFrom.Add(15*time.Second - 3*time.Second)
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, rc := range f.reads {
			if rc.at.After(limit) && len(rc.shards) > 0 {
				t.Fatalf("read of %v at %v, past the lease (%v)", rc.shards, rc.at.Sub(failFrom), limit.Sub(failFrom))
			}
		}
	})
}

// A new owner claims once on acquiring and again after the previous
// owner's last possible read: an entry that read took after the first
// claim is delivered, before the call's later entry the new owner read.
func TestNewOwnerClaimsAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, ra := newReceiver(nil), newReceiver(nil) // pod-b's posts, pod-a's
		mem := memEnv(t, eventsChannel("pbx", "https://hooks.example/e"))
		fa, fb := &faulty{Memory: mem}, &faulty{Memory: mem}
		run(t, delivery.New(delivery.Config{Outbox: fa, Channels: mem, Client: ra.client(), AllowPrivate: true,
			Consumer: "pod-a", Jitter: identity}))
		settle()
		sid := "CAown"
		shard := store.OutboxShard(sid)
		entered, letA, doneA, letB, claimedB := make(chan struct{}), make(chan struct{}), make(chan struct{}),
			make(chan struct{}), make(chan struct{})
		var onceA, onceB sync.Once
		fa.set(func(f *faulty) {
			f.acquire = func(int) (bool, error) { return false, errors.New("connection refused") }
			f.read = func(ctx context.Context, shards []int, next func(time.Duration) ([]store.OutboxEntry, error)) ([]store.OutboxEntry, error) {
				stall := false
				onceA.Do(func() { stall = true })
				if !stall {
					return next(time.Second)
				}
				close(entered)
				<-letA // the reply of a read that ran late
				defer close(doneA)
				return next(0)
			}
		})
		fb.read = func(ctx context.Context, shards []int, next func(time.Duration) ([]store.OutboxEntry, error)) ([]store.OutboxEntry, error) {
			<-letB
			return next(time.Second)
		}
		fb.onClaim = func(s int) {
			if s == shard {
				onceB.Do(func() { close(claimedB) })
			}
		}
		<-entered
		run(t, delivery.New(delivery.Config{Outbox: fb, Channels: mem, Client: r.client(), AllowPrivate: true,
			Consumer: "pod-b", Jitter: identity}))
		<-claimedB // pod-b took the shard (pod-a's lease expired) and claimed it
		want := placeCall(t, mem, sid, "pbx", 1)
		close(letA) // pod-a's late read takes it
		<-doneA
		want = append(want, record(t, mem, sid, 2, 1)...)
		close(letB) // pod-b reads the call's next entry
		r.wait(t, 2)
		synctest.Wait()
		if got := delivered(r.requests()); !slices.Equal(got, want) {
			t.Fatalf("delivered %v, want %v (in order, each once)", got, want)
		}
		if n := len(ra.requests()); n != 0 {
			t.Fatalf("pod-a posted %d events after losing the shard", n)
		}
	})
}

// An event retried by an earlier owner continues its attempts and waits
// out the backoff its delivery record names, instead of starting at 1 s.
func TestTakeoverContinuesBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newReceiver(nil)
		st := memEnv(t, eventsChannel("pbx", "https://hooks.example/e"))
		ids := placeCall(t, st, "CA1", "pbx", 1)
		next := time.Now().Add(time.Minute)
		if err := st.SetDelivery(context.Background(), "CA1", store.Delivery{EventID: ids[0], Type: "answered",
			State: store.DeliveryRetrying, Attempts: 6, CreatedAt: time.Now(), NextAttempt: &next}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		run(t, newDeliverer(st, r, nil))
		got := r.wait(t, 1)
		if at := got[0].at.Sub(start); at != time.Minute {
			t.Fatalf("posted after %v, want the minute left of the earlier owner's backoff", at)
		}
		synctest.Wait()
		ds, _ := st.Deliveries(context.Background(), "CA1")
		if len(ds) != 1 || ds[0].Attempts != 7 {
			t.Fatalf("delivery %+v, want attempt 7", ds)
		}
	})
}

// A draining pod takes no new shards; the share counts the pod itself.
func TestDrainingTakesNoShards(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memEnv(t)
		one := func(context.Context) (int, error) { return 1, nil }
		d := newDeliverer(st, newReceiver(nil), func(c *delivery.Config) { c.Peers = one })
		run(t, d)
		synctest.Wait()
		free := func() int {
			n := 0
			for s := range store.OutboxShards {
				if ok, _ := st.AcquireShard(context.Background(), s, "probe", time.Millisecond); ok {
					n++
				}
			}
			return n
		}
		if n := free(); n != 8 {
			t.Fatalf("%d shards free with one other pod, want 8 (16 over 2)", n)
		}
		d2 := newDeliverer(st, newReceiver(nil), func(c *delivery.Config) { c.Consumer = "pod-b"; c.Peers = one })
		d2.Draining()
		run(t, d2)
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := free(); n != 8 {
			t.Fatalf("%d shards free, want 8: the draining pod took some", n)
		}
	})
}
