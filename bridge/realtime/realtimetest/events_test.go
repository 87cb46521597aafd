package realtimetest

import (
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

func TestInvalidClientEvents(t *testing.T) {
	tests := map[string]struct {
		raw  string
		code string
	}{
		"not JSON":         {raw: `{"type":`, code: "invalid_event"},
		"missing type":     {raw: `{"event_id":"e1"}`, code: "invalid_event"},
		"unknown type":     {raw: `{"type":"session.frobnicate"}`, code: "invalid_event"},
		"bad base64":       {raw: `{"type":"input_audio_buffer.append","audio":"%%%"}`, code: "invalid_value"},
		"append no audio":  {raw: `{"type":"input_audio_buffer.append"}`, code: "missing_required_parameter"},
		"item no item":     {raw: `{"type":"conversation.item.create"}`, code: "missing_required_parameter"},
		"output no callid": {raw: `{"type":"conversation.item.create","item":{"type":"function_call_output","output":"x"}}`, code: "missing_required_parameter"},
		"delete unknown":   {raw: `{"type":"conversation.item.delete","item_id":"item_nope"}`, code: "invalid_value"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			s := newServer(t, Options{})
			cl, c := dial(t, s)
			cl.expect("session.created")
			cl.sendRaw([]byte(tt.raw))
			if e := cl.expectError(tt.code); e.str("type") != "invalid_request_error" {
				t.Errorf("error type = %v", e)
			}
			evs := c.Events()
			if len(evs) != 1 || string(evs[0].Raw) != tt.raw {
				t.Errorf("Events() = %+v, want the raw frame recorded", evs)
			}
			// The session stays usable after an error, as on the real service.
			cl.send(map[string]any{"type": "input_audio_buffer.clear"})
			cl.expect("input_audio_buffer.cleared")
		})
	}
}

func TestConversationItems(t *testing.T) {
	replies := make(chan string, 1)
	s := newServer(t, Options{Reply: func(_ *Conn, text string) Response {
		replies <- text
		return Response{Transcript: "ok"}
	}})
	cl, _ := dial(t, s)
	cl.expect("session.created")
	cl.send(map[string]any{"type": "response.create"})
	cl.until("response.done")

	cl.send(map[string]any{"type": "conversation.item.create", "item": map[string]any{
		"type": "message", "role": "user", "content": []any{map[string]any{"type": "input_text", "text": "The caller pressed 5."}}}})
	added := cl.expect("conversation.item.added")[0]
	id := added.obj("item").str("id")
	if id == "" || added.str("previous_item_id") == "" {
		t.Errorf("conversation.item.added = %v", added)
	}
	cl.send(map[string]any{"type": "response.create"})
	if got := <-replies; got != "The caller pressed 5." {
		t.Errorf("Reply userText = %q", got)
	}
	cl.until("response.done")

	cl.send(map[string]any{"type": "conversation.item.retrieve", "item_id": id})
	if got := cl.expect("conversation.item.retrieved")[0].obj("item"); got.str("id") != id || got.str("role") != "user" {
		t.Errorf("retrieved = %v", got)
	}
	cl.send(map[string]any{"type": "conversation.item.truncate", "item_id": id, "content_index": 0, "audio_end_ms": 0})
	cl.expectError("invalid_value") // only assistant messages can be truncated
	cl.send(map[string]any{"type": "conversation.item.delete", "item_id": id})
	if got := cl.expect("conversation.item.deleted")[0]; got.str("item_id") != id {
		t.Errorf("deleted = %v", got)
	}
}

func TestExpire(t *testing.T) {
	s := newServer(t, Options{})
	cl, c := dial(t, s)
	cl.expect("session.created")
	c.Expire()
	e := cl.expectError("session_expired")
	if e.str("message") != "Your session hit the maximum duration of 60 minutes." {
		t.Errorf("message = %q", e.str("message"))
	}
	code, reason := cl.expectClose()
	if code != websocket.CloseGoingAway || reason != e.str("message") {
		t.Errorf("close = %d %q, want 1001 with the message", code, reason)
	}
	waitDone(t, c)
}

func TestSendRawSendErrorCloseWith(t *testing.T) {
	s := newServer(t, Options{})
	cl, c := dial(t, s)
	cl.expect("session.created")
	c.SendRaw([]byte("not json"))
	if _, b, err := cl.ws.ReadMessage(); err != nil || string(b) != "not json" {
		t.Fatalf("raw frame = %q, %v", b, err)
	}
	c.SendError("server_error", "", "The server had an error.")
	e := cl.expect("error")[0].obj("error")
	if e.str("type") != "server_error" || e["code"] != nil || !strings.Contains(e.str("message"), "server had") {
		t.Errorf("error = %v, want server_error with a null code", e)
	}
	c.CloseWith(websocket.CloseInternalServerErr, "boom")
	if code, reason := cl.expectClose(); code != websocket.CloseInternalServerErr || reason != "boom" {
		t.Errorf("close = %d %q", code, reason)
	}
	waitDone(t, c)
	c.Speak("", Pattern(800), "too late") // a no-op on an ended connection
}
