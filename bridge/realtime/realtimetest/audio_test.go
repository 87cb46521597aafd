package realtimetest

import (
	"bytes"
	"encoding/base64"
	"testing"
	"time"
)

const frame = 160 // one Twilio frame: 20 ms of μ-law

func TestEchoModeReturnsSameAudio(t *testing.T) {
	s := newServer(t, Options{Echo: true})
	cl, c := dial(t, s)
	cl.expect("session.created")
	var all []byte
	for i := range 5 {
		audio := bytes.Repeat([]byte{byte(i)}, frame)
		all = append(all, audio...)
		b64 := base64.StdEncoding.EncodeToString(audio)
		cl.send(map[string]any{"type": "input_audio_buffer.append", "audio": b64})
		d := cl.expect("response.output_audio.delta")[0]
		if d.str("delta") != b64 || d.str("item_id") != "item_echo" {
			t.Errorf("echo %d = %v, want the same base64 on item_echo", i, d)
		}
	}
	if !bytes.Equal(c.InputAudio(), all) {
		t.Error("InputAudio() differs from the appended audio")
	}
	// The echoed item can be truncated like a real assistant item.
	cl.send(map[string]any{"type": "conversation.item.truncate", "item_id": "item_echo", "content_index": 0, "audio_end_ms": 100})
	cl.expect("conversation.item.truncated")
}

func TestInputAudioConcatenation(t *testing.T) {
	s := newServer(t, Options{})
	cl, c := dial(t, s)
	cl.expect("session.created")
	want := append(Tone(frame), Silence(frame)...)
	want = append(want, Pattern(frame)...)
	for off := 0; off < len(want); off += frame {
		cl.appendAudio(want[off : off+frame])
	}
	if _, err := c.WaitEvent(ctx(t), "input_audio_buffer.append", 3); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.InputAudio(), want) {
		t.Errorf("InputAudio() = %d bytes, differs from the %d appended", len(c.InputAudio()), len(want))
	}
	evs := c.Events()
	if len(evs) != 3 || evs[2].Type != "input_audio_buffer.append" || evs[0].At.IsZero() {
		t.Errorf("Events() = %+v", evs)
	}
}

func TestDiscardAudioCountsAppends(t *testing.T) {
	s := newServer(t, Options{DiscardAudio: true})
	cl, c := dial(t, s)
	cl.expect("session.created")
	cl.appendAudio(Tone(frame))
	cl.appendAudio(Tone(frame))
	cl.send(map[string]any{"type": "input_audio_buffer.commit"})
	cl.expect("input_audio_buffer.committed")
	if tr := cl.expect("conversation.item.input_audio_transcription.completed")[0]; tr.str("transcript") != "caller said 40 ms of audio" {
		t.Errorf("transcription = %v", tr)
	}
	ev, err := c.WaitEvent(ctx(t), "input_audio_buffer.append", 2)
	if err != nil || ev.Type != "input_audio_buffer.append" {
		t.Errorf("WaitEvent = %+v, %v", ev, err)
	}
	if len(c.InputAudio()) != 0 || len(c.Events()) != 1 {
		t.Errorf("kept %d audio bytes and %d events, want none but the commit", len(c.InputAudio()), len(c.Events()))
	}
}

func TestVADTurn(t *testing.T) {
	replies := make(chan string, 1)
	s := newServer(t, Options{VAD: true, ChunkInterval: 50 * time.Millisecond, Reply: func(_ *Conn, text string) Response {
		replies <- text
		return Response{Audio: Pattern(80000), Transcript: "long reply"} // 5 s
	}})
	cl, c := dial(t, s)
	cl.expect("session.created")
	cl.send(map[string]any{"type": "session.update", "session": map[string]any{"type": "realtime", "audio": map[string]any{
		"input": map[string]any{"format": map[string]any{"type": "audio/pcmu"}, "turn_detection": map[string]any{
			"type": "server_vad", "silence_duration_ms": 200, "prefix_padding_ms": 100}}}}})
	cl.expect("session.updated")

	for range 10 { // 200 ms of silence: nothing happens
		cl.appendAudio(Silence(frame))
	}
	for range 10 { // 200 ms of speech from 200 ms on
		cl.appendAudio(Tone(frame))
	}
	started := cl.expect("input_audio_buffer.speech_started")[0]
	if started.num("audio_start_ms") != 100 { // 200 ms minus 100 ms of prefix padding
		t.Errorf("speech_started = %v, want audio_start_ms 100", started)
	}
	item := started.str("item_id")
	for range 10 { // silence: stops once 200 ms have passed, at 600 ms
		cl.appendAudio(Silence(frame))
	}
	evs := cl.expect("input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
		"conversation.item.input_audio_transcription.completed")
	if evs[0].num("audio_end_ms") != 600 || evs[0].str("item_id") != item || evs[1].str("item_id") != item {
		t.Errorf("stop/commit = %v / %v, want item %s at 600 ms", evs[0], evs[1], item)
	}
	// 100 ms padding + 200 ms speech + 200 ms silence.
	if tr := evs[2]; tr.str("transcript") != "caller said 500 ms of audio" || tr.str("item_id") != item {
		t.Errorf("transcription = %v", tr)
	}
	if got := <-replies; got != "caller said 500 ms of audio" {
		t.Errorf("Reply userText = %q", got)
	}
	cl.expect(speakEvents()...)
	cl.readDeltas(1)

	// The caller talks over the reply: server VAD interrupts it.
	cl.appendAudio(Tone(frame))
	cl.until("input_audio_buffer.speech_started")
	done := cl.expect("response.output_audio.done", "response.done")[1].obj("response")
	if done.str("status") != "cancelled" || done.obj("status_details").str("reason") != "turn_detected" {
		t.Errorf("response.done = %v, want cancelled by turn_detected", done)
	}
	if n := len(c.InputAudio()); n != 31*frame {
		t.Errorf("InputAudio() = %d bytes, want %d", n, 31*frame)
	}
}

func TestVADOffWithoutServerVAD(t *testing.T) {
	s := newServer(t, Options{VAD: true})
	cl, c := dial(t, s)
	cl.expect("session.created")
	cl.send(map[string]any{"type": "session.update", "session": map[string]any{"type": "realtime",
		"audio": map[string]any{"input": map[string]any{"turn_detection": nil}}}})
	cl.expect("session.updated")
	for range 5 {
		cl.appendAudio(Tone(frame))
	}
	if _, err := c.WaitEvent(ctx(t), "input_audio_buffer.append", 5); err != nil {
		t.Fatal(err)
	}
	cl.send(map[string]any{"type": "input_audio_buffer.clear"})
	cl.expect("input_audio_buffer.cleared") // no speech_started before it
	cl.send(map[string]any{"type": "input_audio_buffer.commit"})
	cl.expectError("input_audio_buffer_commit_empty")
}

func TestMuLaw(t *testing.T) {
	for _, s := range []int{0, 1000, -1000, 8000, -8000, 32000} {
		got := ulawToLinear(linearToULaw(s))
		if abs(got-s) > abs(s)/16+8 { // μ-law keeps about 4 bits of mantissa
			t.Errorf("round trip %d -> %d", s, got)
		}
	}
	if ulawToLinear(0xFF) != 0 || ulawToLinear(0x7F) != 0 {
		t.Error("0xFF and 0x7F must decode to silence")
	}
	if voiced(Silence(frame)) || !voiced(Tone(frame)) || voiced(nil) {
		t.Error("voiced: silence must be silent and the tone voiced")
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
