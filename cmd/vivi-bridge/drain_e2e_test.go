package main

import (
	"context"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/delivery"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/store"
)

// The drain by migration (issue 10, part 1), end to end: two pods on one
// Redis behind the switchable front, the Twilio simulator (which plays a
// REST update of a live <Connect><Stream> like Twilio: `stop` on the old
// stream, then the new TwiML) and the model fake.

// stopAsync stops pod p (its runServer's context cancelled, as SIGTERM
// does) and returns a channel closed when runServer has returned.
func stopAsync(p *e2ePod) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		p.stop()
		close(done)
	}()
	return done
}

// waitClosed waits for ch within d.
func (e *e2e) waitClosed(ch <-chan struct{}, d time.Duration, what string) {
	e.t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		e.t.Fatalf("%s: not within %s", what, d)
	}
}

// seeded returns the conversation items a model connection was seeded with.
func seeded(conn *realtimetest.Conn) string {
	var b strings.Builder
	for _, ev := range conn.Events() {
		if ev.Type == "conversation.item.create" {
			b.Write(ev.Raw)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func countType(conn *realtimetest.Conn, typ string) int {
	n := 0
	for _, ev := range conn.Events() {
		if ev.Type == typ {
			n++
		}
	}
	return n
}

// TestDrainMigratesCallToOtherPod: SIGTERM on the pod holding a call moves
// the call's stream to the other pod at a quiet moment: the new pod is
// seeded with the transcript, does not greet again (no response.create),
// relays the caller; the timeline records migrating and "migrated from
// pod-a to pod-b"; the call is never ended; the draining pod's runServer
// returns as soon as the call is gone, long before SHUTDOWN_GRACE.
func TestDrainMigratesCallToOtherPod(t *testing.T) {
	e := newE2E(t, realtimetest.Options{Greeting: realtimetest.Pattern(800), GreetingTranscript: "Hello, reception."})
	e.grace = "30s"
	a := e.start("pod-a")
	e.start("pod-b")
	call := e.place("203.0.113.10")
	stream, conn := e.streamAndModel(call, 1)
	if err := stream.WaitPlayedBytes(e.ctx, 800); err != nil {
		t.Fatal(err)
	}
	conn.Transcription("I would like to book a room.")
	e.waitSession(call.CallSID(), "two turns", func(s *session.Session) bool { return len(s.Transcript) == 2 })
	fence1 := e.session(call.CallSID()).Fence

	e.route("pod-b") // the load balancer takes the draining pod out
	began := time.Now()
	stopped := stopAsync(a)
	stream2, conn2 := e.streamAndModel(call, 2)
	e.waitClosed(stopped, 10*time.Second, "pod-a's runServer to return after its last call left")
	t.Logf("SIGTERM to exit with 1 call: %v", time.Since(began))
	if !stream.ClosedByServer() && stream.Err() != nil {
		t.Errorf("old stream ended with %v", stream.Err())
	}
	e.wantCallerAudio(conn2)
	all := seeded(conn2)
	for _, want := range []string{"Hello, reception.", "I would like to book a room."} {
		if !strings.Contains(all, want) {
			t.Fatalf("the new pod's model lacks %q:\n%s", want, all)
		}
	}
	if n := countType(conn2, "response.create"); n != 0 {
		t.Fatalf("the new pod made the agent speak (%d response.create): the caller carries on", n)
	}
	s := e.waitSession(call.CallSID(), "streaming on pod-b", func(s *session.Session) bool {
		return s.State == session.Streaming && s.PodID == "pod-b" && s.StreamSID == stream2.StreamSID()
	})
	if !timelineHas(s, session.EventMigrating, stream.StreamSID()+" from pod-a") ||
		!timelineHas(s, session.EventMigrated, "from pod-a to pod-b") {
		t.Fatalf("timeline %+v", s.Timeline)
	}
	if s.EndReason != "" || s.Fence <= fence1 || s.Migration != nil {
		t.Fatalf("session after the move: end %q fence %d (was %d) migration %+v", s.EndReason, s.Fence, fence1, s.Migration)
	}
	if call.Outcome() != "" {
		t.Fatalf("call ended: %s", call.Outcome())
	}
	call.Hangup(e.ctx)
	s = e.waitSession(call.CallSID(), "ended", func(s *session.Session) bool { return s.State == session.Ended })
	if s.EndReason != "caller_hangup" && s.EndReason != "stream_stopped" && s.EndReason != "call_completed" {
		t.Fatalf("end reason %q", s.EndReason)
	}
}

// holdUpdates makes Twilio's REST fake refuse (HTTP 500) every call update
// of callSID until the returned func is called; other calls' updates
// succeed.
func (e *e2e) holdUpdates(callSID string) (release func()) {
	var mu sync.Mutex
	held := true
	e.tw.REST().OnCallUpdate(func(sid string, form url.Values) (int, string) {
		mu.Lock()
		defer mu.Unlock()
		if held && sid == callSID {
			return 500, `{"code":20500,"message":"Internal Server Error","status":500}`
		}
		return 200, `{"sid":"` + sid + `","status":"in-progress"}`
	})
	return func() {
		mu.Lock()
		held = false
		mu.Unlock()
	}
}

// TestDrainingPodAnswersWebhookAndMigratesItsStream: a call whose webhook
// and stream reach a pod that is already draining (the front has not
// noticed yet) is answered with <Connect><Stream> (never a refusal), its
// stream is accepted (no 503), then migrated to the ready pod like any live
// call. A REST update that fails is retried until it succeeds, and the pod
// exits once its last call has moved.
func TestDrainingPodAnswersWebhookAndMigratesItsStream(t *testing.T) {
	e := newE2E(t, realtimetest.Options{})
	e.grace = "30s"
	a := e.start("pod-a")
	e.start("pod-b")
	// A call on pod A whose migration Twilio refuses for now keeps A draining.
	keep := e.place("203.0.113.20")
	e.streamAndModel(keep, 1)
	release := e.holdUpdates(keep.CallSID())
	stopped := stopAsync(a)
	if err := waitFor(func() bool { return a.logs.FilterMessage("draining: migrating the live calls").Len() > 0 }); err != nil {
		t.Fatal("pod-a did not start draining")
	}
	call := e.place("203.0.113.10") // webhook and stream both land on draining pod A
	if call.Rejected() != "" {
		t.Fatalf("webhook on a draining pod rejected: %s", call.Rejected())
	}
	first, _ := e.streamAndModel(call, 1)
	e.route("pod-b")
	if _, err := call.WaitStream(e.ctx, 2); err != nil {
		t.Fatalf("the stream accepted on the draining pod was not migrated: %v; events %v", err, call.Events())
	}
	// (Should the move come before the front switched, the stream lands on
	// pod A again and moves once more: it ends on pod B all the same.)
	s := e.waitSession(call.CallSID(), "on pod-b", func(s *session.Session) bool {
		cur := call.Stream()
		return s.PodID == "pod-b" && cur != nil && s.StreamSID == cur.StreamSID() && s.State == session.Streaming
	})
	if !timelineHas(s, session.EventMigrated, "from pod-a to pod-b") ||
		!timelineHas(s, session.EventStreamStarted, "pod pod-a") || !timelineHas(s, session.EventMigrating, first.StreamSID()) {
		t.Fatalf("timeline %+v", s.Timeline)
	}
	select {
	case <-stopped:
		t.Fatal("pod-a exited while a call was still on it")
	default:
	}
	if a.logs.FilterMessage("media stream refused: server stopped").Len() != 0 {
		t.Fatal("a stream was refused")
	}
	release() // the kept call's next retry succeeds
	if _, err := keep.WaitStream(e.ctx, 2); err != nil {
		t.Fatalf("kept call not migrated after Twilio accepted: %v", err)
	}
	e.waitClosed(stopped, 15*time.Second, "pod-a to exit once both calls moved")
	if keep.Outcome() != "" || call.Outcome() != "" {
		t.Fatalf("outcomes %q %q", keep.Outcome(), call.Outcome())
	}
}

// TestDrainEndsCallsThatCannotMove: when no call can move (Twilio refuses
// the updates), a second signal ends the drain at once, and otherwise
// SHUTDOWN_GRACE does: the call ends with reason shutdown, its session
// record written, and runServer returns.
//
// "no ready pod": with no other pod ready (the last pod of a deployment) the
// call is not moved at all (a moved call would find no endpoint), and it
// ends at SHUTDOWN_GRACE. In the other cases a peer is ready (its beat
// written here) but the REST update is refused.
func TestDrainEndsCallsThatCannotMove(t *testing.T) {
	for name, tc := range map[string]struct {
		grace  time.Duration
		noPeer bool
	}{"second signal": {grace: time.Hour}, "grace": {grace: 500 * time.Millisecond}, "no ready pod": {grace: 500 * time.Millisecond, noPeer: true}} {
		grace := tc.grace
		t.Run(name, func(t *testing.T) {
			e := newE2E(t, realtimetest.Options{})
			c := e.config("pod-a")
			c.ConfigFile = e.yaml
			c.ShutdownGrace = grace
			ln, err := listen("127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			st := store.NewRedis(e.rdb, store.Options{Prefix: e.prefix, Outbox: delivery.Entries})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			force := make(chan struct{})
			done := make(chan error, 1)
			core, logs := observer.New(zap.InfoLevel)
			go func() { done <- runServer(ctx, c, zap.New(core), appDeps{store: st, force: force}, ln) }()
			url := "http://" + ln.Addr().String()
			if err := waitReady(e.ctx, url); err != nil {
				t.Fatal(err)
			}
			e.mu.Lock()
			e.pods["pod-a"], e.target = &e2ePod{url: url, store: st, logs: logs, stop: func() {}}, "pod-a"
			e.mu.Unlock()
			call := e.place("203.0.113.10")
			e.streamAndModel(call, 1)
			e.holdUpdates(call.CallSID())
			if !tc.noPeer {
				if err := st.BeatPod(e.ctx, "pod-peer", true, time.Now()); err != nil {
					t.Fatal(err)
				}
			}
			began := time.Now()
			cancel() // SIGTERM
			if tc.noPeer {
				if err := waitFor(func() bool { return logs.FilterMessage(noPeerLog).Len() > 0 }); err != nil {
					t.Fatal("no warning that no pod can take the calls")
				}
			} else if err := waitFor(func() bool { return logs.FilterMessage("migrating the call to another pod").Len() > 0 }); err != nil {
				t.Fatal("no migration attempt")
			}
			if grace == time.Hour {
				close(force) // the second signal
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("runServer did not return")
			}
			t.Logf("SIGTERM to exit: %v", time.Since(began).Round(time.Millisecond))
			if logs.FilterMessage("migration under way: Twilio moves the stream").Len() != 0 {
				t.Fatal("a refused update counted as a move")
			}
			if tc.noPeer && logs.FilterMessage("migrating the call to another pod").Len() != 0 {
				t.Fatal("a call was moved with no other pod ready")
			}
			s := e.waitSession(call.CallSID(), "ended", func(s *session.Session) bool { return s.State == session.Ended })
			if s.EndReason != "shutdown" {
				t.Fatalf("end reason %q", s.EndReason)
			}
		})
	}
}
