package delivery_test

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vivi/bridge/delivery"
	"github.com/vivi/bridge/store"
)

// A channel whose receiver is down holds at most MaxHeld/8 entries in
// memory: the others stay pending, so another channel's events flow; once
// the receiver is back, every entry of the dead channel is delivered once,
// in order per call.
func TestChannelQuotaIsolates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		down := true
		r := newReceiver(func(n int, w http.ResponseWriter) int {
			mu.Lock()
			defer mu.Unlock()
			status := http.StatusNoContent
			if down {
				status = http.StatusServiceUnavailable
			}
			w.WriteHeader(status)
			return status
		})
		live := newReceiver(nil)
		client := &http.Client{Transport: roundTrip(func(req *http.Request) (*http.Response, error) {
			if strings.HasPrefix(req.URL.Path, "/live") {
				return live.client().Transport.RoundTrip(req)
			}
			return r.client().Transport.RoundTrip(req)
		})}
		st := memEnv(t, eventsChannel("dead", "https://hooks.example/dead"), eventsChannel("live", "https://hooks.example/live"))
		run(t, delivery.New(delivery.Config{Outbox: st, Channels: st, Client: client, AllowPrivate: true,
			Consumer: "pod-a", Jitter: identity, MaxHeld: 16}))
		settle()
		want := map[string][]string{}
		for i := range 6 {
			sid := "CAdead" + strconv.Itoa(i)
			want[sid] = placeCall(t, st, sid, "dead", 4) // 24 entries: more than MaxHeld
		}
		synctest.Wait()
		placeCall(t, st, "CAlive", "live", 1)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if len(live.requests()) != 1 {
			t.Fatal("the live channel's event was not posted while the dead channel's entries are held")
		}
		mu.Lock()
		down = false
		mu.Unlock()
		time.Sleep(3 * time.Hour)
		synctest.Wait()
		got := map[string][]string{}
		for _, id := range delivered(r.requests()) {
			sid := strings.Split(id, "_")[1]
			got[sid] = append(got[sid], id)
		}
		for sid, ids := range want {
			if !slices.Equal(got[sid], ids) {
				t.Errorf("%s: delivered %v, want %v", sid, got[sid], ids)
			}
		}
		for i := range 6 {
			if es, _ := st.ClaimOutbox(context.Background(), store.OutboxShard("CAdead"+strconv.Itoa(i)), "pod-x"); len(es) != 0 {
				t.Fatalf("still pending: %d", len(es))
			}
		}
	})
}

// A job that never ends does not take the event workers, and one channel
// has at most Workers/2 posts in flight.
func TestJobAndChannelWorkers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newReceiver(nil)
		var mu sync.Mutex
		inA, maxA := 0, 0
		client := &http.Client{Transport: roundTrip(func(req *http.Request) (*http.Response, error) {
			if strings.HasPrefix(req.URL.Path, "/a") {
				mu.Lock()
				inA++
				maxA = max(maxA, inA)
				mu.Unlock()
				time.Sleep(8 * time.Second)
				mu.Lock()
				inA--
				mu.Unlock()
			}
			return r.client().Transport.RoundTrip(req)
		})}
		st := memEnv(t, eventsChannel("a", "https://hooks.example/a"), eventsChannel("b", "https://hooks.example/b"))
		block := make(chan struct{})
		job := jobFunc(func(ctx context.Context, e store.OutboxEntry) delivery.JobResult {
			select {
			case <-block:
			case <-ctx.Done():
			}
			return delivery.JobResult{Done: true}
		})
		run(t, delivery.New(delivery.Config{Outbox: st, Channels: st, Client: client, AllowPrivate: true,
			Consumer: "pod-a", Workers: 4, JobWorkers: 1, Jobs: map[string]delivery.JobHandler{delivery.JobAnalyze: job}}))
		t.Cleanup(func() { close(block) })
		settle()
		for i := range 4 {
			if err := st.AppendOutbox(context.Background(), store.OutboxEntry{Kind: store.OutboxJob,
				EventID: "job_" + strconv.Itoa(i), CallSID: "CAjob" + strconv.Itoa(i), Type: delivery.JobAnalyze}); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 4 {
			placeCall(t, st, "CAa"+strconv.Itoa(i), "a", 1)
		}
		start := time.Now()
		placeCall(t, st, "CAb", "b", 1)
		r.wait(t, 5)
		var bAt time.Time
		for _, q := range r.requests() {
			if strings.HasPrefix(q.header.Get("webhook-id"), "evt_CAb_") {
				bAt = q.at
			}
		}
		if bAt.Sub(start) != 0 {
			t.Fatalf("channel b's event waited %v behind jobs and channel a", bAt.Sub(start))
		}
		if maxA != 2 {
			t.Fatalf("channel a had %d posts in flight at most, want 2 (Workers/2)", maxA)
		}
	})
}
