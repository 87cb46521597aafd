package e2e

// A Redis Cluster failover under real `vivi-bridge serve` processes
// (issue 10 part 5).

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/internal/testwait"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiliotest"
)

func hasTurn(s *session.Session, text string) bool {
	return slices.ContainsFunc(s.Transcript, func(tu session.Turn) bool { return tu.Text == text })
}

// Two pods on a three-master Redis Cluster (REDIS_ADDRS, no REDIS_URL); a
// call streams on pod-a, the agent greeting and the caller talking, when
// the master of the sessions' slot ({sess}) is SIGKILLed. Its replica
// takes over: the call keeps relaying through the failover (every caller
// byte reaches the model), a turn said while the slot had no master and
// one said after the failover both land in the session record, a second
// call placed after the failover (on pod-b) is answered and streams, and
// the first call's session ends at hang-up. No call is dropped.
// Figure: the kill to the first session write landing in the Cluster.
func TestProcsClusterFailover(t *testing.T) {
	w := newWorld(t, worldOptions{model: greeted(), cluster: true})
	w.startPod("pod-a")
	w.startPod("pod-b")
	w.front.route("pod-a")

	call := w.place()
	stream, conn := w.streamAndModel(call, 1)
	if err := stream.WaitPlayedBytes(w.ctx, 1600); err != nil {
		t.Fatal(err)
	}
	stream.Say(realtimetest.Tone(1600))
	w.wantCallerAudio(conn, "before the failover")
	conn.Transcription("Before the failover.")
	w.waitSession(call.CallSID(), "the caller's turn on pod-a", func(s *session.Session) bool {
		return s.State == session.Streaming && s.PodID == "pod-a" && hasTurn(s, "Hello, reception.") && hasTurn(s, "Before the failover.")
	})

	sessKey := w.prefix + "{sess}:call:" + call.CallSID()
	old, replica := w.cluster.MasterFor(t, sessKey), w.cluster.ReplicaFor(t, sessKey)
	old.Kill() // returns once the process is gone
	killed := time.Now()

	// While the slot has no master the caller goes on talking and the
	// agent hears it; the turn is kept by the pod until it can be written.
	stream.Say(realtimetest.Tone(3200))
	conn.Transcription("Said while the slot had no master.")
	landed := make(chan time.Time, 1)
	go func() {
		// The first record read whose UpdatedAt (the pod's write time) is
		// after the kill: a write that landed on the new master.
		_ = testwait.Poll(30*time.Second, func() bool {
			ctx, cancel := context.WithTimeout(w.ctx, time.Second)
			defer cancel()
			s, err := w.store().Session(ctx, call.CallSID())
			if err == nil && s.UpdatedAt.After(killed) {
				landed <- time.Now()
				return true
			}
			return w.ctx.Err() != nil
		})
		close(landed)
	}()
	w.wantCallerAudio(conn, "during the failover")
	w.wantCallerAudio(conn, "still during the failover")
	if got := w.cluster.WaitMasterChange(t, sessKey, old); got != replica {
		t.Fatalf("the sessions' slot went to %s, want its replica %s", got.Addr, replica.Addr)
	}
	settled := time.Now()
	firstWrite, ok := <-landed
	if !ok {
		t.Fatal("no session write landed in the Cluster after the kill")
	}
	w.waitSession(call.CallSID(), "the turn said during the failover", func(s *session.Session) bool {
		return hasTurn(s, "Said while the slot had no master.")
	})

	// After the failover: a caller turn lands, the call is still pod-a's.
	w.wantCallerAudio(conn, "after the failover")
	conn.Transcription("Said after the failover.")
	s := w.waitSession(call.CallSID(), "the turn said after the failover", func(s *session.Session) bool {
		return hasTurn(s, "Said after the failover.")
	})
	if s.State != session.Streaming || s.PodID != "pod-a" || s.StreamSID != stream.StreamSID() {
		t.Fatalf("after the failover: state %s pod %q stream %q, want streaming on pod-a's %s", s.State, s.PodID, s.StreamSID, stream.StreamSID())
	}

	// A second call placed after the failover, on pod-b, is answered and
	// streams.
	w.front.route("pod-b")
	call2 := w.place()
	if r := call2.Rejected(); r != "" {
		t.Fatalf("the call placed after the failover was answered <Reject reason=%q>", r)
	}
	stream2, conn2 := w.streamAndModel(call2, 1)
	if err := stream2.WaitPlayedBytes(w.ctx, 1600); err != nil {
		t.Fatal(err)
	}
	w.waitSession(call2.CallSID(), "the second call streaming on pod-b", func(s *session.Session) bool {
		return s.State == session.Streaming && s.PodID == "pod-b" && s.StreamSID == stream2.StreamSID()
	})
	stream2.Say(realtimetest.Tone(1600))
	w.wantCallerAudio(conn2, "the second call")

	// No call dropped: each is live on its first and only stream.
	for _, c := range []*twiliotest.SimCall{call, call2} {
		select {
		case <-c.Done():
			t.Fatalf("call %s ended: %s %v", c.CallSID(), c.Outcome(), c.Events())
		default:
		}
		if n := len(c.Streams()); n != 1 {
			t.Fatalf("call %s has %d streams, want 1", c.CallSID(), n)
		}
	}
	w.allCallerAudioReachedModel([]*twiliotest.Call{stream}, []*realtimetest.Conn{conn})
	w.allCallerAudioReachedModel([]*twiliotest.Call{stream2}, []*realtimetest.Conn{conn2})

	call.Hangup(w.ctx)
	s = w.waitSession(call.CallSID(), "ended", func(s *session.Session) bool { return s.State == session.Ended })
	if s.EndReason != "caller_hangup" || s.EndedAt == nil || !timelineHas(s, session.EventEnded) {
		t.Fatalf("first call ended with reason %q at %v, timeline %+v", s.EndReason, s.EndedAt, s.Timeline)
	}
	for _, want := range []string{"Hello, reception.", "Before the failover.", "Said while the slot had no master.", "Said after the failover."} {
		if !hasTurn(s, want) {
			t.Fatalf("the ended session's transcript lacks %q: %+v", want, s.Transcript)
		}
	}
	call2.Hangup(w.ctx)
	w.waitSession(call2.CallSID(), "second call ended", func(s *session.Session) bool { return s.State == session.Ended })
	for _, st := range []*twiliotest.Call{stream, stream2} {
		if errs := st.ProtocolErrors(); len(errs) != 0 {
			t.Fatalf("protocol errors on %s: %v", st.StreamSID(), errs)
		}
	}
	figure(t, "cluster_failover", "SIGKILL of the {sess} master -> first session write landing %v; -> cluster settled (replica master, one slot map) %v",
		firstWrite.Sub(killed).Round(time.Millisecond), settled.Sub(killed).Round(time.Millisecond))
}
