package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiliotest"
)

// awaitRotateTimer waits for the timer of the next session: about a fifth
// of a session's life before its expires_at (rotateShare).
func awaitRotateTimer(t *testing.T, f *fakeAfter, life time.Duration) *fakeTimer {
	t.Helper()
	lo, hi := life-life/rotateShare-2*time.Second, life-life/rotateShare+time.Second
	var got *fakeTimer
	f.added.Wait(t, waitLimit, "the rotation timer", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, ft := range f.timers {
			if ft.d > lo && ft.d <= hi {
				got = ft
				return true
			}
		}
		return false
	})
	return got
}

// itemsCreated returns the items of the conversation.item.create events mc got.
func itemsCreated(t *testing.T, mc *realtimetest.Conn) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, ev := range mc.Events() {
		if ev.Type != "conversation.item.create" {
			continue
		}
		var e struct {
			Item map[string]any `json:"item"`
		}
		if err := json.Unmarshal(ev.Raw, &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e.Item)
	}
	return out
}

// TestModelRotation: a session with a short expires_at is replaced before
// it expires, make-before-break: the next session is configured and seeded
// with the conversation (text turns, and the tool call with its output),
// the switch waits for the agent's reply to finish playing (no clear, no
// cut), the greeting is not said again, the old session is closed, no
// caller audio is lost, and the rotation is on the timeline and does not
// use up the drop budget.
func TestModelRotation(t *testing.T) {
	const life = time.Minute
	timers := newFakeAfter()
	h := newHarness(t, harnessOpts{model: realtimetest.Options{ExpiresIn: life}, cfg: faultCfg(timers, func(c *Config) {
		c.MaxRedials = 1 // a rotation counted as a drop would spend it
	})})
	call, mc := h.call(nil)
	waitEvent(t, mc, "response.create", 1)
	waitFor(t, "the greeting played", func() bool { return call.PlayedBytes() >= 1600 })
	callID := mc.CallFunction("lookup_order", `{"order":"42"}`) // unknown: answered, then a reply
	waitEvent(t, mc, "response.create", 2)
	waitFor(t, "the reply played", func() bool { return call.PlayedBytes() >= 2400 })

	// The agent speaks (1 s) when the next session is opened: the switch
	// waits until it has played.
	reply := realtimetest.Pattern(8000)
	mc.Speak("item_long", reply, "Your order ships tomorrow.")
	waitFor(t, "the long reply at Twilio", func() bool { return call.ReceivedBytes() >= 2400+len(reply)/2 })
	awaitRotateTimer(t, timers, life).fire()
	mc2 := h.nextConn()
	waitEvent(t, mc2, "session.update", 1)

	playedAt := make(chan time.Time, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		_ = call.WaitPlayedBytes(ctx, 2400+len(reply))
		playedAt <- time.Now()
	}()
	e := h.waitLog(zapcore.InfoLevel, "model session rotated")
	if why := e.ContextMap()["why"]; why != "quiet" {
		t.Fatalf("switched because %v; want quiet", why)
	}
	done := <-playedAt
	if call.PlayedBytes() < 2400+len(reply) {
		t.Fatalf("switched with %d of %d bytes of agent audio played", call.PlayedBytes(), 2400+len(reply))
	}
	t.Logf("rotation: switched %v after the agent's audio finished playing (agent audio cut: 0 bytes)", e.Time.Sub(done).Round(100*time.Microsecond))
	if n := len(call.Clears()); n != 0 {
		t.Fatalf("%d clears: agent audio was cut", n)
	}
	waitDone(t, "the old session to close", mc.Done())

	// Seeded: the greeting and reply turns, the tool call and its output.
	items := itemsCreated(t, mc2)
	var call0, out0, greeting bool
	for _, it := range items {
		switch it["type"] {
		case "function_call":
			call0 = it["call_id"] == callID && it["name"] == "lookup_order" && it["arguments"] == `{"order":"42"}`
		case "function_call_output":
			out0 = it["call_id"] == callID && it["output"] == `{"ok":false,"error":"unknown tool"}`
		case "message":
			b, _ := json.Marshal(it["content"])
			greeting = greeting || it["role"] == "assistant" && bytes.Contains(b, []byte(`"greeting"`))
		}
	}
	if !call0 || !out0 || !greeting {
		t.Fatalf("seeded items %v: function_call %v, output %v, greeting %v", items, call0, out0, greeting)
	}

	// Caller audio goes to the new session; none is lost.
	waitEvent(t, mc2, "input_audio_buffer.append", 150)
	if n := len(mc2.Events()); n == 0 {
		t.Fatal("no events")
	}
	for _, ev := range mc2.Events() {
		if ev.Type == "response.create" {
			t.Fatal("the new session was asked for a response: the greeting again")
		}
	}
	old, cur, sent := mc.InputAudio(), mc2.InputAudio(), call.SentAudio()
	carry := min(len(old), carryFrames*twiliotest.FrameBytes) // no commit on the fake: the last 2 s again
	if !bytes.Equal(old[len(old)-carry:], cur[:carry]) {
		t.Fatal("the new session did not get the old one's uncommitted audio first")
	}
	joined := append(append([]byte(nil), old...), cur[carry:]...)
	if !bytes.HasPrefix(sent, joined) {
		t.Fatalf("caller audio lost or reordered: old %d + new %d (carry %d) bytes vs %d sent", len(old), len(cur), carry, len(sent))
	}
	t.Logf("rotation: caller audio old %d bytes, new %d bytes (%d carried again), sent %d: none lost", len(old), len(cur), carry, len(sent))

	s := h.sessions.get(call.CallSID())
	if _, ok := hasEvent(s, session.EventModelRotated); !ok {
		t.Fatalf("no %s on the timeline: %+v", session.EventModelRotated, s.Timeline)
	}
	if s.State.Terminal() {
		t.Fatalf("session ended %q", s.EndReason)
	}
	// The drop budget (1) is intact: a real drop now is re-dialled.
	mc2.CloseWith(1011, "internal error")
	mc3 := h.nextConn()
	waitEvent(t, mc3, "response.create", 1) // a continuation, after the seed
}

// TestModelRotationQuietWaitTimesOut: the caller keeps speaking once the
// next session is ready; the switch waits rotateQuietWait, then happens
// anyway, and the speech the old session had not committed goes to the
// new session first.
func TestModelRotationQuietWaitTimesOut(t *testing.T) {
	const life = time.Minute
	timers := newFakeAfter()
	h := newHarness(t, harnessOpts{model: realtimetest.Options{ExpiresIn: life}, cfg: faultCfg(timers, nil)})
	call, mc := h.call(nil)
	waitEvent(t, mc, "response.create", 1)
	waitFor(t, "the greeting played", func() bool { return call.PlayedBytes() >= 1600 })
	mc.SpeechStarted(1000) // the caller speaks, and goes on speaking
	// An event after it on the same socket: once the bridge logged it, it
	// has seen the speech start.
	mc.SendError("invalid_request_error", "marker_after_speech", "marker")
	h.waitLog(zapcore.WarnLevel, "model error")
	awaitRotateTimer(t, timers, life).fire()
	mc2 := h.nextConn()
	waitEvent(t, mc2, "session.update", 1)
	quiet := timers.await(t, rotateQuietWait, 1) // asked once the next session is ready
	if n := h.logs.FilterMessage("model session rotated").Len(); n != 0 {
		t.Fatal("switched while the caller was speaking")
	}
	if n := len(mc2.InputAudio()); n != 0 {
		t.Fatalf("%d bytes of caller audio at the next session before the switch", n)
	}
	// A turn transcribed while the switch waits reaches the next session too.
	mc.Transcription("I want to change my order")
	waitFor(t, "the turn recorded", func() bool {
		for _, tr := range h.sessions.get(call.CallSID()).Transcript {
			if tr.Text == "I want to change my order" {
				return true
			}
		}
		return false
	})
	quiet.fire()
	e := h.waitLog(zapcore.InfoLevel, "model session rotated")
	if why := e.ContextMap()["why"]; why != "quiet wait timed out" {
		t.Fatalf("switched because %v", why)
	}
	waitDone(t, "the old session to close", mc.Done())
	waitEvent(t, mc2, "input_audio_buffer.append", 120)
	late := false
	for _, it := range itemsCreated(t, mc2) {
		b, _ := json.Marshal(it["content"])
		late = late || it["role"] == "user" && bytes.Contains(b, []byte("I want to change my order"))
	}
	if !late {
		t.Fatalf("the turn added during the wait was not sent to the new session: %v", itemsCreated(t, mc2))
	}
	old, cur, sent := mc.InputAudio(), mc2.InputAudio(), call.SentAudio()
	carry := min(len(old), carryFrames*twiliotest.FrameBytes)
	if !bytes.Equal(old[len(old)-carry:], cur[:carry]) {
		t.Fatal("the uncommitted speech did not go to the new session first")
	}
	if !bytes.HasPrefix(sent, append(append([]byte(nil), old...), cur[carry:]...)) {
		t.Fatal("caller audio lost or reordered at the switch")
	}
}

// TestSeedItemsToolTurn: a tool turn is seeded as the function_call item
// and its function_call_output, in the transcript's order.
func TestSeedItemsToolTurn(t *testing.T) {
	now := time.Now()
	tr := []session.Turn{
		{At: now, Role: session.RoleCaller, Text: "Sales please"},
		session.ToolTurn(now, session.ToolCall{CallID: "call_9", Name: "transfer_call", Arguments: `{"destination":"Sales"}`, Output: `{"ok":false}`}),
		{At: now, Role: session.RoleAgent, Text: "That did not work."},
	}
	items := seedItems(tr, "")
	if len(items) != 4 {
		t.Fatalf("%d items: %+v", len(items), items)
	}
	if it := items[1].Item; it.Type != "function_call" || it.CallID != "call_9" || it.Name != "transfer_call" || it.Arguments != `{"destination":"Sales"}` {
		t.Fatalf("function_call item %+v", it)
	}
	if it := items[2].Item; it.Type != "function_call_output" || it.CallID != "call_9" || it.Output != `{"ok":false}` {
		t.Fatalf("function_call_output item %+v", it)
	}
	if items[0].Item.Role != "user" || items[3].Item.Role != "assistant" {
		t.Fatalf("text items %+v", items)
	}
}

// TestModelRotationGap rotates one call 10 times, each time while the agent
// speaks (200 ms), and measures on the Twilio fake's playout clock what the
// caller hears around each switch: the agent audio cut (must be none) and
// how long after the agent's audio finished playing the switch came.
func TestModelRotationGap(t *testing.T) {
	const life, rotations = time.Minute, 10
	timers := newFakeAfter()
	h := newHarness(t, harnessOpts{model: realtimetest.Options{ExpiresIn: life}, cfg: faultCfg(timers, nil)})
	call, mc := h.call(nil)
	waitEvent(t, mc, "response.create", 1)
	played := 1600 // the greeting
	waitFor(t, "the greeting played", func() bool { return call.PlayedBytes() >= played })
	lo, hi := life-life/rotateShare-2*time.Second, life-life/rotateShare+time.Second
	var gaps []time.Duration
	for i := 1; i <= rotations; i++ {
		chunk := realtimetest.Pattern(1600)
		before := call.ReceivedBytes()
		mc.Speak(fmt.Sprintf("item_r%d", i), chunk, "part")
		played += len(chunk)
		// The model speaks only in a response the bridge has seen begin
		// (its response.create, or the caller's committed turn): wait for
		// the answer to reach Twilio before the rotation starts.
		waitFor(t, "the answer at Twilio", func() bool { return call.ReceivedBytes() > before })
		var rot *fakeTimer
		timers.added.Wait(t, waitLimit, "rotation timer", func() bool {
			timers.mu.Lock()
			defer timers.mu.Unlock()
			k := 0
			for _, ft := range timers.timers {
				if ft.d > lo && ft.d <= hi {
					if k++; k == i {
						rot = ft
						return true
					}
				}
			}
			return false
		})
		rot.fire()
		next := h.nextConn()
		playedAt := make(chan time.Time, 1)
		go func(n int) {
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			_ = call.WaitPlayedBytes(ctx, n)
			playedAt <- time.Now()
		}(played)
		waitFor(t, "the switch", func() bool { return h.logs.FilterMessage("model session rotated").Len() == i })
		switched := h.logs.FilterMessage("model session rotated").All()[i-1].Time
		end := <-playedAt
		if call.PlayedBytes() < played {
			t.Fatalf("rotation %d: switched with %d of %d bytes played", i, call.PlayedBytes(), played)
		}
		gaps = append(gaps, max(switched.Sub(end), 0))
		waitDone(t, "the old session to close", mc.Done())
		mc = next
	}
	if n := len(call.Clears()); n != 0 {
		t.Fatalf("%d clears: agent audio cut by a rotation", n)
	}
	slices.Sort(gaps)
	t.Logf("rotation gap over %d rotations (switch after the agent's audio finished, Twilio playout clock): p50 %v, max %v; agent audio cut 0 ms",
		rotations, gaps[len(gaps)/2].Round(100*time.Microsecond), gaps[len(gaps)-1].Round(100*time.Microsecond))
}

// TestModelRotationFromPool: with a model pool, the next session is a
// pooled one (no dial when the rotation starts), and the switch happens.
func TestModelRotationFromPool(t *testing.T) {
	const life = time.Minute
	timers := newFakeAfter()
	h := newHarness(t, harnessOpts{model: realtimetest.Options{ExpiresIn: life}, cfg: faultCfg(timers, func(c *Config) {
		c.ModelPoolSize = 1
	})})
	waitFor(t, "the pool to fill", func() bool { return len(h.model.Conns()) == 1 })
	call, mc := h.call(nil)
	waitEvent(t, mc, "response.create", 1)
	waitFor(t, "the pool to refill", func() bool { return len(h.model.Conns()) == 2 })
	waitFor(t, "the greeting played", func() bool { return call.PlayedBytes() >= 1600 })
	awaitRotateTimer(t, timers, life).fire()
	mc2 := h.nextConn()
	waitEvent(t, mc2, "session.update", 1)
	h.waitLog(zapcore.InfoLevel, "model session rotated")
	waitDone(t, "the old session to close", mc.Done())
	if hits := h.counter("vivi_bridge_model_pool_takes_total", "result", "hit"); hits != 2 {
		t.Fatalf("pool hits %v; want 2 (the call, then its next session)", hits)
	}
	waitEvent(t, mc2, "input_audio_buffer.append", 10)
}

// TestModelRotationWaitsForTheAnswerToACommittedTurn: between the caller's
// committed turn and the response the model creates for it, nothing plays
// and nothing is active, yet it is no quiet moment: switching then would
// close the session that holds the caller's question before it answers.
func TestModelRotationWaitsForTheAnswerToACommittedTurn(t *testing.T) {
	const life = time.Minute
	timers := newFakeAfter()
	h := newHarness(t, harnessOpts{model: realtimetest.Options{ExpiresIn: life}, cfg: faultCfg(timers, nil)})
	call, mc := h.call(nil)
	waitEvent(t, mc, "response.create", 1)
	waitFor(t, "the greeting played", func() bool { return call.PlayedBytes() >= 1600 })
	mc.SendRaw([]byte(`{"type":"input_audio_buffer.committed","event_id":"ev_c1","previous_item_id":null,"item_id":"item_q1"}`))
	mc.SendError("invalid_request_error", "marker_after_commit", "marker")
	h.waitLog(zapcore.WarnLevel, "model error")
	awaitRotateTimer(t, timers, life).fire()
	mc2 := h.nextConn()
	waitEvent(t, mc2, "session.update", 1)
	timers.await(t, rotateQuietWait, 1)
	waitEvent(t, mc, "input_audio_buffer.append", len(mc.InputAudio())/160+10) // frames go by
	if n := h.logs.FilterMessage("model session rotated").Len(); n != 0 {
		t.Fatal("switched before the committed turn was answered")
	}
	before := call.ReceivedBytes()
	mc.Speak("item_a1", realtimetest.Pattern(800), "Your order is changed.")
	waitFor(t, "the answer at Twilio", func() bool { return call.ReceivedBytes() >= before+800 })
	e := h.waitLog(zapcore.InfoLevel, "model session rotated")
	if why := e.ContextMap()["why"]; why != "quiet" {
		t.Fatalf("switched because %v", why)
	}
	if call.PlayedBytes() < 1600+800 {
		t.Fatalf("switched with %d bytes played", call.PlayedBytes())
	}
}
