package delivery_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vivi/bridge/delivery"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/store"
)

func newDeliverer(st *store.Memory, r *receiver, mod func(*delivery.Config)) *delivery.Deliverer {
	cfg := delivery.Config{Outbox: st, Channels: st, Client: r.client(), AllowPrivate: true, Consumer: "pod-a",
		Jitter: identity}
	if mod != nil {
		mod(&cfg)
	}
	return delivery.New(cfg)
}

// A receiver failing twice then answering gets every event once per
// webhook-id (as a 2xx), in order; the failed one's retries carry the same
// id; the delivery state records the attempts; both signatures verify.
func TestRetriesDeliverOnceInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newReceiver(func(n int, w http.ResponseWriter) int {
			status := http.StatusNoContent
			if n < 2 {
				status = http.StatusServiceUnavailable
			}
			w.WriteHeader(status)
			return status
		})
		st := memEnv(t, eventsChannel("pbx", "https://hooks.example/e"))
		run(t, newDeliverer(st, r, nil))
		settle()
		want := placeCall(t, st, "CA1", "pbx", 4)
		got := r.wait(t, 6)
		synctest.Wait()
		if ids := delivered(r.requests()); !slices.Equal(ids, want) {
			t.Fatalf("delivered %v, want %v", ids, want)
		}
		for i := range 3 {
			if id := got[i].header.Get("webhook-id"); id != want[0] {
				t.Fatalf("request %d has webhook-id %s, want the retried %s", i, id, want[0])
			}
		}
		if gap := got[2].at.Sub(got[1].at); gap != 2*time.Second {
			t.Fatalf("second retry after %v, want 2s (1 s doubling)", gap)
		}
		for _, q := range got {
			verify(t, q)
		}
		ds, err := st.Deliveries(context.Background(), "CA1")
		if err != nil || len(ds) != 4 {
			t.Fatalf("Deliveries: %+v %v", ds, err)
		}
		if d := ds[0]; d.State != store.DeliveryDelivered || d.Attempts != 3 || d.LastStatus != 204 || d.DeliveredAt == nil {
			t.Fatalf("delivery of the retried event: %+v", d)
		}
		if d := ds[3]; d.State != store.DeliveryDelivered || d.Attempts != 1 || d.EventID != want[3] {
			t.Fatalf("delivery of the last event: %+v", d)
		}
	})
}

// Retry-After (seconds or an HTTP date) sets the wait before the next attempt.
func TestRetryAfterHonoured(t *testing.T) {
	for name, header := range map[string]func() string{
		"seconds": func() string { return "120" },
		"date":    func() string { return time.Now().Add(120 * time.Second).UTC().Format(http.TimeFormat) },
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newReceiver(func(n int, w http.ResponseWriter) int {
					if n == 0 {
						w.Header().Set("Retry-After", header())
						w.WriteHeader(http.StatusTooManyRequests)
						return http.StatusTooManyRequests
					}
					w.WriteHeader(http.StatusOK)
					return http.StatusOK
				})
				st := memEnv(t, eventsChannel("pbx", "https://hooks.example/e"))
				run(t, newDeliverer(st, r, nil))
				settle()
				placeCall(t, st, "CA1", "pbx", 1)
				got := r.wait(t, 2)
				if gap := got[1].at.Sub(got[0].at); gap < 119*time.Second || gap > 120*time.Second {
					t.Fatalf("retried after %v, want the 120 s asked for", gap)
				}
			})
		})
	}
}

// Past the retry horizon the entry is parked with the last status, and its
// delivery state says parked; the call's next event is not held by it.
func TestHorizonParks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newReceiver(func(n int, w http.ResponseWriter) int {
			w.WriteHeader(http.StatusServiceUnavailable)
			return http.StatusServiceUnavailable
		})
		st := memEnv(t, eventsChannel("pbx", "https://hooks.example/e"))
		run(t, newDeliverer(st, r, func(c *delivery.Config) { c.Horizon = 10 * time.Second }))
		settle()
		ids := placeCall(t, st, "CA1", "pbx", 1)
		// Attempts at 0, 1, 3 and 7 s; the next (15 s) is past the horizon.
		got := r.wait(t, 4)
		synctest.Wait()
		if n := len(r.requests()); n != 4 {
			t.Fatalf("%d attempts, want 4", n)
		}
		if at := got[3].at.Sub(got[0].at); at != 7*time.Second {
			t.Fatalf("last attempt at %v, want 7s", at)
		}
		parked, err := st.Parked(context.Background(), 10)
		if err != nil || len(parked) != 1 {
			t.Fatalf("Parked: %+v %v", parked, err)
		}
		if p := parked[0]; p.Entry.EventID != ids[0] || p.Reason != "retry horizon: last status 503" || p.Entry.CallSID != "CA1" {
			t.Fatalf("parked %+v", p)
		}
		ds, _ := st.Deliveries(context.Background(), "CA1")
		if len(ds) != 1 || ds[0].State != store.DeliveryParked || ds[0].Attempts != 4 || ds[0].LastStatus != 503 {
			t.Fatalf("delivery state %+v", ds)
		}
		// Nothing left pending.
		if es, _ := st.ClaimOutbox(context.Background(), store.OutboxShard("CA1"), "pod-x"); len(es) != 0 {
			t.Fatalf("still pending: %+v", es)
		}
	})
}

// A slow receiver of channel A does not delay channel B's events.
func TestSlowChannelDoesNotDelayOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newReceiver(nil)
		var slow []time.Time
		client := &http.Client{Transport: roundTrip(func(req *http.Request) (*http.Response, error) {
			if strings.HasPrefix(req.URL.Path, "/a") {
				time.Sleep(8 * time.Second) // the slow receiver, on the bubble's clock
				slow = append(slow, time.Now())
			}
			return r.client().Transport.RoundTrip(req)
		})}
		st := memEnv(t, eventsChannel("a", "https://hooks.example/a"), eventsChannel("b", "https://hooks.example/b"))
		d := delivery.New(delivery.Config{Outbox: st, Channels: st, Client: client, AllowPrivate: true,
			Consumer: "pod-a", Workers: 2})
		run(t, d)
		settle()
		start := time.Now()
		a := placeCall(t, st, "CAa", "a", 3)
		b := placeCall(t, st, "CAb", "b", 3)
		r.wait(t, 6)
		var bDone time.Time
		var gotA, gotB []string
		for _, q := range r.requests() {
			id := q.header.Get("webhook-id")
			if strings.HasPrefix(id, "evt_CAb_") {
				gotB, bDone = append(gotB, id), q.at
			} else {
				gotA = append(gotA, id)
			}
		}
		if !slices.Equal(gotA, a) || !slices.Equal(gotB, b) {
			t.Fatalf("order per call: a %v b %v", gotA, gotB)
		}
		if took := bDone.Sub(start); took != 0 {
			t.Fatalf("channel B's events took %v behind the slow channel A, want none", took)
		}
		if len(slow) != 3 || slow[2].Sub(start) != 24*time.Second {
			t.Fatalf("channel A's posts ended at %v, want one after the other every 8 s", slow)
		}
	})
}

// Entries are refused at delivery: a channel gone, a target the policy
// refuses, an unknown job; a channel without eventsUrl is skipped quietly.
func TestPolicyOutcomes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newReceiver(nil)
		quiet := eventsChannel("quiet", "")
		st := memEnv(t, eventsChannel("local", "https://127.0.0.1/e"), quiet)
		run(t, newDeliverer(st, r, func(c *delivery.Config) { c.AllowPrivate = false }))
		settle()
		placeCall(t, st, "CAgone", "nochannel", 1)
		placeCall(t, st, "CAlocal", "local", 1)
		placeCall(t, st, "CAquiet", "quiet", 1)
		if err := st.AppendOutbox(context.Background(), store.OutboxEntry{Kind: store.OutboxJob, EventID: "job_CAquiet_x",
			CallSID: "CAquiet", Type: "x"}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		parked, _ := st.Parked(context.Background(), 10)
		reasons := map[string]string{}
		for _, p := range parked {
			reasons[p.Entry.CallSID+" "+p.Entry.Kind] = p.Reason
		}
		if len(r.requests()) != 0 || len(parked) != 3 || reasons["CAgone event"] != "channel not found" ||
			!strings.HasPrefix(reasons["CAlocal event"], "target refused: ") || reasons["CAquiet job"] != `unknown job type "x"` {
			t.Fatalf("requests %d, parked %v", len(r.requests()), reasons)
		}
		for _, sid := range []string{"CAgone", "CAlocal", "CAquiet"} {
			if es, _ := st.ClaimOutbox(context.Background(), store.OutboxShard(sid), "pod-x"); len(es) != 0 {
				t.Fatalf("%s: still pending: %+v", sid, es)
			}
		}
	})
}

// jobFunc is a JobHandler from a func.
type jobFunc func(ctx context.Context, e store.OutboxEntry) delivery.JobResult

func (f jobFunc) Run(ctx context.Context, e store.OutboxEntry) delivery.JobResult { return f(ctx, e) }

// The analyze job of an ended call runs on its own chain: retried after
// RetryAfter, acknowledged once done, never holding the call's events.
func TestJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newReceiver(nil)
		st := memEnv(t, eventsChannel("pbx", "https://hooks.example/e"))
		var runs []time.Time
		job := jobFunc(func(ctx context.Context, e store.OutboxEntry) delivery.JobResult {
			runs = append(runs, time.Now())
			if len(runs) == 1 {
				return delivery.JobResult{RetryAfter: time.Minute}
			}
			return delivery.JobResult{Done: true}
		})
		run(t, newDeliverer(st, r, func(c *delivery.Config) { c.Jobs = map[string]delivery.JobHandler{delivery.JobAnalyze: job} }))
		settle()
		placeCall(t, st, "CA1", "pbx", 1)
		if _, err := st.UpdateSession(context.Background(), "CA1", func(s *session.Session) error {
			s.End("caller_hangup", time.Now())
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		r.wait(t, 2)
		time.Sleep(2 * time.Minute) // let the job's retry come, on the bubble's clock
		synctest.Wait()
		if len(runs) != 2 || runs[1].Sub(runs[0]) != time.Minute {
			t.Fatalf("job runs at %v, want two a minute apart", runs)
		}
		if es, _ := st.ClaimOutbox(context.Background(), store.OutboxShard("CA1"), "pod-x"); len(es) != 0 {
			t.Fatalf("still pending: %+v", es)
		}
	})
}
