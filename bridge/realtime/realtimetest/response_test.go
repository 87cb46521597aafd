package realtimetest

import (
	"bytes"
	"encoding/base64"
	"testing"
	"time"
)

// speakEvents are the events that open a spoken response, before its deltas.
func speakEvents() []string {
	return []string{"response.created", "response.output_item.added", "response.content_part.added"}
}

// speakDoneEvents are the events that close a completed spoken response.
func speakDoneEvents() []string {
	return []string{"response.output_audio.done", "response.output_audio_transcript.done",
		"response.content_part.done", "response.output_item.done", "response.done"}
}

// readDeltas reads n audio deltas and returns their audio and events.
func (cl *client) readDeltas(n int) ([]byte, []event) {
	cl.t.Helper()
	var audio []byte
	evs := cl.expect(repeat("response.output_audio.delta", n)...)
	for _, e := range evs {
		b, err := base64.StdEncoding.DecodeString(e.str("delta"))
		if err != nil {
			cl.t.Fatalf("delta is not base64: %v", err)
		}
		audio = append(audio, b...)
	}
	return audio, evs
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func TestGreetingChunkedInOrder(t *testing.T) {
	greeting := Pattern(2000)
	s := newServer(t, Options{Greeting: greeting})
	cl, _ := dial(t, s)
	cl.expect("session.created")
	cl.send(map[string]any{"type": "response.create"})

	head := cl.expect(speakEvents()...)
	respID := head[0].obj("response").str("id")
	item := head[1].obj("item")
	if head[0].obj("response").str("status") != "in_progress" || item.str("type") != "message" ||
		item.str("role") != "assistant" || head[1].str("response_id") != respID {
		t.Errorf("response head = %v", head)
	}
	itemID := item.str("id")
	audio, deltas := cl.readDeltas(3) // 800 + 800 + 400
	if !bytes.Equal(audio, greeting) {
		t.Errorf("deltas carry %d bytes that differ from the greeting", len(audio))
	}
	for i, d := range deltas {
		if d.str("item_id") != itemID || d.str("response_id") != respID || d.num("content_index") != 0 {
			t.Errorf("delta %d ids = %v, want item %s response %s", i, d, itemID, respID)
		}
	}
	tail := cl.expect(speakDoneEvents()...)
	if tail[1].str("transcript") != "greeting" {
		t.Errorf("transcript = %q, want greeting", tail[1].str("transcript"))
	}
	done := tail[4].obj("response")
	if done.str("status") != "completed" || done.str("id") != respID {
		t.Errorf("response.done = %v", done)
	}
	if out, _ := done["output"].([]any); len(out) != 1 || event(out[0].(map[string]any)).str("id") != itemID {
		t.Errorf("response.done output = %v", done["output"])
	}
}

func TestResponseCreateWhileActive(t *testing.T) {
	s := newServer(t, Options{Greeting: Pattern(80000), ChunkInterval: 50 * time.Millisecond}) // 5 s: long enough to interrupt
	cl, _ := dial(t, s)
	cl.expect("session.created")
	cl.send(map[string]any{"type": "response.create"})
	cl.expect(speakEvents()...)
	cl.send(map[string]any{"type": "response.create", "event_id": "evt_again"})
	e, _ := cl.until("error")
	if e.obj("error").str("code") != "conversation_already_has_active_response" ||
		e.obj("error").str("event_id") != "evt_again" {
		t.Errorf("error = %v", e)
	}
	cl.send(map[string]any{"type": "response.cancel"})
	done, _ := cl.until("response.done")
	if st := done.obj("response").obj("status_details"); st.str("reason") != "client_cancelled" {
		t.Errorf("status_details = %v, want client_cancelled", st)
	}
	cl.send(map[string]any{"type": "response.cancel"})
	cl.expectError("response_cancel_not_active")
}

func TestBargeInCancelsResponse(t *testing.T) {
	s := newServer(t, Options{Greeting: Pattern(80000), ChunkInterval: 50 * time.Millisecond}) // 5 s: long enough to interrupt
	cl, c := dial(t, s)
	cl.expect("session.created")
	cl.send(map[string]any{"type": "response.create"})
	head := cl.expect(speakEvents()...)
	cl.readDeltas(1)

	c.SpeechStarted(1200)
	started, _ := cl.until("input_audio_buffer.speech_started") // a delta may have left before the barge-in
	if started.num("audio_start_ms") != 1200 || started.str("item_id") == "" {
		t.Errorf("speech_started = %v", started)
	}
	after := cl.expect("response.output_audio.done", "response.done")
	resp := after[1].obj("response")
	if resp.str("status") != "cancelled" || resp.obj("status_details").str("reason") != "turn_detected" ||
		resp.str("id") != head[0].obj("response").str("id") {
		t.Errorf("response.done = %v, want cancelled turn_detected", resp)
	}
	// No delta follows the cancellation: the next event is the answer to this cancel.
	cl.send(map[string]any{"type": "response.cancel"})
	cl.expectError("response_cancel_not_active")
}

func TestTruncate(t *testing.T) {
	s := newServer(t, Options{Greeting: Pattern(1600)}) // 200 ms
	cl, c := dial(t, s)
	cl.expect("session.created")
	cl.send(map[string]any{"type": "response.create"})
	itemID := cl.expect(speakEvents()...)[1].obj("item").str("id")
	cl.until("response.done")

	truncate := func(id string, ms int) {
		cl.send(map[string]any{"type": "conversation.item.truncate", "item_id": id, "content_index": 0, "audio_end_ms": ms})
	}
	truncate("item_unknown", 10)
	cl.expectError("invalid_value")

	truncate(itemID, 250)
	e := cl.expect("error")[0].obj("error")
	if e.str("message") != "Audio content of 200ms is already shorter than 250ms" || e.str("type") != "invalid_request_error" {
		t.Errorf("past-end error = %v", e)
	}

	truncate(itemID, 150)
	tr := cl.expect("conversation.item.truncated")[0]
	if tr.str("item_id") != itemID || tr.num("audio_end_ms") != 150 || tr.num("content_index") != 0 {
		t.Errorf("truncated = %v", tr)
	}
	if got := c.Truncations(); len(got) != 1 || got[0] != (Truncation{ItemID: itemID, AudioEndMs: 150}) {
		t.Errorf("Truncations() = %+v", got)
	}
	if _, err := c.WaitEvent(ctx(t), "conversation.item.truncate", 3); err != nil {
		t.Error(err)
	}
}

func TestFunctionCallAndOutput(t *testing.T) {
	replies := make(chan string, 1)
	s := newServer(t, Options{Reply: func(_ *Conn, userText string) Response {
		replies <- userText
		return Response{Audio: Pattern(80), Transcript: "done",
			FunctionCall: &FunctionCall{Name: "hang_up", Arguments: "{}"}}
	}})
	cl, c := dial(t, s)
	cl.expect("session.created")

	callID := c.CallFunction("transfer_call", `{"destination":"Front Desk"}`)
	evs := cl.expect("response.created", "response.output_item.added", "response.function_call_arguments.delta",
		"response.function_call_arguments.done", "response.output_item.done", "response.done")
	added := evs[1].obj("item")
	if added.str("type") != "function_call" || added.str("call_id") != callID || added.str("name") != "transfer_call" {
		t.Errorf("output_item.added item = %v", added)
	}
	args := evs[3]
	if args.str("call_id") != callID || args.str("name") != "transfer_call" ||
		args.str("arguments") != `{"destination":"Front Desk"}` || args.str("item_id") != added.str("id") {
		t.Errorf("function_call_arguments.done = %v", args)
	}
	if evs[4].obj("item").str("arguments") != `{"destination":"Front Desk"}` ||
		evs[5].obj("response").str("status") != "completed" {
		t.Errorf("item done / response done = %v / %v", evs[4], evs[5])
	}

	cl.send(map[string]any{"type": "response.create"}) // the first one is the greeting
	cl.until("response.done")
	cl.send(map[string]any{"type": "conversation.item.create", "item": map[string]any{
		"type": "function_call_output", "call_id": callID, "output": `{"ok":false,"status":486}`}})
	item := cl.expect("conversation.item.added")[0].obj("item")
	if item.str("id") == "" || item.str("call_id") != callID {
		t.Errorf("conversation.item.added item = %v", item)
	}
	cl.send(map[string]any{"type": "response.create"})
	if got := <-replies; got != `{"ok":false,"status":486}` {
		t.Errorf("Reply userText = %q, want the function output", got)
	}
	cl.expect(speakEvents()...)
	cl.readDeltas(1)
	cl.expect(speakDoneEvents()[:4]...)
	fn := cl.expect("response.output_item.added", "response.function_call_arguments.delta",
		"response.function_call_arguments.done", "response.output_item.done", "response.done")
	if fn[0].num("output_index") != 1 || fn[2].str("name") != "hang_up" || fn[2].str("call_id") == "" {
		t.Errorf("function call after audio = %v", fn)
	}
	if out, _ := fn[4].obj("response")["output"].([]any); len(out) != 2 {
		t.Errorf("response.done output has %d items, want message and function call", len(out))
	}
}

func TestScriptedResponsesQueue(t *testing.T) {
	s := newServer(t, Options{ChunkInterval: 10 * time.Millisecond})
	cl, c := dial(t, s)
	cl.expect("session.created")
	c.Speak("item_goodbye", Pattern(1600), "goodbye")
	callID := c.CallFunction("transfer_call", `{}`)

	head := cl.expect(speakEvents()...)
	if head[1].obj("item").str("id") != "item_goodbye" {
		t.Errorf("item id = %v, want item_goodbye", head[1])
	}
	cl.readDeltas(2)
	tail := cl.expect(speakDoneEvents()...)
	if tail[1].str("transcript") != "goodbye" {
		t.Errorf("transcript = %v", tail[1])
	}
	evs := cl.expect("response.created", "response.output_item.added", "response.function_call_arguments.delta",
		"response.function_call_arguments.done", "response.output_item.done", "response.done")
	if evs[3].str("call_id") != callID {
		t.Errorf("queued call = %v, want call_id %s", evs[3], callID)
	}
}
