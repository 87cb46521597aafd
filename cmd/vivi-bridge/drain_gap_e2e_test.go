package main

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiliotest"
)

// playEnd is when the agent audio the stream received had finished playing
// at Twilio (the mark clock: each chunk plays after the one before, from
// when it arrived), zero when none arrived.
func playEnd(s *twiliotest.Call) time.Time {
	var end time.Time
	for _, m := range s.Messages() {
		if m.Event != "media" || m.Err != "" {
			continue
		}
		start := m.At
		if end.After(start) {
			start = end
		}
		end = start.Add(time.Duration(len(m.Payload)) * time.Second / 8000)
	}
	return end
}

// appendTimes returns when the model connection read each caller frame.
func appendTimes(conn *realtimetest.Conn) []time.Time {
	var out []time.Time
	for _, ev := range conn.Events() {
		if ev.Type == "input_audio_buffer.append" {
			out = append(out, ev.At)
		}
	}
	return out
}

// TestDrainMigrationGap moves one call through 21 pods (20 migrations, each
// a SIGTERM of the pod holding it) and measures what the caller hears: the
// agent gap (from the end of the agent audio played on the old stream, by
// Twilio's marks, to the first caller frame relayed to the model on the new
// stream) and the caller gap (from the last caller frame relayed on the old
// stream to the first on the new one: what Twilio streamed to no one). It
// logs p50 and max, and fails only when a migration takes over 2 s.
func TestDrainMigrationGap(t *testing.T) {
	const n = 20
	e := newE2E(t, realtimetest.Options{Greeting: realtimetest.Pattern(800)})
	e.grace = "30s"
	pod := e.start("pod-0")
	call := e.place("203.0.113.10")
	stream, conn := e.streamAndModel(call, 1)
	if err := stream.WaitPlayedBytes(e.ctx, 800); err != nil {
		t.Fatal(err)
	}
	var agentGaps, callerGaps, exits, moves []time.Duration
	for i := 1; i <= n; i++ {
		if i > 1 { // the agent says something on each stream, played before the move
			played := stream.PlayedBytes()
			conn.Speak(fmt.Sprintf("item_%d", i), realtimetest.Pattern(800), "Sure.")
			if err := stream.WaitPlayedBytes(e.ctx, played+800); err != nil {
				t.Fatal(err)
			}
		}
		e.wantCallerAudio(conn)
		next := e.start(fmt.Sprintf("pod-%d", i))
		e.route(fmt.Sprintf("pod-%d", i))
		began := time.Now()
		stopped := stopAsync(pod)
		stream2, conn2 := e.streamAndModel(call, i+1)
		e.waitClosed(stopped, 10*time.Second, fmt.Sprintf("pod-%d to exit", i-1))
		exits = append(exits, time.Since(began))
		e.wantCallerAudio(conn2)
		old, cur := appendTimes(conn), appendTimes(conn2)
		first := cur[0]
		agentGaps = append(agentGaps, first.Sub(playEnd(stream)))
		callerGaps = append(callerGaps, first.Sub(old[len(old)-1]))
		moves = append(moves, first.Sub(began))
		if n := countType(conn2, "response.create"); n != 0 {
			t.Fatalf("migration %d: the agent was made to speak", i)
		}
		pod, stream, conn = next, stream2, conn2
	}
	if call.Outcome() != "" {
		t.Fatalf("call ended: %s", call.Outcome())
	}
	stat := func(ds []time.Duration) (time.Duration, time.Duration) {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2], s[len(s)-1]
	}
	ap50, amax := stat(agentGaps)
	cp50, cmax := stat(callerGaps)
	ep50, emax := stat(exits)
	mp50, mmax := stat(moves)
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	// The agent gap includes the test's own wait (≥200 ms of caller audio
	// relayed after the agent's audio played, before the SIGTERM).
	t.Logf("%d migrations: agent-audio-end to first relayed frame p50 %v max %v; caller unrelayed (last frame on old to first on new) p50 %v max %v; SIGTERM to first relayed frame p50 %v max %v; SIGTERM to exit (1 call) p50 %v max %v",
		n, ms(ap50), ms(amax), ms(cp50), ms(cmax), ms(mp50), ms(mmax), ms(ep50), ms(emax))
	if cmax > 2*time.Second {
		t.Fatalf("a migration left the caller unrelayed for %v", cmax)
	}
	call.Hangup(e.ctx) // the cleanup's drain of the last pod has nothing to move
}

// TestDrainManyCalls: SIGTERM on a pod with 50 live calls moves them all to
// the other pod; the pod exits once the last has moved (logged: the time
// from SIGTERM to exit), and no call ends.
func TestDrainManyCalls(t *testing.T) {
	const n = 50
	e := newE2E(t, realtimetest.Options{})
	e.grace, e.maxCalls = "30s", "100"
	a := e.start("pod-a")
	e.start("pod-b")
	calls := make([]*twiliotest.SimCall, n)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() {
			c, err := e.tw.PlaceCall(e.ctx, twiliotest.CallParams{
				From: "sip:+14155550100@203.0.113.10", To: "sip:1001@vivi.sip.twilio.com;transport=tls", SourceIP: "203.0.113.10",
			})
			if err != nil {
				t.Errorf("place call %d: %v", i, err)
				return
			}
			calls[i] = c
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if err := waitFor(func() bool { return a.logs.FilterMessage("call accepted").Len() == n }); err != nil {
		t.Fatal("not every call was accepted on pod-a")
	}
	e.route("pod-b")
	began := time.Now()
	stopped := stopAsync(a)
	e.waitClosed(stopped, 30*time.Second, "pod-a to exit")
	exit := time.Since(began)
	for i, c := range calls {
		if _, err := c.WaitStream(e.ctx, 2); err != nil {
			t.Fatalf("call %d not migrated: %v", i, err)
		}
		e.waitSession(c.CallSID(), "on pod-b", func(s *session.Session) bool { return s.PodID == "pod-b" && s.State == session.Streaming })
		if c.Outcome() != "" {
			t.Fatalf("call %d ended: %s", i, c.Outcome())
		}
	}
	t.Logf("SIGTERM to exit with %d live calls: %v", n, exit.Round(time.Millisecond))
	// Hang up, so that the cleanup's drain of pod-b (the only pod left, so
	// its calls would move back to itself until SHUTDOWN_GRACE) is short.
	for _, c := range calls {
		wg.Go(func() { c.Hangup(e.ctx) })
	}
	wg.Wait()
}
