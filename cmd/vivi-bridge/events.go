package main

import (
	"context"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/session"
)

// eventingStore is the store as the rest of the app sees it: every session
// write that adds timeline events also posts them, in order, to the call's
// channel eventsUrl (through the sink, which never blocks).
type eventingStore struct {
	storeAPI
	sink *channel.EventSink
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
	before := 0
	out, err := e.storeAPI.UpdateSession(ctx, callSID, func(s *session.Session) error {
		before = len(s.Timeline)
		return fn(s)
	})
	if err != nil {
		return out, err
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
