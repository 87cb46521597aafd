package e2e

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/internal/testwait"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiliotest"
	"github.com/vivi/bridge/twiml"
)

// One live call migrated between real pods by SIGTERM, again and again:
// each round a fresh pod starts to take it, the pod holding the stream is
// SIGTERMed and must exit by itself with code 0. The caller speaks and the
// agent answers on every stream; the caller's last words are in flight at
// each SIGTERM. Migrations are REST updates with a fresh <Connect><Stream>,
// not the <Connect action>, so they do not count against
// twiml.MaxReconnects: the call outlives many more moves than that, and its
// timeline has no reconnect.
//
// Figures (Twilio's clock): the caller-heard gap (the last mark echoed on
// the old stream, i.e. the end of the agent audio it played, to the new
// stream's start, from which caller frames flow; the new stream's first
// agent media comes later, when the agent next speaks), the window from
// Twilio's REST update (it stops the old stream) to the new stream's start,
// in which the caller's speech is carried by no stream, SIGTERM to the new
// stream, and SIGTERM to the drained pod's exit.
func TestProcsFiguresMigration(t *testing.T) {
	rounds := figureRounds(twiml.MaxReconnects+1, 24) // more moves than reconnects, in every run
	w := newWorld(t, worldOptions{model: greeted(), timeout: 5 * time.Minute})
	podName := func(i int) string { return fmt.Sprintf("pod-%02d", i) }
	holder := w.startPod(podName(0))
	w.front.route(podName(0))
	call := w.place()
	stream, conn := w.streamAndModel(call, 1)
	if err := stream.WaitPlayedBytes(w.ctx, 1600); err != nil {
		t.Fatal(err)
	}
	streams := []*twiliotest.Call{stream}
	conns := []*realtimetest.Conn{conn}
	want := []string{"Hello, reception."} // the transcript the call must keep
	answer := realtimetest.Pattern(1600)  // 200 ms of agent speech per turn
	var heard, moved, window, exit durations
	for r := 1; r <= rounds; r++ {
		// The caller speaks, the agent answers; all of it plays.
		played := stream.PlayedBytes()
		before := len(conn.InputAudio())
		stream.Say(realtimetest.Tone(800))
		w.waitInput(conn, before+800, fmt.Sprintf("round %d: caller audio", r))
		question, reply := fmt.Sprintf("Question %d.", r), fmt.Sprintf("Answer %d.", r)
		conn.Transcription(question)
		conn.Speak("", answer, reply)
		want = append(want, question, reply)
		if err := stream.WaitPlayedBytes(w.ctx, played+len(answer)); err != nil {
			t.Fatalf("round %d: %v", r, err)
		}
		// A fresh pod to take the call; the caller is speaking at SIGTERM.
		next := podName(r)
		w.startPod(next)
		w.front.route(next)
		stream.Say(realtimetest.Tone(1600))
		sent := holder.signal(syscall.SIGTERM)
		nextStream, nextConn := w.streamAndModel(call, r+1)
		w.waitSession(call.CallSID(), fmt.Sprintf("round %d: streaming on %s", r, next), func(s *session.Session) bool {
			return s.State == session.Streaming && s.PodID == next && s.StreamSID == nextStream.StreamSID()
		})
		code, exited, err := holder.waitExit(30 * time.Second)
		if err != nil || code != 0 {
			t.Fatalf("round %d: %s after SIGTERM: exit code %d, %v", r, holder.name, code, err)
		}
		exit = append(exit, exited.Sub(sent))
		g := measureHandover(stream, nextStream)
		if g.lastMark.IsZero() {
			t.Fatalf("round %d: no mark echoed on the old stream", r)
		}
		heard = append(heard, g.callerFrame)
		moved = append(moved, nextStream.Started().Sub(sent))
		update, ok := lastEventBefore(call, "REST update: Connect", nextStream.Started())
		if !ok {
			t.Fatalf("round %d: no REST update moved the stream: %v", r, call.Events())
		}
		window = append(window, nextStream.Started().Sub(update))
		holder, stream, conn = w.pod(next), nextStream, nextConn
		streams, conns = append(streams, stream), append(conns, conn)
	}
	// The agent still talks on the last stream.
	conn.Speak("", answer, "Anything else?")
	want = append(want, "Anything else?")
	if err := stream.WaitPlayedBytes(w.ctx, len(answer)); err != nil {
		t.Fatal(err)
	}
	w.wantCallerAudio(conn, "after the last migration")

	s := w.waitSession(call.CallSID(), "the whole transcript", func(s *session.Session) bool { return len(s.Transcript) >= len(want) })
	var got []string
	for _, tu := range s.Transcript {
		got = append(got, tu.Text)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("transcript after %d migrations:\n got %q\nwant %q", rounds, got, want)
	}
	var migrated []string
	for _, ev := range s.Timeline {
		switch ev.Type {
		case eventMigrated:
			migrated = append(migrated, ev.Detail)
		case twiml.EventReconnect:
			t.Fatalf("a migration went through the <Connect action> (reconnect %q)", ev.Detail)
		}
	}
	if len(migrated) != rounds {
		t.Fatalf("%d migrated events for %d migrations: %q", len(migrated), rounds, migrated)
	}
	for i, d := range migrated {
		if !strings.Contains(d, podName(i)) || !strings.Contains(d, podName(i+1)) {
			t.Fatalf("migrated event %d %q does not name %s and %s", i, d, podName(i), podName(i+1))
		}
	}
	// No second greeting: no pod but the first asked the model for a
	// response, and every later stream played only what the agent said.
	for i, c := range conns[1:] {
		for _, ev := range c.Events() {
			if ev.Type == "response.create" {
				t.Fatalf("the pod of stream %d greeted again (response.create)", i+2)
			}
		}
		if n := streams[i+1].ReceivedBytes(); n != len(answer) {
			t.Fatalf("stream %d received %d bytes of agent audio, want %d (one answer)", i+2, n, len(answer))
		}
	}
	// Every caller byte Twilio sent, on every stream, reached a model session.
	w.allCallerAudioReachedModel(streams, conns)
	if call.Outcome() != "" {
		t.Fatalf("the call ended (%s) after %d migrations", call.Outcome(), rounds)
	}
	figure(t, "migration_gap_sequential", "%s (caller-heard: last mark on the old stream -> new stream; includes the test starting the next pod before SIGTERM)", heard)
	figure(t, "migration_sigterm_stream_sequential", "SIGTERM -> new stream %s", moved)
	frames := func(d time.Duration) time.Duration { // 20 ms frames due in d, rounded up
		return (d + twiliotest.DefaultFrameInterval - 1) / twiliotest.DefaultFrameInterval
	}
	figure(t, "migration_uncarried_sequential", "%s (REST update stops the old stream -> new stream starts: at most p50 %d, max %d caller frames of 20 ms due then, carried by no stream)",
		window, frames(window.p50()), frames(window.max()))
	figure(t, "migration_sigterm_exit_sequential", "SIGTERM->exit %s", exit)
	call.Hangup(w.ctx)
	w.waitSession(call.CallSID(), "ended", func(s *session.Session) bool { return s.State == session.Ended })
}

// waitInput waits until the model session has received n bytes of caller
// audio.
func (w *world) waitInput(conn *realtimetest.Conn, n int, what string) {
	w.t.Helper()
	if err := testwait.Poll(10*time.Second, func() bool { return len(conn.InputAudio()) >= n }); err != nil {
		w.t.Fatalf("%s: the model has %d of %d bytes", what, len(conn.InputAudio()), n)
	}
}

// lastEventBefore is the time of the call's last simulator event that
// begins with prefix and happened before t.
func lastEventBefore(call *twiliotest.SimCall, prefix string, t time.Time) (time.Time, bool) {
	var at time.Time
	for _, ev := range call.Events() {
		if strings.HasPrefix(ev.What, prefix) && !ev.At.After(t) {
			at = ev.At
		}
	}
	return at, !at.IsZero()
}
