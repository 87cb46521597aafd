package channel_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/store"
)

// fakeParked is a ParkedEvents with function fields.
type fakeParked struct {
	list      func(ctx context.Context, limit int) ([]channel.ParkedEvent, error)
	redeliver func(ctx context.Context, id string) error
}

func (f fakeParked) ParkedEvents(ctx context.Context, limit int) ([]channel.ParkedEvent, error) {
	return f.list(ctx, limit)
}
func (f fakeParked) RedeliverParked(ctx context.Context, id string) error {
	return f.redeliver(ctx, id)
}

// deliveriesStore is a CallStore that also gives delivery states.
type deliveriesStore struct {
	*store.Memory
	deliveries func(sid string) any
}

func (d deliveriesStore) CallDeliveries(_ context.Context, sid string) (any, error) {
	return d.deliveries(sid), nil
}

func TestParkedEventsAPI(t *testing.T) {
	at := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	var limits []int
	var redelivered []string
	p := fakeParked{
		list: func(_ context.Context, limit int) ([]channel.ParkedEvent, error) {
			limits = append(limits, limit)
			return []channel.ParkedEvent{{ID: "7-0", EventID: "evt_CA1_3", CallSID: "CA1", Kind: "event", Type: "ended",
				Reason: "retry horizon: last status 503", ParkedAt: at, Body: json.RawMessage(`{"type":"ended"}`)}}, nil
		},
		redeliver: func(_ context.Context, id string) error {
			if id != "7-0" {
				return fmt.Errorf("redeliver %s: %w", id, channel.ErrNotFound)
			}
			redelivered = append(redelivered, id)
			return nil
		},
	}
	e := &env{t: t}
	mux := http.NewServeMux()
	channel.NewAPI(channel.APIConfig{AdminToken: testToken}, nil).RegisterParked(mux, p)
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)

	status, body := e.do("GET", "/v1/events/parked?limit=5", nil)
	if status != 200 {
		t.Fatalf("list: %d %s", status, body)
	}
	got := decodeJSON[struct {
		Parked []map[string]any `json:"parked"`
	}](t, body)
	if len(got.Parked) != 1 || len(limits) != 1 || limits[0] != 5 {
		t.Fatalf("list %s (limits %v)", body, limits)
	}
	g := got.Parked[0]
	if g["id"] != "7-0" || g["eventId"] != "evt_CA1_3" || g["callSid"] != "CA1" || g["type"] != "ended" ||
		g["reason"] != "retry horizon: last status 503" || g["parkedAt"] != "2026-11-27T09:00:00Z" ||
		g["body"].(map[string]any)["type"] != "ended" {
		t.Fatalf("parked entry %v (the body is JSON, not a string)", g)
	}
	if status, _ := e.do("GET", "/v1/events/parked", nil); status != 200 || limits[1] != 100 {
		t.Fatalf("default limit: %d %v", status, limits)
	}
	status, body = e.do("GET", "/v1/events/parked?limit=0", nil)
	wantError(t, status, body, http.StatusBadRequest, "invalid_limit")

	if status, body := e.do("POST", "/v1/events/parked/7-0/redeliver", nil); status != http.StatusAccepted || len(redelivered) != 1 {
		t.Fatalf("redeliver: %d %s", status, body)
	}
	status, body = e.do("POST", "/v1/events/parked/8-0/redeliver", nil)
	wantError(t, status, body, http.StatusNotFound, "not_found")
}

func TestCallGetHasDeliveries(t *testing.T) {
	st := store.NewMemory(store.Options{})
	ds := deliveriesStore{Memory: st, deliveries: func(sid string) any {
		return []store.Delivery{{EventID: "evt_" + sid + "_1", Type: "answered", State: store.DeliveryDelivered, Attempts: 1}}
	}}
	e, _ := newCallsEnv(t, &fakeCommander{})
	mux := http.NewServeMux()
	channel.NewAPI(channel.APIConfig{AdminToken: testToken}, nil).RegisterCalls(mux, ds, &fakeCommander{})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	// The env's sessions, served through the store that gives deliveries.
	calls, _ := e.store.Sessions(context.Background(), true, 0)
	for _, s := range calls {
		if err := st.CreateSession(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	e.srv = srv
	status, body := e.do("GET", "/v1/calls/CA1", nil)
	if status != 200 {
		t.Fatalf("get: %d %s", status, body)
	}
	got := decodeJSON[struct {
		CallSID    string           `json:"callSid"`
		Deliveries []map[string]any `json:"deliveries"`
	}](t, body)
	if got.CallSID != "CA1" || len(got.Deliveries) != 1 || got.Deliveries[0]["id"] != "evt_CA1_1" || got.Deliveries[0]["state"] != "delivered" {
		t.Fatalf("call with deliveries: %s", body)
	}
}
