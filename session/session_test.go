package session

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

func TestTransitions(t *testing.T) {
	all := []State{Ringing, Streaming, Transferring, Transferred, Ended}
	allowed := map[[2]State]bool{
		{Ringing, Streaming}:        true,
		{Ringing, Ended}:            true,
		{Streaming, Transferring}:   true,
		{Streaming, Ended}:          true,
		{Transferring, Streaming}:   true, // resume after a failed transfer
		{Transferring, Transferred}: true,
		{Transferring, Ended}:       true, // caller hung up during the transfer
	}
	for _, from := range all {
		for _, to := range all {
			name := string(from) + "->" + string(to)
			t.Run(name, func(t *testing.T) {
				s := New("CA1", "ch", "ag", t0)
				s.State = from
				err := s.Transition(to, t0.Add(time.Second))
				if allowed[[2]State{from, to}] {
					if err != nil || s.State != to {
						t.Fatalf("want allowed, got err=%v state=%s", err, s.State)
					}
					return
				}
				if !errors.Is(err, ErrInvalidTransition) || s.State != from {
					t.Fatalf("want refused, got err=%v state=%s", err, s.State)
				}
			})
		}
	}
}

func TestEndIsIdempotentFirstReasonWins(t *testing.T) {
	s := New("CA1", "ch", "ag", t0)
	_ = s.Transition(Streaming, t0)
	if !s.End("caller_hangup", t0.Add(time.Minute)) {
		t.Fatal("first End returned false")
	}
	if s.End("call_completed", t0.Add(2*time.Minute)) {
		t.Fatal("second End returned true")
	}
	if s.State != Ended || s.EndReason != "caller_hangup" || !s.EndedAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("session %+v", s)
	}
	if last := s.Timeline[len(s.Timeline)-1]; last.Type != EventEnded || last.Detail != "caller_hangup" {
		t.Fatalf("last event %+v", last)
	}
}

func TestEndLeavesTransferred(t *testing.T) {
	s := New("CA1", "ch", "ag", t0)
	_ = s.Transition(Streaming, t0)
	_ = s.Transition(Transferring, t0)
	if err := s.MarkTransferred(t0); err != nil {
		t.Fatal(err)
	}
	if s.End("call_completed", t0) || s.State != Transferred {
		t.Fatalf("transferred session was ended: %+v", s)
	}
}

func TestBounds(t *testing.T) {
	s := New("CA1", "ch", "ag", t0)
	for i := 0; i < MaxTimelineEvents+10; i++ {
		s.Record(t0.Add(time.Duration(i)*time.Second), EventDigit, strconv.Itoa(i))
	}
	for i := 0; i < MaxTranscriptTurns+10; i++ {
		s.AddTurn(t0, RoleCaller, "hello "+strconv.Itoa(i))
	}
	s.AddTurn(t0, RoleAgent, "") // empty turns are not kept
	if len(s.Timeline) != MaxTimelineEvents || len(s.Transcript) != MaxTranscriptTurns {
		t.Fatalf("timeline %d transcript %d", len(s.Timeline), len(s.Transcript))
	}
	// 1 answered + 510 events: the head and the latest are kept, 11 folded
	if s.Folded != 11 || s.TranscriptFolded != 10 {
		t.Fatalf("folded %d/%d", s.Folded, s.TranscriptFolded)
	}
	if s.Timeline[0].Type != EventAnswered || s.Timeline[len(s.Timeline)-1].Detail != strconv.Itoa(MaxTimelineEvents+9) {
		t.Fatalf("head or tail not kept: %+v ... %+v", s.Timeline[0], s.Timeline[len(s.Timeline)-1])
	}
	if s.Transcript[0].Text != "hello 0" || s.Transcript[len(s.Transcript)-1].Text != "hello "+strconv.Itoa(MaxTranscriptTurns+9) {
		t.Fatalf("transcript head or tail not kept")
	}
	s.End("caller_hangup", t0) // the end is kept even when the timeline is full
	if s.Timeline[len(s.Timeline)-1].Type != EventEnded {
		t.Fatal("end event dropped")
	}
	// long turns: bounded by bytes
	s3 := New("CA3", "ch", "ag", t0)
	for i := 0; i < 200; i++ {
		s3.AddTurn(t0, RoleAgent, strings.Repeat("x", MaxTurnText-4)+fmt.Sprintf("%04d", i))
	}
	size := 0
	for _, tn := range s3.Transcript {
		size += len(tn.Text) + turnOverhead
	}
	if size > MaxTranscriptBytes || s3.TranscriptFolded != 200-len(s3.Transcript) || !strings.HasSuffix(s3.Transcript[len(s3.Transcript)-1].Text, "0199") || !strings.HasSuffix(s3.Transcript[0].Text, "0000") {
		t.Fatalf("transcript %d bytes, %d turns, %d folded", size, len(s3.Transcript), s3.TranscriptFolded)
	}
	long := strings.Repeat("é", MaxTurnText)
	s2 := New("CA2", "ch", "ag", t0)
	s2.AddTurn(t0, RoleAgent, long)
	if got := s2.Transcript[0].Text; len(got) > MaxTurnText || !strings.HasPrefix(long, got) {
		t.Fatalf("turn not cut on a rune boundary: %d bytes", len(got))
	}
	for i := 0; i < MaxTransfers+3; i++ {
		s2.AddTransfer(Transfer{Destination: "d"})
	}
	if len(s2.Transfers) != MaxTransfers {
		t.Fatalf("transfers %d", len(s2.Transfers))
	}
}
