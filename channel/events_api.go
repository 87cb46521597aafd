package channel

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"
)

// CallDeliveries is what a CallStore may also implement: the delivery
// states of a call's events, added to GET /v1/calls/{callSid} as
// "deliveries" (any JSON-encodable list; cmd adapts the store's).
type CallDeliveries interface {
	CallDeliveries(ctx context.Context, callSID string) (any, error)
}

// ParkedEvent is an outbox entry given up on, as the API lists it.
type ParkedEvent struct {
	ID       string          `json:"id"`
	EventID  string          `json:"eventId"`
	CallSID  string          `json:"callSid"`
	Kind     string          `json:"kind"`
	Type     string          `json:"type"`
	Reason   string          `json:"reason"`
	ParkedAt time.Time       `json:"parkedAt"`
	Body     json.RawMessage `json:"body,omitempty"`
}

// ParkedEvents lists parked entries and sends one again.
type ParkedEvents interface {
	ParkedEvents(ctx context.Context, limit int) ([]ParkedEvent, error)
	// RedeliverParked appends the parked entry id to the outbox again (its
	// event id unchanged) and removes it from the list; an error wrapping
	// ErrNotFound when there is none.
	RedeliverParked(ctx context.Context, id string) error
}

// RegisterParked adds, behind Authorize: GET /v1/events/parked?limit=N
// (newest first, default 100, at most 1000) and
// POST /v1/events/parked/{id}/redeliver (202; 404 not_found).
func (a *API) RegisterParked(mux *http.ServeMux, p ParkedEvents) {
	mux.Handle("GET /v1/events/parked", a.Authorize(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit, ok := listLimit(w, r)
		if !ok {
			return
		}
		list, err := p.ParkedEvents(r.Context(), limit)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		if list == nil {
			list = []ParkedEvent{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"parked": list})
	})))
	mux.Handle("POST /v1/events/parked/{id}/redeliver", a.Authorize(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if err := p.RedeliverParked(r.Context(), id); err != nil {
			if errors.Is(err, ErrNotFound) {
				WriteError(w, http.StatusNotFound, "not_found", "no parked entry with that id")
				return
			}
			a.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusAccepted, map[string]string{"id": id, "status": "redelivery_queued"})
	})))
}
