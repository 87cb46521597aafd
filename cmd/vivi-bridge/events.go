package main

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vivi/bridge/session"
)

// eventingStore is the store as the rest of the app sees it: the write that
// ends a call counts it in callsEnded. (Call events are queued by the store
// itself, in the transaction of the write that records them: the
// Options.Outbox hook, delivery.Entries.)
type eventingStore struct {
	storeAPI
	callsEnded *prometheus.CounterVec // nil: not counted
}

// newCallsEnded is vivi_calls_ended_total. A call ends once, in whichever
// component ends its session (the bridge at a hang-up, the refer outcome
// after a transfer, a callback for a call that never streamed), so it is
// counted here, where every session write passes, and not per media stream
// (a transfer stops one stream and may start another: that is
// vivi_bridge_streams_ended_total).
func newCallsEnded() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "vivi", Name: "calls_ended_total",
		Help: "Calls ended (sessions that reached state ended on this pod), by end reason.",
	}, []string{"reason"})
}

// UpdateSession applies fn and counts the call ended by the stored run of
// fn (fn may run several times; the last run is the stored one).
func (e eventingStore) UpdateSession(ctx context.Context, callSID string, fn func(*session.Session) error) (*session.Session, error) {
	wasEnded := false
	out, err := e.storeAPI.UpdateSession(ctx, callSID, func(s *session.Session) error {
		wasEnded = s.State == session.Ended
		return fn(s)
	})
	if err != nil {
		return out, err
	}
	if e.callsEnded != nil && out != nil && !wasEnded && out.State == session.Ended {
		e.callsEnded.WithLabelValues(out.EndReason).Inc()
	}
	return out, nil
}
