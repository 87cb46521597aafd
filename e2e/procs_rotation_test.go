package e2e

// Rotation on a short expiry (issue 10 parts 4 and 5) with a real process.

import (
	"testing"
	"time"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiliotest"
)

// Rotation on a short expiry: the fake model reports expires_at a few
// seconds ahead; the bridge opens the next session before it
// (make-before-break) on the same pod and stream, seeded with the
// conversation; no caller audio is lost and the gap is measured.
func TestProcsRotationShortExpiry(t *testing.T) {
	opts := greeted()
	opts.ExpiresIn = 15 * time.Second // the bridge plans no rotation for a life under 10 s (clock skew guard)
	w := newWorld(t, worldOptions{model: opts})
	w.startPod("pod-a")
	call := w.place()
	stream, conn := w.streamAndModel(call, 1)
	if err := stream.WaitPlayedBytes(w.ctx, 1600); err != nil {
		t.Fatal(err)
	}
	conn.Transcription("Please keep this in mind.")
	conn2, err := w.model.NextConn(w.ctx)
	if err != nil {
		t.Fatalf("no second model session before expiry: %v", err)
	}
	if _, err := conn2.WaitEvent(w.ctx, "conversation.item.create", 1); err != nil {
		t.Fatal(err)
	}
	w.wantCallerAudio(conn2, "after rotation")
	if n := len(call.Streams()); n != 1 {
		t.Fatalf("rotation changed the Twilio stream (%d streams)", n)
	}
	// The audio gap at rotation on the model's side: the last append on the
	// old session to the first on the new one.
	var last, first time.Time
	for _, ev := range conn.Events() {
		if ev.Type == "input_audio_buffer.append" {
			last = ev.At
		}
	}
	for _, ev := range conn2.Events() {
		if ev.Type == "input_audio_buffer.append" {
			first = ev.At
			break
		}
	}
	// Twilio's side: the longest silence between agent media on the stream.
	var maxGap time.Duration
	var prev time.Time
	for _, m := range stream.Messages() {
		if m.Event != "media" {
			continue
		}
		if !prev.IsZero() && m.At.Sub(prev) > maxGap {
			maxGap = m.At.Sub(prev)
		}
		prev = m.At
	}
	figure(t, "rotation_gap", "caller audio: last append on old session -> first on new %v; longest gap between agent frames %v",
		first.Sub(last).Round(time.Millisecond), maxGap.Round(time.Millisecond))
	s := w.session(call.CallSID())
	if s.State != session.Streaming {
		t.Fatalf("session %+v", s)
	}
	w.allCallerAudioReachedModel([]*twiliotest.Call{stream}, []*realtimetest.Conn{conn, conn2})
	call.Hangup(w.ctx)
}
