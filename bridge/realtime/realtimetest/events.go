package realtimetest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// clientTypes are the GA client event types the fake answers, in the order
// the real service lists them in its invalid_event message.
const clientTypes = "'session.update', 'input_audio_buffer.append', 'input_audio_buffer.commit', " +
	"'input_audio_buffer.clear', 'conversation.item.create', 'conversation.item.retrieve', " +
	"'conversation.item.truncate', 'conversation.item.delete', 'response.create', and 'response.cancel'"

// header is the part of every client event the reader parses first.
type header struct {
	Type    *string `json:"type"`
	EventID *string `json:"event_id"`
	Audio   *string `json:"audio"` // only input_audio_buffer.append has it
}

// handle records one client frame and answers it. It runs on the reader goroutine.
func (c *Conn) handle(data []byte, at time.Time) {
	var h header
	if err := json.Unmarshal(data, &h); err != nil {
		c.record(ClientEvent{Raw: data, At: at})
		c.fail(nil, "invalid_event", "We could not parse the JSON body of your request. (HINT: This likely "+
			"means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "+
			"but what was sent was not valid JSON.)", "")
		return
	}
	typ := ""
	if h.Type != nil {
		typ = *h.Type
	}
	if typ == "input_audio_buffer.append" {
		// Recorded after its audio is kept, so that a WaitEvent for the
		// n-th append sees InputAudio with that append in it.
		if c.opts.DiscardAudio {
			data = nil
		}
		c.onAppend(h, func() { c.record(ClientEvent{Type: typ, Raw: data, At: at}) })
		return
	}
	c.record(ClientEvent{Type: typ, Raw: data, At: at})

	switch typ {
	case "input_audio_buffer.commit":
		c.onCommit(h)
	case "input_audio_buffer.clear":
		c.onClear()
	case "session.update":
		c.onSessionUpdate(h, data)
	case "conversation.item.create":
		c.onItemCreate(h, data)
	case "conversation.item.truncate":
		c.onTruncate(h, data)
	case "conversation.item.delete", "conversation.item.retrieve":
		c.onItemLookup(h, typ, data)
	case "response.create":
		c.onResponseCreate(h)
	case "response.cancel":
		c.onResponseCancel(h)
	case "":
		c.fail(h.EventID, "invalid_event", "The 'type' field is missing.", "type")
	default:
		c.fail(h.EventID, "invalid_event",
			fmt.Sprintf("Invalid value: '%s'. Supported values are: %s.", typ, clientTypes), "type")
	}
}

// record stores a client event and wakes WaitEvent callers.
func (c *Conn) record(ev ClientEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts[ev.Type]++
	if ev.Raw != nil {
		c.events = append(c.events, ev)
		c.byType[ev.Type] = append(c.byType[ev.Type], ev)
	}
	c.wakeLocked()
}

// fail sends an invalid_request_error answering the client event eventID.
func (c *Conn) fail(eventID *string, code, message, param string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failLocked(eventID, &apiError{code: code, message: message, param: optional(param)})
}

func (c *Conn) failLocked(eventID *string, e *apiError) {
	c.errorLocked("invalid_request_error", e.code, e.message, e.param, eventID)
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// onAppend keeps an append's audio and answers it; rec records the event:
// before the error of an invalid one (a client that reads the error finds
// the event recorded), after the audio is kept otherwise.
func (c *Conn) onAppend(h header, rec func()) {
	if h.Audio == nil {
		rec()
		c.fail(h.EventID, "missing_required_parameter", "Missing required parameter: 'audio'.", "audio")
		return
	}
	audio, err := base64.StdEncoding.DecodeString(*h.Audio)
	if err != nil {
		rec()
		c.fail(h.EventID, "invalid_value", "Invalid 'audio'. Expected base64-encoded audio bytes.", "audio")
		return
	}
	defer rec()
	c.mu.Lock()
	c.inputLen += len(audio)
	if !c.opts.DiscardAudio {
		c.input = append(c.input, audio...)
	}
	if c.opts.Echo {
		c.echoLocked(*h.Audio, len(audio))
		c.mu.Unlock()
		return
	}
	var turn *userTurn
	if tc := c.turnLocked(); c.opts.VAD && tc.serverVAD {
		turn = c.vadLocked(audio, tc)
	}
	c.mu.Unlock()
	if turn != nil {
		c.finishTurn(*turn)
	}
}

// echoLocked answers an append in Echo mode with the same base64 audio.
func (c *Conn) echoLocked(b64 string, n int) {
	const itemID = "item_echo"
	it := c.items[itemID]
	if it == nil {
		it = &item{assistant: true, raw: map[string]any{
			"id": itemID, "object": "realtime.item", "type": "message", "role": "assistant", "status": "in_progress",
		}}
		c.items[itemID] = it
	}
	it.audioLen += n
	c.emitLocked("response.output_audio.delta", map[string]any{
		"response_id": "resp_echo", "item_id": itemID, "output_index": 0, "content_index": 0, "delta": b64,
	})
}

func (c *Conn) onCommit(h header) {
	c.mu.Lock()
	n := c.inputLen - c.pendingFrom
	if n == 0 {
		c.failLocked(h.EventID, &apiError{code: "input_audio_buffer_commit_empty",
			message: "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, but buffer only has 0.00ms of audio."})
		c.mu.Unlock()
		return
	}
	var audio []byte
	if c.opts.DiscardAudio {
		audio = make([]byte, n)
	} else {
		audio = append([]byte(nil), c.input[len(c.input)-n:]...)
	}
	c.pendingFrom = c.inputLen
	c.vad = vadState{}
	itemID := c.userItem
	if itemID == "" {
		itemID = c.srv.newID("item")
	}
	c.commitLocked(itemID)
	c.mu.Unlock()
	c.finishTurn(userTurn{itemID: itemID, audio: audio, respond: false})
}

// commitLocked emits input_audio_buffer.committed and adds the user item.
func (c *Conn) commitLocked(itemID string) {
	c.emitLocked("input_audio_buffer.committed", map[string]any{
		"previous_item_id": optional(c.lastItemID), "item_id": itemID,
	})
	c.items[itemID] = &item{raw: map[string]any{
		"id": itemID, "object": "realtime.item", "type": "message", "role": "user", "status": "completed",
		"content": []any{map[string]any{"type": "input_audio", "transcript": nil}},
	}}
	c.lastItemID = itemID
	c.userItem = ""
}

func (c *Conn) onClear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pendingFrom = c.inputLen
	c.vad = vadState{}
	c.emitLocked("input_audio_buffer.cleared", nil)
}

func (c *Conn) onSessionUpdate(h header, data []byte) {
	var ev struct {
		Session any `json:"session"`
	}
	if err := json.Unmarshal(data, &ev); err != nil {
		c.fail(h.EventID, "invalid_type", "Invalid 'session': "+err.Error(), "session")
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := validateUpdate(ev.Session); e != nil {
		c.failLocked(h.EventID, e)
		return
	}
	mergeSession(c.session, ev.Session.(map[string]any))
	if c.opts.NoSessionUpdated {
		return
	}
	c.emitLocked("session.updated", map[string]any{"session": c.session})
}

func (c *Conn) onItemCreate(h header, data []byte) {
	var ev struct {
		PreviousItemID *string        `json:"previous_item_id"`
		Item           map[string]any `json:"item"`
	}
	if err := json.Unmarshal(data, &ev); err != nil || ev.Item == nil {
		c.fail(h.EventID, "missing_required_parameter", "Missing required parameter: 'item'.", "item")
		return
	}
	it := ev.Item
	var userText string
	switch it["type"] {
	case "function_call_output":
		callID, _ := it["call_id"].(string)
		output, ok := it["output"].(string)
		if callID == "" || !ok {
			c.fail(h.EventID, "missing_required_parameter",
				"Missing required parameter: 'item.call_id' or 'item.output'.", "item")
			return
		}
		userText = output
	case "message":
		role, _ := it["role"].(string)
		if role != "user" && role != "system" && role != "assistant" {
			c.fail(h.EventID, "invalid_value", fmt.Sprintf("Invalid value: '%v'. Supported values are: "+
				"'user', 'system', and 'assistant'.", it["role"]), "item.role")
			return
		}
		if role == "user" || role == "system" {
			userText = inputText(it["content"])
		}
	case "function_call":
	default:
		c.fail(h.EventID, "invalid_value", fmt.Sprintf("Invalid value: '%v'. Supported values are: "+
			"'message', 'function_call', and 'function_call_output'.", it["type"]), "item.type")
		return
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	id, _ := it["id"].(string)
	if id == "" {
		id = c.srv.newID("item")
	}
	it["id"], it["object"], it["status"] = id, "realtime.item", "completed"
	prev := c.lastItemID
	if ev.PreviousItemID != nil {
		prev = *ev.PreviousItemID
	}
	c.items[id] = &item{raw: it}
	c.lastItemID = id
	c.seeded = true
	if userText != "" {
		c.lastUserText = userText
	}
	c.emitLocked("conversation.item.added", map[string]any{"previous_item_id": optional(prev), "item": it})
}

// inputText joins the input_text parts of a user message.
func inputText(content any) string {
	parts, _ := content.([]any)
	var texts []string
	for _, p := range parts {
		if m, ok := p.(map[string]any); ok && m["type"] == "input_text" {
			if s, ok := m["text"].(string); ok {
				texts = append(texts, s)
			}
		}
	}
	return strings.Join(texts, " ")
}

func (c *Conn) onTruncate(h header, data []byte) {
	var ev struct {
		ItemID       string `json:"item_id"`
		ContentIndex int    `json:"content_index"`
		AudioEndMs   *int   `json:"audio_end_ms"`
	}
	if err := json.Unmarshal(data, &ev); err != nil {
		c.fail(h.EventID, "invalid_type", "Invalid 'conversation.item.truncate': "+err.Error(), "")
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	it := c.items[ev.ItemID]
	switch {
	case it == nil:
		c.failLocked(h.EventID, invalid("invalid_value", "item_id",
			"Invalid 'item_id': no item with id '%s' found in the conversation.", ev.ItemID))
	case !it.assistant:
		c.failLocked(h.EventID, invalid("invalid_value", "item_id", "Only assistant messages can be truncated."))
	case ev.ContentIndex != 0:
		c.failLocked(h.EventID, invalid("invalid_value", "content_index", "Invalid 'content_index': %d.", ev.ContentIndex))
	case ev.AudioEndMs == nil:
		c.failLocked(h.EventID, invalid("missing_required_parameter", "audio_end_ms",
			"Missing required parameter: 'audio_end_ms'."))
	case *ev.AudioEndMs < 0:
		c.failLocked(h.EventID, invalid("invalid_value", "audio_end_ms", "Invalid 'audio_end_ms': %d.", *ev.AudioEndMs))
	case *ev.AudioEndMs > it.audioLen/bytesPerMs:
		c.failLocked(h.EventID, invalid("invalid_value", "audio_end_ms",
			"Audio content of %dms is already shorter than %dms", it.audioLen/bytesPerMs, *ev.AudioEndMs))
	default:
		it.audioLen = *ev.AudioEndMs * bytesPerMs
		c.truncations = append(c.truncations, Truncation{ItemID: ev.ItemID, ContentIndex: 0, AudioEndMs: *ev.AudioEndMs})
		c.emitLocked("conversation.item.truncated", map[string]any{
			"item_id": ev.ItemID, "content_index": 0, "audio_end_ms": *ev.AudioEndMs,
		})
	}
}

func (c *Conn) onItemLookup(h header, typ string, data []byte) {
	var ev struct {
		ItemID string `json:"item_id"`
	}
	_ = json.Unmarshal(data, &ev)
	c.mu.Lock()
	defer c.mu.Unlock()
	it := c.items[ev.ItemID]
	if it == nil {
		c.failLocked(h.EventID, invalid("invalid_value", "item_id",
			"Invalid 'item_id': no item with id '%s' found in the conversation.", ev.ItemID))
		return
	}
	if typ == "conversation.item.retrieve" {
		c.emitLocked("conversation.item.retrieved", map[string]any{"item": it.raw})
		return
	}
	delete(c.items, ev.ItemID)
	c.emitLocked("conversation.item.deleted", map[string]any{"item_id": ev.ItemID})
}

func (c *Conn) onResponseCreate(h header) {
	c.mu.Lock()
	if c.active != nil {
		c.failLocked(h.EventID, &apiError{code: "conversation_already_has_active_response",
			message: fmt.Sprintf("Conversation already has an active response in progress: %s. "+
				"Wait until the response is finished before creating a new one.", c.active.id)})
		c.mu.Unlock()
		return
	}
	// The greeting answers the first response of a fresh conversation; a
	// conversation seeded with items (a resumed call) gets a Reply.
	first := !c.greeted && !c.seeded
	c.greeted = true
	userText := c.lastUserText
	c.mu.Unlock()

	spec := Response{Audio: c.opts.Greeting, Transcript: c.opts.GreetingTranscript}
	if !first {
		spec = c.opts.Reply(c, userText)
	}
	if !c.start(spec, "", true) {
		c.fail(h.EventID, "conversation_already_has_active_response",
			"Conversation already has an active response in progress. "+
				"Wait until the response is finished before creating a new one.", "")
	}
}

func (c *Conn) onResponseCancel(h header) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.active == nil {
		c.failLocked(h.EventID, &apiError{code: "response_cancel_not_active",
			message: "Cancellation failed: no active response found"})
		return
	}
	c.cancelLocked("client_cancelled")
}
