package channel

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/vivi/bridge/session"
)

// CallStore reads call sessions for the calls endpoints.
type CallStore interface {
	Session(ctx context.Context, callSID string) (*session.Session, error)
	Sessions(ctx context.Context, active bool, limit int) ([]*session.Session, error)
}

// CallCommander asks the pod that holds a live call's media stream to act on
// it; the call endpoints work from any pod.
type CallCommander interface {
	TransferCall(ctx context.Context, callSID, destination string) error
	HangupCall(ctx context.Context, callSID string) error
}

// Errors of the call endpoints.
var (
	// ErrCallNotLive: the call has no live media stream to act on.
	ErrCallNotLive = errors.New("call is not live")
	// ErrUnknownDestination: the name is not one of the call's agent's destinations.
	ErrUnknownDestination = errors.New("unknown transfer destination")
	// ErrNoOwner: no pod answered for the call's stream (it died, or no
	// longer holds the stream); nothing was done.
	ErrNoOwner = errors.New("no pod holds the call")
	// ErrCallBusy: the owning pod answered but its call did not take the
	// command in time; nothing was done.
	ErrCallBusy = errors.New("the call did not take the command in time")
	// ErrHangupFailed: with no live owner, the hang-up through the Twilio
	// REST API failed too.
	ErrHangupFailed = errors.New("hang-up through the Twilio REST API failed")
)

// defaultCallsLimit and maxCallsLimit bound GET /v1/calls.
const (
	defaultCallsLimit = 100
	maxCallsLimit     = 1000
)

// RegisterCalls adds the call endpoints to mux, behind Authorize:
// GET /v1/calls?state=active|ended&limit=N, GET /v1/calls/{callSid} (with
// "deliveries" when calls implements CallDeliveries),
// POST /v1/calls/{callSid}/transfer {"destination": name} and
// POST /v1/calls/{callSid}/hangup. Both answer 202 only once the owning pod
// acknowledged the command (its outcome then lands on the session); a
// hang-up whose owner does not answer is done through the Twilio REST API
// (202 if that worked). Otherwise an error and nothing done: 409
// call_not_live, 503 no_owner or call_busy, 422 unknown_destination, 502
// hangup_failed.
func (a *API) RegisterCalls(mux *http.ServeMux, calls CallStore, cmd CallCommander) {
	c := &callsAPI{api: a, calls: calls, cmd: cmd}
	mux.Handle("GET /v1/calls", a.Authorize(http.HandlerFunc(c.list)))
	mux.Handle("GET /v1/calls/{callSid}", a.Authorize(http.HandlerFunc(c.get)))
	mux.Handle("POST /v1/calls/{callSid}/transfer", a.Authorize(http.HandlerFunc(c.transfer)))
	mux.Handle("POST /v1/calls/{callSid}/hangup", a.Authorize(http.HandlerFunc(c.hangup)))
}

type callsAPI struct {
	api   *API
	calls CallStore
	cmd   CallCommander
}

func (c *callsAPI) list(w http.ResponseWriter, r *http.Request) {
	active := true
	switch r.URL.Query().Get("state") {
	case "", "active":
	case "ended":
		active = false
	default:
		WriteError(w, http.StatusBadRequest, "invalid_state", "state must be active or ended")
		return
	}
	limit, ok := listLimit(w, r)
	if !ok {
		return
	}
	ss, err := c.calls.Sessions(r.Context(), active, limit)
	if err != nil {
		c.api.fail(w, r, err)
		return
	}
	if ss == nil {
		ss = []*session.Session{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"calls": ss})
}

func (c *callsAPI) get(w http.ResponseWriter, r *http.Request) {
	s, err := c.calls.Session(r.Context(), r.PathValue("callSid"))
	if err != nil {
		c.fail(w, r, err)
		return
	}
	cd, ok := c.calls.(CallDeliveries)
	if !ok {
		writeJSON(w, http.StatusOK, s)
		return
	}
	ds, err := cd.CallDeliveries(r.Context(), s.CallSID)
	if err != nil {
		c.api.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		*session.Session
		Deliveries any `json:"deliveries"`
	}{s, ds})
}

func (c *callsAPI) transfer(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Destination string `json:"destination"`
	}
	if err := decodeBody(w, r, &body); err != nil {
		c.api.fail(w, r, err)
		return
	}
	if body.Destination == "" {
		WriteError(w, http.StatusUnprocessableEntity, "invalid_destination", "destination (a destination name of the call's agent) is required")
		return
	}
	sid := r.PathValue("callSid")
	if err := c.cmd.TransferCall(r.Context(), sid, body.Destination); err != nil {
		c.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"callSid": sid, "status": "transfer_requested", "destination": body.Destination})
}

func (c *callsAPI) hangup(w http.ResponseWriter, r *http.Request) {
	sid := r.PathValue("callSid")
	if err := c.cmd.HangupCall(r.Context(), sid); err != nil {
		c.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"callSid": sid, "status": "hangup_requested"})
}

func (c *callsAPI) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, session.ErrNotFound):
		WriteError(w, http.StatusNotFound, "not_found", "no call with that SID")
	case errors.Is(err, ErrCallNotLive):
		WriteError(w, http.StatusConflict, "call_not_live", err.Error())
	case errors.Is(err, ErrUnknownDestination):
		WriteError(w, http.StatusUnprocessableEntity, "unknown_destination", err.Error())
	case errors.Is(err, ErrNoOwner):
		WriteError(w, http.StatusServiceUnavailable, "no_owner", "no pod holds the call's stream; nothing was done")
	case errors.Is(err, ErrCallBusy):
		WriteError(w, http.StatusServiceUnavailable, "call_busy", "the call did not take the command in time; nothing was done")
	case errors.Is(err, ErrHangupFailed):
		WriteError(w, http.StatusBadGateway, "hangup_failed", "no pod holds the call's stream and the hang-up through Twilio failed")
	default:
		c.api.fail(w, r, err)
	}
}

// listLimit reads the ?limit=N of a list request (defaultCallsLimit when
// absent); a bad one is answered 400 invalid_limit and ok is false.
func listLimit(w http.ResponseWriter, r *http.Request) (limit int, ok bool) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return defaultCallsLimit, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxCallsLimit {
		WriteError(w, http.StatusBadRequest, "invalid_limit", "limit must be 1-1000")
		return 0, false
	}
	return n, true
}
