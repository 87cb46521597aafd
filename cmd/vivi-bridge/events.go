package main

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/session"
)

// eventingStore is the store as the rest of the app sees it: every session
// write that adds timeline events also posts them, in order, to the call's
// channel eventsUrl (through the sink, which never blocks), and the write
// that ends a call counts it in callsEnded.
type eventingStore struct {
	storeAPI
	sink       *channel.EventSink
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

// CreateSession stores s and posts its timeline events.
func (e eventingStore) CreateSession(ctx context.Context, s *session.Session) error {
	if err := e.storeAPI.CreateSession(ctx, s); err != nil {
		return err
	}
	e.post(s, 0)
	return nil
}

// UpdateSession applies fn and posts the timeline events that the stored
// run of fn added (fn may run several times; the last run is the stored one).
func (e eventingStore) UpdateSession(ctx context.Context, callSID string, fn func(*session.Session) error) (*session.Session, error) {
	before, wasEnded := 0, false
	out, err := e.storeAPI.UpdateSession(ctx, callSID, func(s *session.Session) error {
		before, wasEnded = len(s.Timeline), s.State == session.Ended
		return fn(s)
	})
	if err != nil {
		return out, err
	}
	if e.callsEnded != nil && out != nil && !wasEnded && out.State == session.Ended {
		e.callsEnded.WithLabelValues(out.EndReason).Inc()
	}
	e.post(out, before)
	return out, nil
}

// post sends the timeline events of s from index from on.
func (e eventingStore) post(s *session.Session, from int) {
	if s == nil || from >= len(s.Timeline) {
		return
	}
	for _, ev := range s.Timeline[from:] {
		e.sink.Post(s.CallSID, s.ChannelID, ev, nil)
	}
}
