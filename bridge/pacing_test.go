package bridge

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiliotest"
)

// audioDelta is a response.output_audio.delta of item carrying audio.
func audioDelta(item string, audio []byte) []byte {
	return []byte(`{"type":"response.output_audio.delta","response_id":"resp_x","item_id":"` + item +
		`","output_index":0,"content_index":0,"delta":"` + base64.StdEncoding.EncodeToString(audio) + `"}`)
}

// watchBuffer samples Twilio's buffered audio (its own play accounting)
// every millisecond until stop and returns the largest sample. Sampling,
// not synchronisation: the largest value is what the test bounds.
func watchBuffer(call *twiliotest.Call, stop <-chan struct{}) <-chan int {
	out := make(chan int, 1)
	go func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		most := 0
		for {
			most = max(most, call.BufferedBytes())
			select {
			case <-stop:
				out <- most
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// mediaSizes checks every media message Twilio got carries at most
// maxMediaBytes and returns the audio of them all, in order.
func mediaSizes(t *testing.T, call *twiliotest.Call) []byte {
	t.Helper()
	var all []byte
	for _, m := range call.Messages() {
		if m.Event == "media" {
			if len(m.Payload) > maxMediaBytes {
				t.Fatalf("a media message of %d bytes (at most %d)", len(m.Payload), maxMediaBytes)
			}
			all = append(all, m.Payload...)
		}
	}
	return all
}

// TestOversizedDeltaSplitAndPaced: a 4 MB delta (8 minutes of audio)
// reaches Twilio as media messages of at most maxMediaBytes, each with its
// mark, never more than aheadLimit (plus one message) ahead of what Twilio
// has played; the hold keeps holdLimit and drops the rest, counted and
// recorded. Before, it went to Twilio as one 4 MB message.
func TestOversizedDeltaSplitAndPaced(t *testing.T) {
	h := newHarness(t, harnessOpts{model: realtimetest.Options{Greeting: []byte{}}})
	call, mc := h.call(nil)
	waitEvent(t, mc, "response.create", 1)
	audio := realtimetest.Pattern(4 << 20)
	stop := make(chan struct{})
	most := watchBuffer(call, stop)
	mc.SendRaw(audioDelta("item_big", audio))

	waitFor(t, "the hold's overflow counted", func() bool {
		return h.counter("vivi_bridge_agent_audio_dropped_bytes_total", "", "") > 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := call.WaitPlayedBytes(ctx, aheadLimit+4*maxMediaBytes); err != nil {
		t.Fatal(err) // the hold is released as Twilio plays
	}
	close(stop)
	if m := <-most; m > aheadLimit+maxMediaBytes {
		t.Fatalf("Twilio buffered %d bytes, more than %d ahead", m, aheadLimit+maxMediaBytes)
	}
	got := mediaSizes(t, call)
	if len(got) < aheadLimit || !bytes.Equal(got, audio[:len(got)]) {
		t.Fatalf("Twilio got %d bytes, not the start of the delta in order", len(got))
	}
	var media, marks int
	for _, m := range call.Messages() {
		switch m.Event {
		case "media":
			media++
		case "mark":
			marks++
		}
	}
	if media != marks && media != marks+1 {
		t.Fatalf("%d media and %d marks: every chunk has its mark", media, marks)
	}
	dropped := h.counter("vivi_bridge_agent_audio_dropped_bytes_total", "", "")
	waitFor(t, "the overflow on the timeline", func() bool {
		ev, ok := hasEvent(h.sessions.get(call.CallSID()), session.EventModelError)
		return ok && strings.Contains(ev.Detail, "hold limit")
	})
	if int(dropped) > len(audio)-holdLimit || dropped < float64(len(audio)-holdLimit-2*aheadLimit) {
		t.Fatalf("dropped %v of %d bytes (hold %d, ahead %d)", dropped, len(audio), holdLimit, aheadLimit)
	}
}

// TestFastAudioPacedAndBargeInClearsHold: a model that streams 30 s of
// audio at once puts at most aheadLimit into Twilio's buffer; a barge-in
// clears Twilio and drops the held rest at once: no audio of the
// interrupted item reaches Twilio after the clear, and the item is cut
// where Twilio's marks say it was.
func TestFastAudioPacedAndBargeInClearsHold(t *testing.T) {
	greeting := realtimetest.Pattern(30 * 1000 * bytesPerMs)
	h := newHarness(t, harnessOpts{model: realtimetest.Options{Greeting: greeting, ChunkBytes: 800}})
	call, mc := h.call(nil)
	stop := make(chan struct{})
	most := watchBuffer(call, stop)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := call.WaitPlayedBytes(ctx, 8000); err != nil {
		t.Fatal(err)
	}
	mc.SpeechStarted(1000)
	waitFor(t, "the clear at Twilio", func() bool { return len(call.Clears()) == 1 })
	close(stop)
	if m := <-most; m > aheadLimit+maxMediaBytes {
		t.Fatalf("Twilio buffered %d bytes, more than %d ahead", m, aheadLimit+maxMediaBytes)
	}
	tr := waitEvent(t, mc, "conversation.item.truncate", 1)
	clr := call.Clears()[0]
	lo, hi := markBounds(t, call, clr)
	var ev struct {
		ItemID     string `json:"item_id"`
		AudioEndMs int    `json:"audio_end_ms"`
	}
	mustJSON(t, tr.Raw, &ev)
	if ev.AudioEndMs < lo/bytesPerMs || ev.AudioEndMs > hi/bytesPerMs {
		t.Fatalf("audio_end_ms %d outside the marks' %d..%d ms", ev.AudioEndMs, lo/bytesPerMs, hi/bytesPerMs)
	}
	// The next response plays; nothing of the greeting comes after the clear.
	reply := realtimetest.Tone(800)
	mc.Speak("item_next", reply, "next")
	waitFor(t, "the next response at Twilio", func() bool { return bytes.HasSuffix(call.ReceivedAudio(), reply) })
	var after []byte
	seenClear := false
	for _, m := range call.Messages() {
		switch {
		case m.Event == "clear":
			seenClear = true
		case seenClear && m.Event == "media":
			after = append(after, m.Payload...)
		}
	}
	if !bytes.Equal(after, reply) {
		t.Fatalf("%d bytes after the clear, want only the %d of the next response", len(after), len(reply))
	}
	if n := len(mc.Truncations()); n != 1 {
		t.Fatalf("%d truncations, want 1", n)
	}
}

// markBounds returns, from Twilio's mark clock, the bytes of audio that
// had surely played at the clear as the bridge could know it (up to the
// last-but-one mark echoed before it: the last echo may still have been on
// its way to the bridge) and at most (up to the first mark the clear
// echoed).
func markBounds(t *testing.T, call *twiliotest.Call, clr twiliotest.ClearInfo) (lo, hi int) {
	t.Helper()
	pending := map[string]bool{}
	for _, m := range clr.PendingMarks {
		pending[m] = true
	}
	echoed := map[string]bool{}
	for _, m := range call.EchoedMarks() {
		if !pending[m] {
			echoed[m] = true
		}
	}
	sent, last := 0, 0
	hi = -1
	for _, m := range call.Messages() {
		switch m.Event {
		case "media":
			sent += len(m.Payload)
		case "mark":
			if echoed[m.Mark] {
				lo, last = last, sent
			} else if pending[m.Mark] && hi < 0 {
				hi = sent
			}
		case "clear":
			if hi < 0 {
				hi = sent
			}
			return lo, hi
		}
	}
	t.Fatal("no clear")
	return 0, 0
}

func mustJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
}

// TestPreambleAndAnswerItems: one response with two audio items (a
// "preamble" before the answer) plays both in order, each chunk marked; a
// barge-in during the answer truncates the answer (where Twilio's marks say
// it was), not the preamble that played whole, and late audio of the
// answer is dropped.
func TestPreambleAndAnswerItems(t *testing.T) {
	h := newHarness(t, harnessOpts{model: realtimetest.Options{Greeting: []byte{}}})
	call, mc := h.call(nil)
	waitEvent(t, mc, "response.create", 1)
	pre, answer := realtimetest.Tone(1600), realtimetest.Pattern(4*aheadLimit)
	for _, ev := range []string{
		`{"type":"response.created","response":{"id":"resp_x","status":"in_progress"}}`,
		`{"type":"response.output_item.added","response_id":"resp_x","output_index":0,"item":{"id":"item_pre","type":"message","role":"assistant"}}`,
		string(audioDelta("item_pre", pre)),
		`{"type":"response.output_audio.done","response_id":"resp_x","item_id":"item_pre","output_index":0,"content_index":0}`,
		`{"type":"response.output_item.added","response_id":"resp_x","output_index":1,"item":{"id":"item_answer","type":"message","role":"assistant"}}`,
	} {
		mc.SendRaw([]byte(ev))
	}
	for off := 0; off < len(answer); off += 800 {
		mc.SendRaw(audioDelta("item_answer", answer[off:off+800]))
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := call.WaitPlayedBytes(ctx, len(pre)+1600); err != nil {
		t.Fatal(err)
	}
	mc.SendRaw([]byte(`{"type":"input_audio_buffer.speech_started","audio_start_ms":900,"item_id":"item_user"}`))
	waitFor(t, "the clear at Twilio", func() bool { return len(call.Clears()) == 1 })
	tr := waitEvent(t, mc, "conversation.item.truncate", 1)
	var ev struct {
		ItemID     string `json:"item_id"`
		AudioEndMs int    `json:"audio_end_ms"`
	}
	mustJSON(t, tr.Raw, &ev)
	lo, hi := markBounds(t, call, call.Clears()[0])
	lo, hi = lo-len(pre), hi-len(pre)
	if ev.ItemID != "item_answer" || ev.AudioEndMs < lo/bytesPerMs || ev.AudioEndMs > hi/bytesPerMs {
		t.Fatalf("truncate %s, want item_answer at %d..%d ms", tr.Raw, lo/bytesPerMs, hi/bytesPerMs)
	}
	// Late audio of the answer, then a new item: only the new item plays.
	mc.SendRaw(audioDelta("item_answer", realtimetest.Pattern(800)))
	next := realtimetest.Tone(800)
	mc.SendRaw(audioDelta("item_next", next))
	waitFor(t, "the next item at Twilio", func() bool { return bytes.HasSuffix(call.ReceivedAudio(), next) })
	got := mediaSizes(t, call)
	if !bytes.HasPrefix(got, append(append([]byte{}, pre...), answer[:1600]...)) {
		t.Fatal("Twilio did not get the preamble, then the answer, in order")
	}
	var after []byte
	seenClear := false
	for _, m := range call.Messages() {
		if m.Event == "clear" {
			seenClear = true
		} else if seenClear && m.Event == "media" {
			after = append(after, m.Payload...)
		}
	}
	if !bytes.Equal(after, next) {
		t.Fatalf("after the clear Twilio got %d bytes, want only the %d of the next item", len(after), len(next))
	}
	for _, tr := range mc.Events() {
		if tr.Type == "conversation.item.truncate" && strings.Contains(string(tr.Raw), "item_pre") {
			t.Fatalf("the preamble, played whole, was truncated: %s", tr.Raw)
		}
	}
}

// FuzzSplitDelta: the parts of any valid base64 delta are valid base64 of
// at most maxMediaBytes each, their audio counts are right, and together
// they are the delta's audio, in order.
func FuzzSplitDelta(f *testing.F) {
	for _, n := range []int{0, 1, 2, 3, 959, 960, 961, 1920, 5000} {
		f.Add(realtimetest.Pattern(n))
	}
	f.Fuzz(func(t *testing.T, audio []byte) {
		delta := []byte(base64.StdEncoding.EncodeToString(audio))
		var got []byte
		splitDelta(delta, len(audio), func(part []byte, n int) bool {
			b, err := base64.StdEncoding.DecodeString(string(part))
			if err != nil || len(b) != n || n > maxMediaBytes || n == 0 {
				t.Fatalf("part %q: %d bytes, told %d (%v)", part, len(b), n, err)
			}
			got = append(got, b...)
			return true
		})
		if !bytes.Equal(got, audio) {
			t.Fatalf("parts make %d bytes, want %d", len(got), len(audio))
		}
	})
}

// TestPacingArithmetic: canSend follows the echoes (Twilio's mark clock),
// and the hold refuses what would exceed holdLimit.
func TestPacingArithmetic(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var p playout
	var seq uint64
	for p.canSend(maxMediaBytes) {
		seq++
		p.sent("A", maxMediaBytes, seq, t0)
	}
	if p.unplayed > aheadLimit || p.unplayed+maxMediaBytes <= aheadLimit {
		t.Fatalf("stopped at %d unplayed bytes (limit %d)", p.unplayed, aheadLimit)
	}
	p.echo(2, t0.Add(240*time.Millisecond)) // marks 1 and 2 played
	if p.unplayed != int(seq-2)*maxMediaBytes || !p.canSend(maxMediaBytes) {
		t.Fatalf("after the echo: %d unplayed", p.unplayed)
	}
	p.interrupt(t0.Add(300 * time.Millisecond))
	if p.unplayed != 0 || !p.canSend(aheadLimit*10) {
		t.Fatal("a barge-in leaves nothing unplayed")
	}
	var h agentHold
	for h.push(heldChunk{audio: maxMediaBytes}) {
	}
	if h.bytes > holdLimit || h.bytes+maxMediaBytes <= holdLimit {
		t.Fatalf("hold stopped at %d (limit %d)", h.bytes, holdLimit)
	}
	n := h.len()
	for range n {
		h.pop()
	}
	if h.len() != 0 || h.bytes != 0 {
		t.Fatalf("hold left %d chunks, %d bytes", h.len(), h.bytes)
	}
}
