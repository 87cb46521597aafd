package delivery

import (
	"encoding/json"
	"time"

	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/store"
)

// Types of entries besides the timeline's own event types.
const (
	// TypeAnalyzed is the event type of session.EventAnalyzed as posted.
	TypeAnalyzed = "call.analyzed"
	// JobAnalyze is the job of a call that became terminal.
	JobAnalyze = "analyze"
)

// eventBody is the JSON posted for one call event.
type eventBody struct {
	ID        string            `json:"id"`
	Type      string            `json:"type"`
	CallSID   string            `json:"callSid"`
	ChannelID string            `json:"channelId"`
	At        string            `json:"at"`
	Detail    string            `json:"detail,omitempty"`
	EndReason string            `json:"endReason,omitempty"`
	Usage     *session.Usage    `json:"usage,omitempty"`
	Analysis  *session.Analysis `json:"analysis,omitempty"`
}

// Entries is the store.OutboxFunc of the bridge: one event entry per
// timeline event recorded by the write (Seq above prev.Seq; events of an
// older version, Seq 0, get none), and the "analyze" job when the write
// makes the session terminal. It is pure, as the store requires.
func Entries(prev store.SessionMark, s *session.Session) []store.OutboxEntry {
	var out []store.OutboxEntry
	for _, ev := range s.Timeline {
		if ev.Seq == 0 || (prev.Exists && ev.Seq <= prev.Seq) {
			continue
		}
		b := eventBody{ID: session.EventID(s.CallSID, ev.Seq), Type: ev.Type, CallSID: s.CallSID,
			ChannelID: s.ChannelID, At: ev.At.UTC().Format(time.RFC3339Nano), Detail: ev.Detail}
		switch ev.Type {
		case session.EventAnalyzed:
			b.Type, b.Analysis = TypeAnalyzed, s.Analysis
		case session.EventEnded, session.EventTransferred:
			b.EndReason, b.Usage = s.EndReason, s.Usage
		}
		body, err := json.Marshal(b)
		if err != nil {
			continue // plain strings and numbers: never fails
		}
		out = append(out, store.OutboxEntry{Kind: store.OutboxEvent, EventID: b.ID, CallSID: s.CallSID,
			ChannelID: s.ChannelID, Type: b.Type, At: ev.At, Body: body})
	}
	if s.State.Terminal() && (!prev.Exists || !prev.State.Terminal()) {
		out = append(out, store.OutboxEntry{Kind: store.OutboxJob, EventID: "job_" + s.CallSID + "_" + JobAnalyze,
			CallSID: s.CallSID, ChannelID: s.ChannelID, Type: JobAnalyze, At: s.UpdatedAt})
	}
	return out
}
