package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/internal/testwait"
	"github.com/vivi/bridge/session"
)

// recMigrator records migration requests and answers them with err.
type recMigrator struct {
	mu      sync.Mutex
	reqs    []MigrateRequest
	err     error
	added   *testwait.Notifier
	noPeers atomic.Bool // CanMigrate answers false
}

func newRecMigrator() *recMigrator { return &recMigrator{added: testwait.NewNotifier()} }

func (m *recMigrator) CanMigrate() bool { return !m.noPeers.Load() }

func (m *recMigrator) Migrate(_ context.Context, req MigrateRequest) error {
	m.mu.Lock()
	m.reqs = append(m.reqs, req)
	err := m.err
	m.mu.Unlock()
	m.added.Notify()
	return err
}

func (m *recMigrator) requests() []MigrateRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]MigrateRequest(nil), m.reqs...)
}

func (m *recMigrator) wait(t *testing.T, n int) []MigrateRequest {
	t.Helper()
	m.added.Wait(t, waitLimit, "migration requests", func() bool { return len(m.requests()) >= n })
	return m.requests()
}

// drain starts Shutdown and returns its result channel.
func drain(h *harness) <-chan error {
	done := make(chan error, 1)
	go func() { done <- h.srv.Shutdown(context.Background()) }()
	return done
}

// wantNoMigrationWhile checks that the call loop ran through more caller
// frames (each one a chance for tryMigrate) without asking to migrate.
func wantNoMigrationWhile(t *testing.T, mig *recMigrator, mc *realtimetest.Conn) {
	t.Helper()
	n := 0
	for _, ev := range mc.Events() {
		if ev.Type == "input_audio_buffer.append" {
			n++
		}
	}
	waitEvent(t, mc, "input_audio_buffer.append", n+10)
	if r := mig.requests(); len(r) != 0 {
		t.Fatalf("migrated while the call was not quiet: %+v", r)
	}
}

// TestMigrateWaitsForAgentAudioThenBound: a draining server does not move
// a call while the agent's audio is still playing at Twilio; when the quiet
// wait (MigrateQuietWait, a fake timer) is over it moves it anyway, with
// the stream's call, stream, pod and fence. Twilio's stop (the effect of
// the REST update) ends the stream, not the call: the session stays
// streaming, and Shutdown returns once the stream is gone.
func TestMigrateWaitsForAgentAudioThenBound(t *testing.T) {
	timers := newFakeAfter()
	mig := newRecMigrator()
	h := newHarness(t, harnessOpts{migrator: mig, cfg: func(c *Config) { c.After = timers.after }})
	call, mc := h.call(nil)
	waitFor(t, "the greeting at Twilio", func() bool { return call.ReceivedBytes() >= 1600 })
	mc.Speak("item_long", realtimetest.Pattern(8000*60), "A long answer.") // a minute: it cannot finish
	waitFor(t, "the answer at Twilio", func() bool { return call.ReceivedBytes() >= 1600+8000 })

	done := drain(h)
	quietWait := timers.await(t, 10*time.Second, 2) // the first 10 s timer is StartTimeout
	wantNoMigrationWhile(t, mig, mc)
	quietWait.fire()
	reqs := mig.wait(t, 1)
	s := h.sessions.get(call.CallSID())
	if r := reqs[0]; r.CallSID != call.CallSID() || r.StreamSID != call.StreamSID() || r.PodID != "pod-a" || r.Fence != s.Fence || r.Fence == 0 {
		t.Fatalf("request %+v, session fence %d", r, s.Fence)
	}
	if e := h.waitLog(zapcore.InfoLevel, "migrating the call to another pod"); e.ContextMap()["why"] != "quiet wait over" {
		t.Fatalf("log %v", e.ContextMap())
	}
	call.Stop() // Twilio plays the update: stop on this stream
	waitDone(t, "the Twilio socket to close", call.Done())
	if err := <-done; err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if s := h.sessions.get(call.CallSID()); s.State != session.Streaming || s.EndReason != "" {
		t.Fatalf("the migrated stream ended the call: %s %q", s.State, s.EndReason)
	}
	if e := h.waitLog(zapcore.InfoLevel, "call ended"); e.ContextMap()["reason"] != ReasonMigrated {
		t.Fatalf("call ended %v", e.ContextMap())
	}
}

// TestMigrateWaitsForCallerToStopSpeaking: with nothing playing (the
// caller's barge-in cleared it), a caller who speaks (speech_started, no
// speech_stopped yet) holds the move back;
// speech_stopped makes it a quiet moment and the call moves at once, before
// the quiet wait is over.
func TestMigrateWaitsForCallerToStopSpeaking(t *testing.T) {
	timers := newFakeAfter()
	mig := newRecMigrator()
	h := newHarness(t, harnessOpts{migrator: mig, cfg: func(c *Config) { c.After = timers.after }})
	call, mc := h.call(nil)
	waitFor(t, "the greeting at Twilio", func() bool { return call.ReceivedBytes() >= 1600 })
	mc.Speak("item_long", realtimetest.Pattern(8000*60), "A long answer.")
	waitFor(t, "the answer at Twilio", func() bool { return call.ReceivedBytes() >= 1600+8000 })
	// The caller barges in: the loop has handled speech_started once the
	// clear reached Twilio; nothing plays from then on.
	mc.SendRaw([]byte(`{"type":"input_audio_buffer.speech_started","event_id":"ev_s1","audio_start_ms":100,"item_id":"item_c1"}`))
	waitFor(t, "the barge-in's clear", func() bool { return len(call.Clears()) > 0 })
	waitEvent(t, mc, "conversation.item.truncate", 1)

	done := drain(h)
	timers.await(t, 10*time.Second, 2)
	wantNoMigrationWhile(t, mig, mc)
	mc.SendRaw([]byte(`{"type":"input_audio_buffer.speech_stopped","event_id":"ev_s2","audio_end_ms":900,"item_id":"item_c1"}`))
	mig.wait(t, 1)
	if e := h.waitLog(zapcore.InfoLevel, "migrating the call to another pod"); e.ContextMap()["why"] != "quiet moment" {
		t.Fatalf("log %v", e.ContextMap())
	}
	call.Stop()
	waitDone(t, "the Twilio socket to close", call.Done())
	if err := <-done; err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
}

// TestMigrateRetriesWithBackoff: a refused REST update is retried after a
// backoff (fake timers: 200 ms, then 400 ms), until it succeeds.
func TestMigrateRetriesWithBackoff(t *testing.T) {
	timers := newFakeAfter()
	mig := newRecMigrator()
	mig.err = errors.New("twilio 500")
	h := newHarness(t, harnessOpts{migrator: mig, cfg: func(c *Config) { c.After = timers.after }})
	call, _ := h.call(nil)
	waitFor(t, "the greeting at Twilio", func() bool { return call.ReceivedBytes() >= 1600 })
	done := drain(h)
	timers.await(t, 10*time.Second, 2).fire()
	mig.wait(t, 1)
	timers.await(t, migrateRetryMin, 1).fire()
	mig.wait(t, 2)
	mig.mu.Lock()
	mig.err = nil
	mig.mu.Unlock()
	timers.await(t, 2*migrateRetryMin, 1).fire()
	mig.wait(t, 3)
	h.waitLog(zapcore.InfoLevel, "migration under way: Twilio moves the stream")
	call.Stop()
	waitDone(t, "the Twilio socket to close", call.Done())
	if err := <-done; err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
}

// TestMigrateStopsOnAFinalError: a move that cannot succeed (the call
// ended, Twilio refused the update as a client error) is not retried every
// few seconds until the drain deadline; it is logged once and the call
// stays, the stream untouched.
func TestMigrateStopsOnAFinalError(t *testing.T) {
	timers := newFakeAfter()
	mig := newRecMigrator()
	mig.err = fmt.Errorf("%w: twilio 404 call not in progress", ErrCannotMigrate)
	h := newHarness(t, harnessOpts{migrator: mig, cfg: func(c *Config) { c.After = timers.after }})
	call, mc := h.call(nil)
	waitFor(t, "the greeting at Twilio", func() bool { return call.ReceivedBytes() >= 1600 })
	done := drain(h)
	timers.await(t, 10*time.Second, 2).fire()
	mig.wait(t, 1)
	h.waitLog(zapcore.WarnLevel, "the call cannot be moved: it stays on this pod")
	if n := timers.pending(migrateRetryMin); n != 0 {
		t.Fatalf("%d retry timers armed after a final error", n)
	}
	waitEvent(t, mc, "input_audio_buffer.append", 20) // still relaying
	if n := len(mig.requests()); n != 1 {
		t.Fatalf("%d migration requests, want 1", n)
	}
	call.Stop()
	waitDone(t, "the Twilio socket to close", call.Done())
	if err := <-done; err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
}

// fencedTransfers checks the fence like transfer.Service.StartFenced.
type fencedTransfers struct {
	ms   *memSessions
	reqs chan TransferRequest
}

func (f fencedTransfers) Transfer(ctx context.Context, req TransferRequest) error {
	f.reqs <- req
	_, err := f.ms.UpdateSession(ctx, req.CallSID, func(s *session.Session) error {
		if err := s.CheckFence(req.Fence); err != nil {
			return err
		}
		s.State = session.Transferring
		return nil
	})
	return err
}

// TestFencedStreamCannotWriteOrTransfer: once a newer stream (pod B) has
// taken the call, the older one (pod A, "paused" meanwhile) cannot start a
// transfer (its request carries the old fence and is refused), nor write
// the session (its lease renewal is refused): it ends its stream, logs it
// once, and leaves B's session untouched.
func TestFencedStreamCannotWriteOrTransfer(t *testing.T) {
	for _, how := range []string{"transfer", "lease renewal"} {
		t.Run(how, func(t *testing.T) {
			timers := newFakeAfter()
			ms := &memSessions{m: map[string]*session.Session{}}
			xfers := fencedTransfers{ms: ms, reqs: make(chan TransferRequest, 4)}
			ha := newHarness(t, harnessOpts{sessions: ms, transfers: xfers, cfg: func(c *Config) { c.After = timers.after }})
			hb := newHarness(t, harnessOpts{sessions: ms, cfg: func(c *Config) { c.PodID = "pod-b" }})
			callA, mcA := ha.call(nil)
			waitEvent(t, mcA, "input_audio_buffer.append", 1)
			sid := callA.CallSID()
			fenceA := ms.get(sid).Fence

			// Twilio reconnects the call to B (connect-ended cleared the
			// stream); A does not notice.
			_, _ = ms.UpdateSession(context.Background(), sid, func(s *session.Session) error { s.StreamSID = ""; return nil })
			tok, _, err := hb.tokens.Issue(sid, testChannel, testAgent().ID, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			callB := hb.dial(sid, tok)
			waitEvent(t, hb.nextConn(), "input_audio_buffer.append", 1)
			waitFor(t, "B owns the call", func() bool { s := ms.get(sid); return s.PodID == "pod-b" && s.Fence > fenceA })
			before := ms.get(sid)

			switch how {
			case "transfer":
				// Bound to Front Desk. The digit's timeline event is a
				// write too: whichever of it and the transfer reaches the
				// store first is refused and ends A's stream.
				callA.Digit("0")
				waitFor(t, "the announcement wait, or the end of A's stream", func() bool {
					select {
					case <-callA.Done():
						return true
					default:
					}
					return fireAll(timers, 15*time.Second, 30*time.Second)
				})
				select {
				case req := <-xfers.reqs:
					if req.Fence != fenceA {
						t.Fatalf("transfer request fence %d, want A's %d", req.Fence, fenceA)
					}
				case <-callA.Done():
				case <-time.After(waitLimit):
					t.Fatal("neither a transfer nor the end of A's stream")
				}
			case "lease renewal":
				timers.await(t, 5*time.Second, 1).fire()
			}
			waitDone(t, "A's stream to end", callA.Done())
			e := ha.waitLog(zapcore.WarnLevel, "the call is owned by a newer stream (fenced): ending this stream without touching the session")
			_ = e
			after := ms.get(sid)
			if after.State != session.Streaming || after.PodID != "pod-b" || after.StreamSID != callB.StreamSID() ||
				after.Fence != before.Fence || after.EndReason != "" || len(after.Transfers) != 0 {
				t.Fatalf("A changed B's session: %+v", after)
			}
			if n := ha.logs.FilterMessage("the call is owned by a newer stream (fenced): ending this stream without touching the session").Len(); n != 1 {
				t.Fatalf("fenced logged %d times, want once", n)
			}
		})
	}
}

// fireAll fires every timer of the durations ds asked for so far and
// reports whether there was one.
func fireAll(f *fakeAfter, ds ...time.Duration) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	fired := false
	for _, ft := range f.timers {
		for _, d := range ds {
			if ft.d == d {
				fired = true
				select {
				case ft.c <- time.Now():
				default:
				}
			}
		}
	}
	return fired
}

// TestMigrateWaitsForAReadyPod: a draining pod with no other pod ready
// (CanMigrate false: the last pod of a deployment) keeps its call, even past
// the quiet wait, and moves it as soon as a pod is ready.
func TestMigrateWaitsForAReadyPod(t *testing.T) {
	timers := newFakeAfter()
	mig := newRecMigrator()
	mig.noPeers.Store(true)
	h := newHarness(t, harnessOpts{migrator: mig, cfg: func(c *Config) { c.After = timers.after }})
	call, mc := h.call(nil)
	waitFor(t, "the greeting at Twilio", func() bool { return call.ReceivedBytes() >= 1600 })
	waitFor(t, "the greeting played", func() bool { return len(call.MarkEchoes()) > 0 })

	done := drain(h)
	timers.await(t, 10*time.Second, 2).fire() // the quiet wait is over too
	wantNoMigrationWhile(t, mig, mc)
	mig.noPeers.Store(false)
	reqs := mig.wait(t, 1)
	if reqs[0].CallSID != call.CallSID() {
		t.Fatalf("request %+v", reqs[0])
	}
	call.Stop()
	waitDone(t, "the Twilio socket to close", call.Done())
	if err := <-done; err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
}
