package e2e

// Scenarios of issue 10 with real processes: drain by migration, Redis
// outages, a model that never answers. The figures of the closing note are
// printed as "FIGURE ...".

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/internal/testwait"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiliotest"
)

// eventMigrated is the timeline event of a migrated call (issue 10 part 1).
const eventMigrated = "migrated"

func timelineEvent(s *session.Session, typ string) (session.Event, bool) {
	for _, ev := range s.Timeline {
		if ev.Type == typ {
			return ev, true
		}
	}
	return session.Event{}, false
}

// callUpdates lists the REST updates of one call.
func (w *world) callUpdates(sid string) []twiliotest.RESTRequest {
	var out []twiliotest.RESTRequest
	for _, r := range w.tw.REST().Requests() {
		if r.Method == http.MethodPost && strings.HasSuffix(r.Path, "/Calls/"+sid+".json") {
			out = append(out, r)
		}
	}
	return out
}

// SIGTERM mid-call: the draining pod migrates the call to another pod (a
// REST update with a fresh <Connect><Stream>), the new pod restores the
// conversation without greeting again, the timeline records `migrated`
// with both pod names, and the drained pod exits by itself with code 0
// well before SHUTDOWN_GRACE.
func TestProcsSIGTERMMigratesCall(t *testing.T) {
	w := newWorld(t, worldOptions{model: greeted(), env: []string{"SHUTDOWN_GRACE=60s"}})
	a := w.startPod("pod-a")
	w.startPod("pod-b")
	w.front.route("pod-b")
	bystander := w.place() // on pod-b: must not notice pod-a's drain
	_, bConn := w.streamAndModel(bystander, 1)
	defer bystander.Hangup(w.ctx)
	w.front.route("pod-a")
	call := w.place()
	stream, conn := w.streamAndModel(call, 1)
	if err := stream.WaitPlayedBytes(w.ctx, 1600); err != nil {
		t.Fatal(err)
	}
	conn.Transcription("I would like to change my booking.")
	w.waitSession(call.CallSID(), "caller turn", func(s *session.Session) bool { return len(s.Transcript) == 2 })

	// The agent is speaking when SIGTERM comes: the call migrates at the
	// quiet moment after it, all of it played (Twilio's marks).
	speech := realtimetest.Pattern(4000)
	conn.Speak("", speech, "Your booking is changed.")
	if err := stream.WaitPlayedBytes(w.ctx, 1600+800); err != nil {
		t.Fatal(err)
	}
	sent := a.signal(syscall.SIGTERM)
	stream2, conn2 := w.streamAndModel(call, 2)
	if got := len(stream.PlayedAudio()); got < 1600+len(speech) {
		t.Fatalf("migrated with the agent's answer cut: %d of %d bytes played on the old stream", got, 1600+len(speech))
	}
	ups := w.callUpdates(call.CallSID())
	if len(ups) == 0 || !strings.Contains(ups[len(ups)-1].Form.Get("Twiml"), "<Stream") {
		t.Fatalf("no REST update with a fresh <Connect><Stream>: %+v", ups)
	}
	var seeded []string
	for i := 1; i <= 2; i++ {
		ev, err := conn2.WaitEvent(w.ctx, "conversation.item.create", i)
		if err != nil {
			t.Fatalf("seed item %d: %v", i, err)
		}
		seeded = append(seeded, string(ev.Raw))
	}
	for _, want := range []string{"Hello, reception.", "I would like to change my booking."} {
		if !strings.Contains(strings.Join(seeded, "\n"), want) {
			t.Fatalf("migrated session lacks %q", want)
		}
	}
	s := w.waitSession(call.CallSID(), "streaming on pod-b, migrated", func(s *session.Session) bool {
		return s.State == session.Streaming && s.PodID == "pod-b" && s.StreamSID == stream2.StreamSID() && timelineHas(s, eventMigrated)
	})
	if ev, _ := timelineEvent(s, eventMigrated); !strings.Contains(ev.Detail, "pod-a") || !strings.Contains(ev.Detail, "pod-b") {
		t.Fatalf("migrated event %+v does not name both pods", ev)
	}
	w.wantCallerAudio(conn2, "migrated call")
	for _, ev := range conn2.Events() {
		if ev.Type == "response.create" {
			t.Fatal("the new pod greeted again (response.create on the migrated session)")
		}
	}
	code, exited, err := a.waitExit(30 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("pod-a after SIGTERM: exit code %d, %v", code, err)
	}
	g := measureHandover(stream, stream2)
	figure(t, "sigterm_migration", "SIGTERM->exit %v; caller-heard gap %v (agent frame %v)",
		exited.Sub(sent).Round(time.Millisecond), g.callerFrame.Round(time.Millisecond), g.agentFrame.Round(time.Millisecond))
	w.allCallerAudioReachedModel([]*twiliotest.Call{stream, stream2}, []*realtimetest.Conn{conn, conn2})
	w.wantCallerAudio(bConn, "bystander on pod-b")
	if n := len(bystander.Streams()); n != 1 {
		t.Fatalf("bystander has %d streams", n)
	}
	call.Hangup(w.ctx)
	w.waitSession(call.CallSID(), "ended", func(s *session.Session) bool { return s.State == session.Ended })
}

// SIGTERM with a webhook in flight: the front chose pod-a before it began
// to drain (a load balancer's propagation delay); pod-a answers TwiML that
// lets the front pick a ready pod, and the caller is not dropped. pod-a
// has a live call, so it is still up (migrating it) when the webhook lands.
func TestProcsSIGTERMWebhookInFlight(t *testing.T) {
	w := newWorld(t, worldOptions{model: greeted(), env: []string{"SHUTDOWN_GRACE=60s"}})
	a := w.startPod("pod-a")
	w.startPod("pod-b")
	w.front.route("pod-a")
	live := w.place()
	w.streamAndModel(live, 1)
	release := w.front.hold(kindWebhook)
	placed := make(chan *twiliotest.SimCall, 1)
	go func() {
		c, err := w.tw.PlaceCall(w.ctx, twiliotest.CallParams{
			From: "sip:+14155550100@" + callerIP, To: "sip:1001@vivi.sip.twilio.com;transport=tls", SourceIP: callerIP,
		})
		if err != nil {
			t.Errorf("place call: %v", err)
		}
		placed <- c
	}()
	testwait.Until(t, 10*time.Second, "the webhook held at the front", func() bool { return w.front.heldCount(kindWebhook) == 1 })
	sent := a.signal(syscall.SIGTERM)
	probe := &http.Client{Timeout: time.Second}
	testwait.Until(t, 10*time.Second, "pod-a unready", func() bool { return !a.ready(probe) })
	release()
	call := <-placed
	defer live.Hangup(w.ctx)
	if call == nil {
		t.FailNow()
	}
	if r := call.Rejected(); r != "" {
		t.Fatalf("the webhook in flight was answered <Reject reason=%q>", r)
	}
	stream, conn := w.streamAndModel(call, 1)
	w.waitSession(call.CallSID(), "streaming on pod-b", func(s *session.Session) bool {
		return s.State == session.Streaming && s.PodID == "pod-b" && s.StreamSID == stream.StreamSID()
	})
	w.wantCallerAudio(conn, "call answered during the drain")
	code, exited, err := a.waitExit(30 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("pod-a: exit code %d, %v", code, err)
	}
	t.Logf("pod-a exited %v after SIGTERM", exited.Sub(sent).Round(time.Millisecond))
	call.Hangup(w.ctx)
}

// SIGTERM with a webhook and its stream in flight: the front has not
// noticed the drain, so the stream lands on the draining pod too. pod-a
// accepts it (never a refusal) and migrates the call to pod-b.
func TestProcsSIGTERMStreamLandsOnDrainingPod(t *testing.T) {
	w := newWorld(t, worldOptions{model: greeted(), env: []string{"SHUTDOWN_GRACE=60s"}})
	a := w.startPod("pod-a")
	w.startPod("pod-b")
	w.front.route("pod-a")
	live := w.place() // keeps pod-a up while it drains
	w.streamAndModel(live, 1)
	defer live.Hangup(w.ctx)
	w.front.setStale(kindWebhook, true)
	w.front.setStale(kindStream, true)
	a.signal(syscall.SIGTERM)
	probe := &http.Client{Timeout: time.Second}
	testwait.Until(t, 10*time.Second, "pod-a unready", func() bool { return !a.ready(probe) })
	call := w.place()
	if r := call.Rejected(); r != "" {
		t.Fatalf("answered <Reject reason=%q> while draining", r)
	}
	w.front.setStale(kindStream, false) // the front catches up: the migrated stream goes to pod-b
	stream, _ := w.streamAndModel(call, 1)
	if stream.ClosedByServer() && stream.Err() != nil {
		t.Fatalf("the draining pod refused the stream: %v", stream.Err())
	}
	stream2, conn2 := w.streamAndModel(call, 2)
	w.waitSession(call.CallSID(), "migrated to pod-b", func(s *session.Session) bool {
		return s.State == session.Streaming && s.PodID == "pod-b" && s.StreamSID == stream2.StreamSID()
	})
	w.wantCallerAudio(conn2, "call migrated off the draining pod")
	if code, _, err := a.waitExit(30 * time.Second); err != nil || code != 0 {
		t.Fatalf("pod-a: exit code %d, %v", code, err)
	}
}

// blackHole is a model endpoint that accepts TCP connections and never
// answers the websocket upgrade.
func blackHole(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "ws://" + ln.Addr().String() + "/v1/realtime"
}

// A model that never answers: with a fallbackDestination the caller is
// transferred there (REFER) within a bound; without one the caller hears a
// short apology (<Say>) and the call ends. Neither is left in silence.
func TestProcsModelNeverAnswers(t *testing.T) {
	t.Run("fallback transfer", func(t *testing.T) {
		w := newWorld(t, worldOptions{modelURL: blackHole(t)})
		w.startPod("pod-a")
		call := w.place()
		placed := time.Now()
		select {
		case <-call.Done():
		case <-time.After(30 * time.Second):
			t.Fatalf("call still up after 30 s with no model: %v", call.Events())
		}
		if call.Outcome() != twiliotest.OutcomeTransferred {
			t.Fatalf("outcome %s: %v", call.Outcome(), call.Events())
		}
		s := w.waitSession(call.CallSID(), "fallback transfer recorded", func(s *session.Session) bool {
			return len(s.Transfers) == 1 && s.State == session.Transferred && s.Transfers[0].Via == "fallback"
		})
		if !strings.Contains(s.Transfers[0].Destination, "Front Desk") {
			t.Fatalf("transfer %+v", s.Transfers[0])
		}
		figure(t, "model_never_answers_fallback", "placed->ended %v", time.Since(placed).Round(time.Millisecond))
	})
	t.Run("apology", func(t *testing.T) {
		yaml := strings.Replace(agentYAML, "    fallbackDestination: Front Desk\n", "", 1)
		w := newWorld(t, worldOptions{modelURL: blackHole(t), yaml: yaml})
		w.startPod("pod-a")
		call := w.place()
		select {
		case <-call.Done():
		case <-time.After(30 * time.Second):
			t.Fatalf("call still up after 30 s with no model: %v", call.Events())
		}
		said := false
		for _, u := range w.callUpdates(call.CallSID()) {
			said = said || strings.Contains(u.Form.Get("Twiml"), "<Say")
		}
		for _, ev := range call.Events() {
			said = said || strings.Contains(ev.What, "-> Say")
		}
		if !said {
			t.Fatalf("no <Say> apology: updates %+v, events %v", w.callUpdates(call.CallSID()), call.Events())
		}
		s := w.waitSession(call.CallSID(), "ended with a reason", func(s *session.Session) bool {
			return s.State == session.Ended && s.EndReason != ""
		})
		t.Logf("end reason %q", s.EndReason)
	})
}

// Redis stopped mid-call: the live call keeps relaying, new calls placed
// during the outage are answered <Connect><Stream> and stream (routing from
// the in-process copy, /readyz still ready), and after the restart the
// record catches up (the turn made during the outage lands, the calls
// answered during it have their sessions).
func TestProcsRedisOutageAnswersAndCatchesUp(t *testing.T) {
	for _, empty := range []bool{false, true} {
		t.Run(fmt.Sprintf("restart_empty=%v", empty), func(t *testing.T) {
			w := newWorld(t, worldOptions{model: greeted()})
			w.startPod("pod-a")
			w.startPod("pod-b")
			w.front.route("pod-a")
			live := w.place()
			stream, conn := w.streamAndModel(live, 1)
			if err := stream.WaitPlayedBytes(w.ctx, 1600); err != nil {
				t.Fatal(err)
			}
			w.waitSession(live.CallSID(), "streaming", func(s *session.Session) bool { return len(s.Transcript) == 1 })

			w.redis.stop()
			conn.Transcription("Said during the outage.")
			const placed = 5
			var answered []*twiliotest.SimCall
			for i := range placed {
				w.front.route([]string{"pod-a", "pod-b"}[i%2], kindWebhook)
				c, err := w.tw.PlaceCall(w.ctx, twiliotest.CallParams{
					From: "sip:+14155550100@" + callerIP, To: "sip:1001@vivi.sip.twilio.com;transport=tls", SourceIP: callerIP,
				})
				if err == nil && c.Rejected() == "" {
					if _, err := c.WaitStream(w.ctx, 1); err == nil {
						answered = append(answered, c)
					}
				}
			}
			figure(t, "outage_calls_answered", "%d of %d calls placed during the Redis outage answered with a stream", len(answered), placed)
			w.wantCallerAudio(conn, "live call during the outage")
			if len(answered) != placed {
				t.Fatalf("%d of %d calls answered during the outage", len(answered), placed)
			}

			if empty {
				w.redis.restartEmpty()
			} else {
				w.redis.restart()
			}
			w.wantCallerAudio(conn, "live call after the restart")
			w.waitSession(live.CallSID(), "outage turn caught up", func(s *session.Session) bool {
				return s.State == session.Streaming && slices.ContainsFunc(s.Transcript, func(tu session.Turn) bool { return tu.Text == "Said during the outage." })
			})
			for _, c := range answered {
				w.waitSession(c.CallSID(), "session of a call answered during the outage", func(s *session.Session) bool {
					return s.State == session.Streaming
				})
			}
			// Configuration back (CONFIG_FILE re-applied after an empty restart): a new call is answered.
			after := w.place()
			if after.Rejected() != "" {
				t.Fatalf("call after the restart rejected %q", after.Rejected())
			}
			if _, err := after.WaitStream(w.ctx, 1); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// The closing note's drain figures: 50 live calls on pod-a, SIGTERM: every
// call migrates to pod-b or pod-c (at least 20 migrations measured on
// Twilio's mark clock), and the time from SIGTERM to pod-a's exit.
func TestProcsDrainFigures50Calls(t *testing.T) {
	w := newWorld(t, worldOptions{model: greeted(), env: []string{"SHUTDOWN_GRACE=120s"}, timeout: 3 * time.Minute})
	a := w.startPod("pod-a")
	w.startPod("pod-b")
	w.startPod("pod-c")
	w.front.route("pod-a")
	const n = 50
	calls := make([]*twiliotest.SimCall, n)
	first := make([]*twiliotest.Call, n)
	conns := make([]*realtimetest.Conn, n)
	for i := range calls {
		calls[i] = w.place()
		first[i], conns[i] = w.streamAndModel(calls[i], 1)
	}
	for i, s := range first {
		if err := s.WaitPlayedBytes(w.ctx, 1600); err != nil {
			t.Fatalf("call %d greeting: %v", i, err)
		}
	}
	// Every agent is speaking (1 s) when SIGTERM comes: the gap is measured
	// from the end of what Twilio played on the old stream.
	for _, c := range conns {
		c.Speak("", realtimetest.Pattern(8000), "One moment please.")
	}
	w.front.route("pod-b")
	sent := a.signal(syscall.SIGTERM)
	migrateCtx, cancel := context.WithTimeout(w.ctx, time.Minute)
	defer cancel()
	var caller, agent durations
	for i, c := range calls {
		next, err := c.WaitStream(migrateCtx, 2)
		if err != nil {
			t.Fatalf("call %d not migrated within a minute of SIGTERM: %v (events %v)", i, err, c.Events())
		}
		g := measureHandover(first[i], next)
		caller = append(caller, g.callerFrame)
		if g.agentFrame >= 0 {
			agent = append(agent, g.agentFrame)
		}
	}
	code, exited, err := a.waitExit(time.Minute)
	if err != nil || code != 0 {
		t.Fatalf("pod-a: exit code %d, %v", code, err)
	}
	figure(t, "drain_50_calls", "SIGTERM->exit %v with %d live calls", exited.Sub(sent).Round(time.Millisecond), n)
	figure(t, "migration_gap", "caller frame %s; agent frame %s", caller, agent)
	if len(caller) < 20 {
		t.Fatalf("only %d migrations measured", len(caller))
	}
	for _, c := range calls {
		c.Hangup(w.ctx)
	}
}

// SIGTERM on the only pod (the last pod of a deployment, or a rollout whose
// new pod is not ready yet): the call is not moved (there is no ready pod
// behind the front to take it), it keeps relaying on the draining pod, and
// once a new pod is ready it moves there and the old pod exits by itself.
func TestProcsSIGTERMLastPodWaitsForAReadyPod(t *testing.T) {
	w := newWorld(t, worldOptions{model: greeted(), env: []string{"SHUTDOWN_GRACE=60s"}})
	a := w.startPod("pod-a")
	call := w.place()
	stream, conn := w.streamAndModel(call, 1)
	if err := stream.WaitPlayedBytes(w.ctx, 1600); err != nil {
		t.Fatal(err)
	}
	a.signal(syscall.SIGTERM)
	testwait.Until(t, 10*time.Second, "pod-a to turn unready", func() bool { return !a.ready(http.DefaultClient) })
	w.wantCallerAudio(conn, "on the draining pod with no other pod")
	w.wantCallerAudio(conn, "still on the draining pod")
	if ups := w.callUpdates(call.CallSID()); len(ups) != 0 {
		t.Fatalf("the call was moved with no ready pod to take it: %+v", ups)
	}
	if n := len(call.Streams()); n != 1 {
		t.Fatalf("%d streams", n)
	}
	w.startPod("pod-b")
	stream2, conn2 := w.streamAndModel(call, 2)
	w.wantCallerAudio(conn2, "moved to the new pod")
	s := w.waitSession(call.CallSID(), "streaming on pod-b", func(s *session.Session) bool {
		return s.State == session.Streaming && s.PodID == "pod-b" && s.StreamSID == stream2.StreamSID()
	})
	if !timelineHas(s, eventMigrated) {
		t.Fatalf("timeline %+v", s.Timeline)
	}
	if code, _, err := a.waitExit(30 * time.Second); err != nil || code != 0 {
		t.Fatalf("pod-a after SIGTERM: exit code %d, %v", code, err)
	}
	w.allCallerAudioReachedModel([]*twiliotest.Call{stream, stream2}, []*realtimetest.Conn{conn, conn2})
	call.Hangup(w.ctx)
}
