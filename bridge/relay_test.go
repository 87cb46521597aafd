package bridge

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/session"
)

func TestGreetingReachesTwilioInOrder(t *testing.T) {
	greeting := realtimetest.Pattern(3200) // 400 ms in 4 chunks
	h := newHarness(t, harnessOpts{model: realtimetest.Options{Greeting: greeting, ChunkBytes: 800}})
	call, mc := h.call(nil)

	// The handshake and the session the model was configured with.
	if mc.Model() != "gpt-realtime" || mc.Header().Get("Authorization") != "Bearer "+realtimetest.DefaultAPIKey || mc.Header().Get("OpenAI-Beta") != "" {
		t.Fatalf("model handshake: model %q headers %v", mc.Model(), mc.Header())
	}
	up := waitEvent(t, mc, "session.update", 1)
	var su struct {
		Session struct {
			Type         string
			Instructions string
			Audio        struct {
				Input  struct{ Format struct{ Type string } }
				Output struct{ Format struct{ Type string } }
			}
		}
	}
	if err := json.Unmarshal(up.Raw, &su); err != nil {
		t.Fatal(err)
	}
	if su.Session.Type != "realtime" || su.Session.Audio.Input.Format.Type != "audio/pcmu" || su.Session.Audio.Output.Format.Type != "audio/pcmu" ||
		!strings.Contains(su.Session.Instructions, "The caller's number is +15551234.") {
		t.Fatalf("session.update: %s", up.Raw)
	}
	rc := waitEvent(t, mc, "response.create", 1)
	if !strings.Contains(string(rc.Raw), "Greet the caller with: Hello, ACME here!") {
		t.Fatalf("response.create: %s", rc.Raw)
	}

	waitFor(t, "the greeting at Twilio", func() bool { return call.ReceivedBytes() >= len(greeting) })
	if got := call.ReceivedAudio(); !bytes.Equal(got, greeting) {
		t.Fatalf("Twilio received %d bytes, not the greeting byte for byte", len(got))
	}
	// media, mark, media, mark, ... with unique mark names. The last mark
	// follows the last bytes: wait for the marks, not only the audio.
	marks := map[string]bool{}
	var kinds []string
	for _, m := range waitMessages(t, call, 4, isMark) {
		kinds = append(kinds, m.Event)
		if m.Event == "mark" {
			if marks[m.Mark] {
				t.Fatalf("mark %q sent twice", m.Mark)
			}
			marks[m.Mark] = true
		}
	}
	if want := strings.Repeat("media mark ", 4); strings.Join(kinds, " ")+" " != want {
		t.Fatalf("messages = %v, want %s", kinds, want)
	}
	if errs := call.ProtocolErrors(); len(errs) != 0 {
		t.Fatalf("protocol errors: %v", errs)
	}

	s := h.sessions.get(call.CallSID())
	if s.State != session.Streaming || s.PodID != "pod-a" || s.StreamSID != call.StreamSID() {
		t.Fatalf("session: state %s pod %q stream %q", s.State, s.PodID, s.StreamSID)
	}
	for _, typ := range []string{session.EventStreamStarted, session.EventModelConnected} {
		if _, ok := hasEvent(s, typ); !ok {
			t.Errorf("timeline lacks %s: %+v", typ, s.Timeline)
		}
	}
	if h.srv.ActiveCalls() != 1 {
		t.Fatalf("ActiveCalls = %d", h.srv.ActiveCalls())
	}

	// The greeting's transcript reaches the bridge after its last audio:
	// the caller hangs up once the agent turn is recorded, which it keeps.
	waitFor(t, "the greeting's agent turn", func() bool { return len(h.sessions.get(call.CallSID()).Transcript) > 0 })
	call.Stop()
	s = h.waitEnded(call.CallSID())
	if s.EndReason != ReasonCallerHangup {
		t.Fatalf("end reason %q", s.EndReason)
	}
	// the agent turn of the greeting was recorded
	if len(s.Transcript) == 0 || s.Transcript[0].Role != session.RoleAgent || s.Transcript[0].Text != "greeting" {
		t.Fatalf("transcript %+v", s.Transcript)
	}
	<-mc.Done()
	<-call.Done()
	waitFor(t, "no active call", func() bool { return h.srv.ActiveCalls() == 0 })
	if v := h.counter("vivi_bridge_streams_ended_total", "reason", ReasonCallerHangup); v != 1 {
		t.Fatalf("streams_ended_total{caller_hangup} = %v", v)
	}
}

func TestCallerAudioHeldUntilModelReady(t *testing.T) {
	h := newHarness(t, harnessOpts{agentDelay: 200 * time.Millisecond, dialDelay: 300 * time.Millisecond})
	sid, tok := h.newSession(nil)
	call := h.dial(sid, tok)
	call.Say(realtimetest.Tone(4000)) // recognisable audio, then silence
	mc := h.nextConn()
	if n := call.Sent(); n < 10 {
		t.Fatalf("only %d frames sent before the model connected; the test needs audio to be held", n)
	}
	waitEvent(t, mc, "input_audio_buffer.append", 1)
	sent := call.SentAudio()
	waitFor(t, "the caller audio at the model", func() bool { return len(mc.InputAudio()) >= len(sent) })
	if in := mc.InputAudio(); !bytes.Equal(in[:len(sent)], sent) {
		t.Fatalf("model input differs from the caller audio (%d vs %d bytes)", len(in), len(sent))
	}
	// Nothing reached the model before session.update, in another format.
	evs := mc.Events()
	if len(evs) == 0 || evs[0].Type != "session.update" {
		t.Fatalf("first event %q", evs[0].Type)
	}
	for _, e := range h.logs.All() {
		if strings.Contains(e.Message, "oldest dropped") {
			t.Fatalf("audio dropped: %v", e.ContextMap())
		}
	}
}

func TestHeldAudioBoundDropsOldest(t *testing.T) {
	h := newHarness(t, harnessOpts{
		dialDelay: 500 * time.Millisecond,
		cfg:       func(c *Config) { c.HoldAudio = 100 * time.Millisecond },
	})
	call, mc := h.call(nil)
	waitEvent(t, mc, "input_audio_buffer.append", 1)
	e := h.waitLog(0, "caller audio held too long while the model was not ready: oldest dropped")
	if e.ContextMap()["dropped_frames"].(int64) < 1 {
		t.Fatalf("log fields %v", e.ContextMap())
	}
	// The held audio that was kept is the most recent, in order: the model's
	// input is a contiguous part of what the caller sent.
	sent := call.SentAudio()
	waitFor(t, "audio at the model", func() bool { return len(mc.InputAudio()) >= 800 })
	in := mc.InputAudio()
	if !bytes.Contains(sent, in[:800]) {
		t.Fatal("model input is not a contiguous part of the caller audio")
	}
}

func TestBargeIn(t *testing.T) {
	greeting := realtimetest.Pattern(24000) // 3 s, delivered at once
	h := newHarness(t, harnessOpts{model: realtimetest.Options{Greeting: greeting, ChunkBytes: 800}})
	call, mc := h.call(nil)
	waitFor(t, "the greeting at Twilio", func() bool { return call.ReceivedBytes() >= len(greeting) })
	waitFor(t, "1 s of the greeting played", func() bool { return call.PlayedBytes() >= 8000 })
	mc.SpeechStarted(1000)

	tr := waitEvent(t, mc, "conversation.item.truncate", 1)
	var ev struct {
		ItemID       string `json:"item_id"`
		ContentIndex int    `json:"content_index"`
		AudioEndMs   int    `json:"audio_end_ms"`
	}
	if err := json.Unmarshal(tr.Raw, &ev); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the clear at Twilio", func() bool { return len(call.Clears()) == 1 })
	played := call.Clears()[0].PlayedBytesOfSinceLastIdle / 8
	t.Logf("audio_end_ms %d, Twilio played %d ms", ev.AudioEndMs, played)
	// Bounds that hold however slow the machine is (the arithmetic itself
	// is tested exactly, on an injected clock, in playout_test.go): the
	// bridge counts from the echoed marks, which Twilio sends once their
	// audio has played, so it never claims more than Twilio had played when
	// the clear arrived; and the caller heard at least 1 s before speaking,
	// of which every 100 ms chunk but the last was confirmed by its mark.
	if ev.AudioEndMs > played || ev.AudioEndMs < 900 {
		t.Fatalf("audio_end_ms %d, Twilio played %d ms of the item (at least 1000 before the caller spoke)", ev.AudioEndMs, played)
	}
	if ev.ContentIndex != 0 || ev.ItemID == "" {
		t.Fatalf("truncate %s", tr.Raw)
	}
	waitFor(t, "the truncation accepted", func() bool { return len(mc.Truncations()) == 1 })

	waitFor(t, "barge_in recorded", func() bool {
		_, ok := hasEvent(h.sessions.get(call.CallSID()), session.EventBargeIn)
		return ok
	})
	// Another speech start with nothing playing sends nothing.
	mc.SpeechStarted(3000)
	mc.Speak("", realtimetest.Pattern(800), "short")
	waitFor(t, "the next response at Twilio", func() bool { return call.ReceivedBytes() >= len(greeting)+800 })
	if n := len(call.Clears()); n != 1 {
		t.Fatalf("%d clears, want 1", n)
	}
	if n := len(mc.Truncations()); n != 1 {
		t.Fatalf("%d truncations, want 1", n)
	}
	if v := h.counter("vivi_bridge_barge_ins_total", "", ""); v != 1 {
		t.Fatalf("barge_ins_total = %v", v)
	}
}
