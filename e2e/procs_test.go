package e2e

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/internal/testwait"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiliotest"
)

// Scenarios across real `vivi-bridge serve` processes: pods sharing a call,
// pod loss, Redis restarts. procs_drain_test.go holds the drain, outage and
// model-fault ones.

// greeted is the model fake of these tests: a greeting with a transcript,
// paced like speech so that marks are echoed on Twilio's clock.
func greeted() realtimetest.Options {
	return realtimetest.Options{Greeting: realtimetest.Pattern(1600), GreetingTranscript: "Hello, reception."}
}

// A call answered on pod A, streamed on pod B, its record read through the
// admin API on pod C: three processes share the call through Redis only.
func TestProcsCallAcrossPods(t *testing.T) {
	w := newWorld(t, worldOptions{model: greeted()})
	w.startPod("pod-a")
	w.startPod("pod-b")
	w.startPod("pod-c")
	w.front.route("pod-a", kindWebhook)
	w.front.route("pod-b", kindStream, kindCallback)
	w.front.route("pod-c", kindAdmin)

	call := w.place()
	stream, conn := w.streamAndModel(call, 1)
	if err := stream.WaitPlayedBytes(w.ctx, 1600); err != nil {
		t.Fatal(err)
	}
	s := w.waitSession(call.CallSID(), "streaming on pod-b", func(s *session.Session) bool {
		return s.State == session.Streaming && s.PodID == "pod-b" && s.StreamSID == stream.StreamSID()
	})
	if got := w.front.servedBy(kindWebhook); !slices.Equal(got, []string{"pod-a"}) {
		t.Fatalf("voice webhook served by %v, want pod-a", got)
	}
	if got := w.front.servedBy(kindStream); !slices.Equal(got, []string{"pod-b"}) {
		t.Fatalf("stream served by %v, want pod-b", got)
	}
	if !timelineHas(s, session.EventAnswered) || !timelineHas(s, session.EventStreamStarted) {
		t.Fatalf("timeline %+v", s.Timeline)
	}
	speech := realtimetest.Tone(1600)
	stream.Say(speech)
	w.wantCallerAudio(conn, "call on pod-b")

	status, body := w.admin(http.MethodGet, "/v1/calls/"+call.CallSID())
	var got session.Session
	if status != http.StatusOK || json.Unmarshal(body, &got) != nil {
		t.Fatalf("admin read: %d %s", status, body)
	}
	if got.CallSID != call.CallSID() || got.PodID != "pod-b" || got.State != session.Streaming {
		t.Fatalf("admin read on pod-c: %+v", got)
	}
	if by := w.front.servedBy(kindAdmin); !slices.Equal(by, []string{"pod-c"}) {
		t.Fatalf("admin served by %v", by)
	}
	call.Hangup(w.ctx)
	w.waitSession(call.CallSID(), "ended", func(s *session.Session) bool { return s.State == session.Ended })
	if errs := stream.ProtocolErrors(); len(errs) != 0 {
		t.Fatalf("protocol errors: %v", errs)
	}
	// The pods' JSON logs: the stream's pod logs the call with its ids; no
	// pod logs a secret.
	b := w.pod("pod-b")
	testwait.Until(t, 10*time.Second, "a pod-b log line of the call", func() bool {
		for _, rec := range b.out.records() {
			if rec["call_sid"] == call.CallSID() && rec["stream_sid"] == stream.StreamSID() {
				return true
			}
		}
		return false
	})
	for _, name := range []string{"pod-a", "pod-b", "pod-c"} {
		out := w.pod(name).out.tail(maxLog)
		for _, secret := range []string{authToken, secret, adminTok, realtimetest.DefaultAPIKey} {
			if strings.Contains(out, secret) {
				t.Fatalf("%s logged a secret", name)
			}
		}
	}
}

// SIGKILL of the pod holding the stream mid-call: Twilio's sim requests the
// <Connect action>, the front sends it to the surviving pod (the dead one
// fails /readyz), and the call resumes there: the second model session is
// seeded with the transcript, the record names pod-b. A bystander call on
// pod-b is not affected.
func TestProcsSIGKILLResumesElsewhere(t *testing.T) {
	w := newWorld(t, worldOptions{model: greeted()})
	a := w.startPod("pod-a")
	w.startPod("pod-b")

	w.front.route("pod-b")
	bystander := w.place()
	bStream, bConn := w.streamAndModel(bystander, 1)

	w.front.route("pod-a")
	call := w.place()
	stream, conn := w.streamAndModel(call, 1)
	if err := stream.WaitPlayedBytes(w.ctx, 1600); err != nil {
		t.Fatal(err)
	}
	conn.Transcription("I need to talk about my invoice.")
	w.waitSession(call.CallSID(), "caller turn on pod-a", func(s *session.Session) bool {
		return s.PodID == "pod-a" && s.State == session.Streaming && len(s.Transcript) == 2
	})

	killed := a.signal(syscall.SIGKILL)
	if _, _, err := a.waitExit(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	stream2, conn2 := w.streamAndModel(call, 2)
	var seeded []string
	for i := 1; i <= 2; i++ {
		ev, err := conn2.WaitEvent(w.ctx, "conversation.item.create", i)
		if err != nil {
			t.Fatalf("seed item %d: %v", i, err)
		}
		seeded = append(seeded, string(ev.Raw))
	}
	all := strings.Join(seeded, "\n")
	for _, want := range []string{"Hello, reception.", "I need to talk about my invoice."} {
		if !strings.Contains(all, want) {
			t.Fatalf("resumed model session lacks %q:\n%s", want, all)
		}
	}
	s := w.waitSession(call.CallSID(), "streaming on pod-b", func(s *session.Session) bool {
		return s.State == session.Streaming && s.PodID == "pod-b" && s.StreamSID == stream2.StreamSID()
	})
	var types []string
	for _, ev := range s.Timeline {
		types = append(types, ev.Type+"("+ev.Detail+")")
	}
	if !slices.Contains(types, "reconnect("+stream.StreamSID()+")") || !slices.Contains(types, "stream_started(pod pod-b)") {
		t.Fatalf("timeline %v: want the reconnect of the lost stream and a stream started on pod-b", types)
	}
	if len(s.Transcript) < 2 || s.Transcript[0].Text != "Hello, reception." {
		t.Fatalf("transcript %+v", s.Transcript)
	}
	if by := w.front.servedBy(kindStream); by[len(by)-1] != "pod-b" {
		t.Fatalf("streams served by %v", by)
	}
	w.wantCallerAudio(conn2, "resumed call")
	g := measureHandover(stream, stream2)
	figure(t, "sigkill_resume", "kill->new stream %v; caller-heard gap (last mark on old stream -> new stream) %v",
		stream2.Started().Sub(killed).Round(time.Millisecond), g.callerFrame.Round(time.Millisecond))

	// The bystander on pod-b went on untouched, on its first stream.
	w.wantCallerAudio(bConn, "bystander")
	if n := len(bystander.Streams()); n != 1 {
		t.Fatalf("bystander has %d streams", n)
	}
	select {
	case <-bStream.Done():
		t.Fatal("bystander stream ended")
	default:
	}
	call.Hangup(w.ctx)
	bystander.Hangup(w.ctx)
	w.waitSession(call.CallSID(), "ended", func(s *session.Session) bool { return s.State == session.Ended })
}

// Redis stopped (SIGKILL, data kept on disk) and restarted mid-call: the
// live call keeps relaying on its pod through the outage (caller frames
// keep reaching the model), and after the restart it is still streaming
// and new state lands in the record.
func TestProcsRedisRestartKeepsLiveCall(t *testing.T) {
	w := newWorld(t, worldOptions{model: greeted()})
	redisRestartKeepsLiveCall(t, w)
}

// Redis restarted empty mid-call (no persistence, a cold replica): the live
// call keeps relaying through and after it, and its pod writes its record
// back (the emptiness itself is not asserted: the write-back may land at
// once).
func TestProcsRedisRestartEmptyKeepsRelaying(t *testing.T) {
	w := newWorld(t, worldOptions{model: greeted()})
	w.startPod("pod-a")
	call := w.place()
	stream, conn := w.streamAndModel(call, 1)
	w.waitSession(call.CallSID(), "streaming", func(s *session.Session) bool { return s.State == session.Streaming })
	w.redis.stop()
	w.wantCallerAudio(conn, "during the outage")
	w.redis.restartEmpty()
	stream.Say(realtimetest.Tone(1600))
	w.wantCallerAudio(conn, "after the empty restart")
	w.wantCallerAudio(conn, "still after the empty restart")
	if n := len(call.Streams()); n != 1 {
		t.Fatalf("%d streams", n)
	}
	w.allCallerAudioReachedModel([]*twiliotest.Call{stream}, []*realtimetest.Conn{conn})
	w.waitSession(call.CallSID(), "written back after the empty restart", func(s *session.Session) bool {
		return s.State == session.Streaming && s.PodID == "pod-a"
	})
	call.Hangup(w.ctx)
}

func redisRestartKeepsLiveCall(t *testing.T, w *world) {
	w.startPod("pod-a")
	w.startPod("pod-b")
	w.front.route("pod-a")
	call := w.place()
	stream, conn := w.streamAndModel(call, 1)
	if err := stream.WaitPlayedBytes(w.ctx, 1600); err != nil {
		t.Fatal(err)
	}
	w.waitSession(call.CallSID(), "streaming", func(s *session.Session) bool {
		return s.State == session.Streaming && len(s.Transcript) == 1
	})

	w.redis.stop()
	stream.Say(realtimetest.Tone(3200))
	w.wantCallerAudio(conn, "during the outage")
	w.wantCallerAudio(conn, "still during the outage")

	w.redis.restart()
	w.wantCallerAudio(conn, "after the restart")
	conn.Transcription("Said after Redis came back.")
	s := w.waitSession(call.CallSID(), "turn after the restart recorded", func(s *session.Session) bool {
		return slices.ContainsFunc(s.Transcript, func(tu session.Turn) bool { return tu.Text == "Said after Redis came back." })
	})
	if s.State != session.Streaming || s.PodID != "pod-a" || len(call.Streams()) != 1 {
		t.Fatalf("after the restart: %+v, %d streams", s, len(call.Streams()))
	}
	select {
	case <-call.Done():
		t.Fatalf("call ended: %s %v", call.Outcome(), call.Events())
	default:
	}
	// Every caller byte Twilio sent reached the model, in order.
	w.allCallerAudioReachedModel([]*twiliotest.Call{stream}, []*realtimetest.Conn{conn})
	if got := w.session(call.CallSID()); got.State != session.Streaming {
		t.Fatalf("session %+v", got)
	}
	call.Hangup(w.ctx)
	w.waitSession(call.CallSID(), "ended", func(s *session.Session) bool { return s.State == session.Ended })
}

// The harness itself: the front skips a pod that is not ready, and a
// process's exit code and time are observed (SIGTERM with no calls: the
// pod exits 0).
func TestProcsFrontSkipsUnreadyPod(t *testing.T) {
	w := newWorld(t, worldOptions{})
	a := w.startPod("pod-a")
	w.startPod("pod-b")
	w.front.route("pod-a")
	if st, _ := w.admin(http.MethodGet, "/v1/calls"); st != http.StatusOK {
		t.Fatalf("status %d", st)
	}
	sent := a.signal(syscall.SIGTERM)
	code, at, err := a.waitExit(30 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("pod-a after SIGTERM: code %d, %v\n%s", code, err, a.out.tail(4096))
	}
	t.Logf("pod-a exited %v after SIGTERM with no calls", at.Sub(sent).Round(time.Millisecond))
	if st, _ := w.admin(http.MethodGet, "/v1/calls"); st != http.StatusOK {
		t.Fatalf("status %d", st)
	}
	if by := w.front.servedBy(kindAdmin); !slices.Equal(by, []string{"pod-a", "pod-b"}) {
		t.Fatalf("admin served by %v, want pod-a then pod-b", by)
	}
	// A stale front still sends to the pod that is gone.
	w.front.setStale(kindAdmin, true)
	if st, _ := w.admin(http.MethodGet, "/v1/calls"); st != http.StatusBadGateway {
		t.Fatalf("stale front to an exited pod: status %d, want 502", st)
	}
	w.front.setStale(kindAdmin, false)
	// A held request waits at the front, its pod already chosen, until released.
	release := w.front.hold(kindAdmin)
	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequestWithContext(w.ctx, http.MethodGet, w.front.URL()+"/v1/calls", nil)
		req.Header.Set("Authorization", "Bearer "+adminTok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	testwait.Until(t, 10*time.Second, "the admin request held", func() bool { return w.front.heldCount(kindAdmin) == 1 })
	release()
	if st := <-done; st != http.StatusOK {
		t.Fatalf("held request answered %d", st)
	}
}
