// Package session holds the call session model and its state machine.
//
// A Session is the record of one Twilio call from the voice webhook to its end:
// which channel and agent answered it, where its media stream runs, what
// happened (timeline), what was said (transcript) and every transfer attempt.
// The package does no I/O; the store persists sessions and the per-call owner
// in the bridge is the only writer while a stream is live.
package session

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// State is the lifecycle state of a call session.
type State string

// The states of a call session.
const (
	// Ringing: the voice webhook answered with <Connect><Stream>; no stream yet.
	Ringing State = "ringing"
	// Streaming: a media stream is live on the pod named by Session.PodID.
	Streaming State = "streaming"
	// Transferring: a SIP REFER was requested; the outcome is not known yet.
	Transferring State = "transferring"
	// Transferred: the PBX took the call; our part is over.
	Transferred State = "transferred"
	// Ended: the call ended while it was ours.
	Ended State = "ended"
)

// Terminal reports whether no further transition can leave s.
func (s State) Terminal() bool { return s == Transferred || s == Ended }

// Active reports whether the call is still ours (not terminal).
func (s State) Active() bool { return !s.Terminal() }

// Valid reports whether s is one of the known states.
func (s State) Valid() bool {
	switch s {
	case Ringing, Streaming, Transferring, Transferred, Ended:
		return true
	}
	return false
}

// Errors returned by the state machine.
var (
	// ErrInvalidTransition is returned when a state change is not allowed.
	ErrInvalidTransition = errors.New("session: invalid state transition")
	// ErrNotFound is returned by stores when no session exists for a call SID.
	ErrNotFound = errors.New("session: not found")
)

// transitions lists, for each state, the states it may move to.
// transferring -> streaming is the resume after a failed transfer.
var transitions = map[State][]State{
	Ringing:      {Streaming, Ended},
	Streaming:    {Transferring, Ended},
	Transferring: {Streaming, Transferred, Ended},
}

// CanTransition reports whether a session in state from may move to state to.
func CanTransition(from, to State) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// Limits that keep one session record bounded in size. The timeline keeps
// its first TimelineHead events and its latest events up to
// MaxTimelineEvents in all; the transcript keeps its first turns up to
// TranscriptHeadBytes and its latest ones up to MaxTranscriptBytes in all.
// What lies between is folded: removed and counted (Folded,
// TranscriptFolded), so that the start and the end of a long call both stay.
const (
	MaxTimelineEvents   = 500
	TimelineHead        = 100
	MaxTranscriptTurns  = 400
	MaxTranscriptBytes  = 64 << 10
	TranscriptHeadBytes = 16 << 10
	MaxTurnText         = 2000
	MaxTransfers        = 20
)

// turnOverhead is what a turn costs in the byte bound besides its text (its
// time, role and JSON keys), so that many tiny turns are bounded too.
const turnOverhead = 64

// Event types recorded on the timeline.
const (
	EventAnswered        = "answered"
	EventStreamStarted   = "stream_started"
	EventModelConnected  = "model_connected"
	EventModelError      = "model_error"
	EventModelReconnect  = "model_reconnected"
	EventModelRotated    = "model_rotated"
	EventBargeIn         = "barge_in"
	EventDigit           = "dtmf"
	EventToolCall        = "tool_call"
	EventTransferStarted = "transfer_started"
	EventTransferFailed  = "transfer_failed"
	EventTransferred     = "transferred"
	EventResumed         = "resumed"
	EventStreamStopped   = "stream_stopped"
	EventOperator        = "operator"
	EventEnded           = "ended"
)

// Roles of transcript turns.
const (
	RoleCaller = "caller"
	RoleAgent  = "agent"
	// RoleTool is a function call of the agent with its output (Turn.Tool).
	RoleTool = "tool"
)

// Event is one entry of a session's timeline.
type Event struct {
	// Seq numbers the call's events from 1 in the order they were recorded
	// (Session.Seq is the last one given); with the call SID it is the
	// event's id in deliveries (EventID). 0 on events of an earlier version.
	Seq    int64     `json:"seq,omitempty"`
	At     time.Time `json:"at"`
	Type   string    `json:"type"`
	Detail string    `json:"detail,omitempty"`
}

// EventID is the stable id of the call's event numbered seq: the same
// event delivered again carries the same id, so receivers drop duplicates.
func EventID(callSID string, seq int64) string {
	return "evt_" + callSID + "_" + strconv.FormatInt(seq, 10)
}

// Turn is one utterance of the transcript.
type Turn struct {
	At   time.Time `json:"at"`
	Role string    `json:"role"`
	Text string    `json:"text"`
	// Tool is the function call of a RoleTool turn (Text then summarises it).
	Tool *ToolCall `json:"tool,omitempty"`
}

// TransferParam is the query parameter of the <Refer action> URL naming the
// transfer attempt (Transfer.ID) its outcome is about. Twilio signs the
// whole URL, so the value is as authentic as the callback's form.
const TransferParam = "transfer"

// Transfer is one attempt to hand the call back to the PBX.
type Transfer struct {
	// ID names the attempt in its <Refer action> URL (TransferParam), so a
	// replayed outcome of an earlier attempt cannot decide this one. Empty
	// for attempts recorded by an earlier version.
	ID          string    `json:"id,omitempty"`
	Destination string    `json:"destination"`
	URI         string    `json:"uri"`
	Via         string    `json:"via"` // tool, dtmf, operator, fallback
	At          time.Time `json:"at"`
	// Error is set when the REST update that starts the REFER failed.
	Error string `json:"error,omitempty"`
	// Outcome fields come from the <Refer action> callback.
	Status        string     `json:"status,omitempty"` // ReferCallStatus, or "no-notify"
	ReferSIPCode  string     `json:"referSipCode,omitempty"`
	NotifySIPCode string     `json:"notifySipCode,omitempty"`
	CompletedAt   *time.Time `json:"completedAt,omitempty"`
}

// Session is the record of one call.
type Session struct {
	CallSID   string     `json:"callSid"`
	ChannelID string     `json:"channelId"`
	AgentID   string     `json:"agentId"`
	From      string     `json:"from,omitempty"`
	To        string     `json:"to,omitempty"`
	SourceIP  string     `json:"sourceIp,omitempty"`
	State     State      `json:"state"`
	PodID     string     `json:"podId,omitempty"`
	StreamSID string     `json:"streamSid,omitempty"`
	CreatedAt time.Time  `json:"createdAt"`
	UpdatedAt time.Time  `json:"updatedAt"`
	EndedAt   *time.Time `json:"endedAt,omitempty"`
	EndReason string     `json:"endReason,omitempty"`
	// Connect is the stream token of the <Connect><Stream> last answered for
	// the call: its claims, not the token (the same claims sign the same
	// token, so a retried webhook gets the answer it missed). Its ID names
	// the connect generation a <Connect action> callback is about.
	Connect *Claims `json:"connect,omitempty"`
	// Fence is the fencing token of the call's owner: incremented by every
	// stream that takes the call (Take); writes of an owner holding an
	// older one are refused (CheckFence). LeaseUntil is when the owner's
	// lease runs out unless renewed.
	Fence      int64      `json:"fence,omitempty"`
	LeaseUntil *time.Time `json:"leaseUntil,omitempty"`
	// Migration is set while the call's stream moves to another pod.
	Migration *Migration `json:"migration,omitempty"`

	Timeline   []Event    `json:"timeline"`
	Transcript []Turn     `json:"transcript"`
	Transfers  []Transfer `json:"transfers"`
	// Folded counts the timeline events removed from between its head and
	// its tail by the limits; TranscriptFolded the transcript's turns.
	Folded           int `json:"folded,omitempty"`
	TranscriptFolded int `json:"transcriptFolded,omitempty"`
	// Seq is the number of the last timeline event recorded (Event.Seq).
	Seq int64 `json:"seq,omitempty"`

	// Usage is what the call's models consumed and its estimated cost.
	Usage *Usage `json:"usage,omitempty"`
	// Analysis is the post-call analysis, once claimed or done.
	Analysis *Analysis `json:"analysis,omitempty"`
}

// New returns a session in state Ringing created at now.
func New(callSID, channelID, agentID string, now time.Time) *Session {
	s := &Session{
		CallSID:   callSID,
		ChannelID: channelID,
		AgentID:   agentID,
		State:     Ringing,
		CreatedAt: now,
		UpdatedAt: now,
	}
	s.Record(now, EventAnswered, "")
	return s
}

// Transition moves the session to state to, or returns ErrInvalidTransition.
func (s *Session) Transition(to State, now time.Time) error {
	if !CanTransition(s.State, to) {
		return fmt.Errorf("%w: %s -> %s (call %s)", ErrInvalidTransition, s.State, to, s.CallSID)
	}
	s.State = to
	s.UpdatedAt = now
	return nil
}

// End ends the session with reason unless it is already terminal, in which
// case it does nothing and returns false: the first end reason is the one kept.
// A transferring session whose call ends (the caller hung up during the
// transfer) ends as Ended.
func (s *Session) End(reason string, now time.Time) bool {
	if s.State.Terminal() {
		return false
	}
	s.State = Ended
	s.EndReason = reason
	t := now
	s.EndedAt = &t
	s.UpdatedAt = now
	s.Record(now, EventEnded, reason)
	return true
}

// MarkTransferred records a successful transfer: the session is terminal.
func (s *Session) MarkTransferred(now time.Time) error {
	if err := s.Transition(Transferred, now); err != nil {
		return err
	}
	s.EndReason = "transferred"
	t := now
	s.EndedAt = &t
	s.Record(now, EventTransferred, "")
	return nil
}

// Record appends an event to the timeline. Beyond MaxTimelineEvents the
// oldest event after the first TimelineHead is folded, so the end of a call
// is always kept.
func (s *Session) Record(now time.Time, typ, detail string) {
	s.Seq++
	s.Timeline = append(s.Timeline, Event{Seq: s.Seq, At: now, Type: typ, Detail: truncate(detail, MaxTurnText)})
	if len(s.Timeline) > MaxTimelineEvents {
		s.Timeline = slices.Delete(s.Timeline, TimelineHead, TimelineHead+1)
		s.Folded++
	}
	s.UpdatedAt = now
}

// AddTurn appends a transcript turn (its text cut at MaxTurnText). Beyond
// MaxTranscriptTurns or MaxTranscriptBytes the oldest turns after the head
// (the first turns within TranscriptHeadBytes) are folded.
func (s *Session) AddTurn(now time.Time, role, text string) {
	if text == "" {
		return
	}
	s.appendTurn(now, Turn{At: now, Role: role, Text: truncate(text, MaxTurnText)})
}

// appendTurn appends t and folds the oldest turns beyond the bounds.
func (s *Session) appendTurn(now time.Time, t Turn) {
	s.Transcript = append(s.Transcript, t)
	total := 0
	for _, t := range s.Transcript {
		total += turnSize(t)
	}
	for len(s.Transcript) > 1 && (total > MaxTranscriptBytes || len(s.Transcript) > MaxTranscriptTurns) {
		i := transcriptHead(s.Transcript)
		total -= turnSize(s.Transcript[i])
		s.Transcript = slices.Delete(s.Transcript, i, i+1)
		s.TranscriptFolded++
	}
	s.UpdatedAt = now
}

func turnSize(t Turn) int { return len(t.Text) + turnOverhead + t.Tool.size() }

// transcriptHead is the number of leading turns within TranscriptHeadBytes
// (and half the turn limit), never all of them: the next one is the oldest
// foldable turn.
func transcriptHead(ts []Turn) int {
	n, size := 0, 0
	for n < len(ts)-1 && n < MaxTranscriptTurns/2 {
		size += turnSize(ts[n])
		if size > TranscriptHeadBytes {
			break
		}
		n++
	}
	return n
}

// AddTransfer records a transfer attempt and returns its index.
func (s *Session) AddTransfer(t Transfer) int {
	if len(s.Transfers) >= MaxTransfers {
		s.Transfers = s.Transfers[1:]
	}
	s.Transfers = append(s.Transfers, t)
	return len(s.Transfers) - 1
}

// LastTransfer returns the most recent transfer attempt, or nil.
func (s *Session) LastTransfer() *Transfer {
	if len(s.Transfers) == 0 {
		return nil
	}
	return &s.Transfers[len(s.Transfers)-1]
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// cut on a rune boundary
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
