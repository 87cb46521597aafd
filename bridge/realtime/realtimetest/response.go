package realtimetest

import (
	"encoding/base64"
	"encoding/json"
	"time"
)

// bytesPerMs is μ-law at 8 kHz: one byte per sample, 8 samples per ms.
const bytesPerMs = 8

// Response is what the fake agent says and does in one response. A response
// with a FunctionCall emits the function_call item after its audio (or
// instead of it, when Audio and Transcript are empty).
type Response struct {
	Audio        []byte // μ-law, sent as response.output_audio.delta chunks
	Transcript   string // the output audio transcript
	FunctionCall *FunctionCall
	// Usage is the usage object of this response's response.done, sent as
	// is (any JSON: absent fields, odd types); nil takes Options.Usage.
	Usage json.RawMessage
}

// FunctionCall is a tool call made by the fake agent. An empty CallID is
// replaced by a generated "call_<n>".
type FunctionCall struct {
	Name, Arguments, CallID string
}

// response is one response of the connection, owned by c.mu.
type response struct {
	id        string
	spec      Response
	itemID    string // the assistant message item; "" without audio or transcript
	cancel    chan struct{}
	cancelled bool
	sent      int // audio bytes sent as deltas
}

// queued is a scripted response waiting for the active one to end.
type queued struct {
	spec   Response
	itemID string
}

// Speak starts a response that says audio (with transcript) as item itemID
// (generated when empty): response.created, response.output_item.added,
// response.content_part.added, response.output_audio.delta chunks (paced by
// Options.ChunkInterval), response.output_audio.done,
// response.output_audio_transcript.done, response.content_part.done,
// response.output_item.done and response.done (completed), unless it is
// interrupted. When a response is active, it starts after that one ends.
// audio must not be modified afterwards.
func (c *Conn) Speak(itemID string, audio []byte, transcript string) {
	c.start(Response{Audio: audio, Transcript: transcript}, itemID, false)
}

// Respond starts the scripted response r (audio, transcript, function
// call, usage), like Speak and CallFunction; an empty FunctionCall.CallID
// is generated. When a response is active, it starts after that one ends.
func (c *Conn) Respond(r Response) { c.start(r, "", false) }

// CallFunction starts a response whose only output is a function_call item:
// response.created, response.output_item.added,
// response.function_call_arguments.delta and .done, response.output_item.done
// and response.done. It returns the call_id. When a response is active, it
// starts after that one ends.
func (c *Conn) CallFunction(name, args string) string {
	fc := &FunctionCall{Name: name, Arguments: args, CallID: c.srv.newID("call")}
	c.start(Response{FunctionCall: fc}, "", false)
	return fc.CallID
}

// SpeechStarted sends input_audio_buffer.speech_started for a new user item
// and, like the real server with interrupt_response true (the default), cancels
// the response in progress: no more deltas, response.output_audio.done and
// response.done with status cancelled, reason turn_detected.
func (c *Conn) SpeechStarted(audioStartMs int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.speechStartedLocked(audioStartMs, c.turnLocked())
}

func (c *Conn) speechStartedLocked(audioStartMs int, tc turnConfig) {
	c.userItem = c.srv.newID("item")
	c.emitLocked("input_audio_buffer.speech_started", map[string]any{
		"audio_start_ms": audioStartMs, "item_id": c.userItem,
	})
	if tc.interruptResponse {
		c.cancelLocked("turn_detected")
	}
}

// SpeechStopped sends input_audio_buffer.speech_stopped and then
// input_audio_buffer.committed for the current user item, as the real server
// does back to back.
func (c *Conn) SpeechStopped(audioEndMs int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.speechStoppedLocked(audioEndMs)
}

func (c *Conn) speechStoppedLocked(audioEndMs int) string {
	itemID := c.userItem
	if itemID == "" {
		itemID = c.srv.newID("item")
	}
	c.emitLocked("input_audio_buffer.speech_stopped", map[string]any{"audio_end_ms": audioEndMs, "item_id": itemID})
	c.pendingFrom = c.inputLen
	c.commitLocked(itemID)
	return itemID
}

// Transcription sends conversation.item.input_audio_transcription.completed
// with text for the last user item; text becomes the userText of Reply.
func (c *Conn) Transcription(text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	itemID := c.lastUserItemLocked()
	c.transcriptionLocked(itemID, text, 0)
}

func (c *Conn) lastUserItemLocked() string {
	if c.userItem != "" {
		return c.userItem
	}
	if it := c.items[c.lastItemID]; it != nil && it.raw["role"] == "user" {
		return c.lastItemID
	}
	return c.srv.newID("item")
}

func (c *Conn) transcriptionLocked(itemID, text string, audioBytes int) {
	c.lastUserText = text
	c.emitLocked("conversation.item.input_audio_transcription.completed", map[string]any{
		"item_id": itemID, "content_index": 0, "transcript": text,
		"usage": map[string]any{"type": "duration", "seconds": float64(audioBytes/bytesPerMs) / 1000},
	})
}

// userTurn is a committed user turn waiting for its transcription.
type userTurn struct {
	itemID  string
	audio   []byte
	respond bool // create a response from Options.Reply afterwards
}

// finishTurn transcribes a committed turn and, if asked, answers it. It runs
// the user's Transcribe and Reply without holding c.mu.
func (c *Conn) finishTurn(t userTurn) {
	text := c.opts.Transcribe(t.audio)
	c.mu.Lock()
	c.transcriptionLocked(t.itemID, text, len(t.audio))
	respond := t.respond && c.active == nil
	c.mu.Unlock()
	if respond {
		c.start(c.opts.Reply(c, text), "", true)
	}
}

// start begins spec now, or queues it behind the active response; with
// ifIdle it refuses (false) when a response is active.
func (c *Conn) start(spec Response, itemID string, ifIdle bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.active != nil {
		if ifIdle {
			return false
		}
		c.queue = append(c.queue, queued{spec: spec, itemID: itemID})
		return true
	}
	c.beginLocked(spec, itemID)
	return true
}

func (c *Conn) beginLocked(spec Response, itemID string) {
	if fc := spec.FunctionCall; fc != nil && fc.CallID == "" {
		cp := *fc
		cp.CallID = c.srv.newID("call")
		spec.FunctionCall = &cp
	}
	r := &response{id: c.srv.newID("resp"), spec: spec, cancel: make(chan struct{})}
	c.active = r
	c.emitLocked("response.created", map[string]any{"response": c.responseLocked(r, "in_progress", nil, []any{})})
	if len(spec.Audio) > 0 || spec.Transcript != "" || spec.FunctionCall == nil {
		if itemID == "" {
			itemID = c.srv.newID("item")
		}
		r.itemID = itemID
		raw := messageItem(itemID, "in_progress", nil)
		c.items[itemID] = &item{raw: raw, assistant: true}
		c.lastItemID = itemID
		c.emitLocked("response.output_item.added", map[string]any{"response_id": r.id, "output_index": 0, "item": raw})
		c.emitLocked("response.content_part.added", c.partFields(r, map[string]any{"type": "audio", "transcript": ""}))
	}
	if len(spec.Audio) == 0 || !c.goTrack(func() { c.play(r) }) {
		c.finishLocked(r)
	}
}

// play sends the audio deltas of r, paced by Options.ChunkInterval, then
// finishes it unless it was cancelled on the way.
func (c *Conn) play(r *response) {
	audio, chunk, interval := r.spec.Audio, c.opts.ChunkBytes, c.opts.ChunkInterval
	next := time.Now()
	for off := 0; off < len(audio); off += chunk {
		if off > 0 && interval > 0 {
			next = next.Add(interval)
			t := time.NewTimer(time.Until(next))
			select {
			case <-t.C:
			case <-r.cancel:
				t.Stop()
				return
			case <-c.quit:
				t.Stop()
				return
			}
		}
		end := min(off+chunk, len(audio))
		c.mu.Lock()
		if r.cancelled {
			c.mu.Unlock()
			return
		}
		c.emitLocked("response.output_audio.delta", c.partFields(r, map[string]any{
			"delta": base64.StdEncoding.EncodeToString(audio[off:end]),
		}))
		r.sent = end
		if it := c.items[r.itemID]; it != nil {
			it.audioLen += end - off
		}
		c.mu.Unlock()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !r.cancelled {
		c.finishLocked(r)
	}
}

// finishLocked emits the closing events of a completed response.
func (c *Conn) finishLocked(r *response) {
	output := []any{}
	if r.itemID != "" {
		tr := r.spec.Transcript
		c.emitLocked("response.output_audio.done", c.partFields(r, nil))
		c.emitLocked("response.output_audio_transcript.done", c.partFields(r, map[string]any{"transcript": tr}))
		c.emitLocked("response.content_part.done", c.partFields(r, map[string]any{
			"part": map[string]any{"type": "audio", "transcript": tr},
		}))
		raw := messageItem(r.itemID, "completed", []any{map[string]any{"type": "output_audio", "transcript": tr}})
		if it := c.items[r.itemID]; it != nil {
			it.raw = raw
		}
		c.emitLocked("response.output_item.done", map[string]any{"response_id": r.id, "output_index": 0, "item": raw})
		output = append(output, raw)
	}
	if fc := r.spec.FunctionCall; fc != nil {
		idx, id := len(output), c.srv.newID("item")
		call := func(status, args string) map[string]any {
			return map[string]any{"id": id, "object": "realtime.item", "type": "function_call", "status": status,
				"call_id": fc.CallID, "name": fc.Name, "arguments": args}
		}
		c.emitLocked("response.output_item.added", map[string]any{"response_id": r.id, "output_index": idx, "item": call("in_progress", "")})
		args := map[string]any{"response_id": r.id, "item_id": id, "output_index": idx, "call_id": fc.CallID}
		args["delta"] = fc.Arguments
		c.emitLocked("response.function_call_arguments.delta", args)
		delete(args, "delta")
		args["name"], args["arguments"] = fc.Name, fc.Arguments
		c.emitLocked("response.function_call_arguments.done", args)
		done := call("completed", fc.Arguments)
		c.items[id] = &item{raw: done}
		c.lastItemID = id
		c.emitLocked("response.output_item.done", map[string]any{"response_id": r.id, "output_index": idx, "item": done})
		output = append(output, done)
	}
	c.emitLocked("response.done", map[string]any{"response": c.responseLocked(r, "completed", nil, output)})
	c.endLocked()
}

// cancelLocked cancels the active response, if any, for reason
// (turn_detected or client_cancelled).
func (c *Conn) cancelLocked(reason string) {
	r := c.active
	if r == nil {
		return
	}
	r.cancelled = true
	close(r.cancel)
	output := []any{}
	if r.itemID != "" {
		c.emitLocked("response.output_audio.done", c.partFields(r, nil))
		raw := messageItem(r.itemID, "incomplete",
			[]any{map[string]any{"type": "output_audio", "transcript": r.spec.Transcript}})
		if it := c.items[r.itemID]; it != nil {
			it.raw = raw
		}
		output = append(output, raw)
	}
	details := map[string]any{"type": "cancelled", "reason": reason}
	c.emitLocked("response.done", map[string]any{"response": c.responseLocked(r, "cancelled", details, output)})
	c.endLocked()
}

// endLocked clears the active response and starts the next queued one.
func (c *Conn) endLocked() {
	c.active = nil
	if len(c.queue) > 0 {
		next := c.queue[0]
		c.queue = c.queue[1:]
		c.beginLocked(next.spec, next.itemID)
	}
}

// partFields are the ids of the audio part of r plus extra fields.
func (c *Conn) partFields(r *response, extra map[string]any) map[string]any {
	m := map[string]any{"response_id": r.id, "item_id": r.itemID, "output_index": 0, "content_index": 0}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

func messageItem(id, status string, content []any) map[string]any {
	if content == nil {
		content = []any{}
	}
	return map[string]any{"id": id, "object": "realtime.item", "type": "message", "status": status,
		"role": "assistant", "content": content}
}

// responseLocked is the GA realtime.response object of r.
func (c *Conn) responseLocked(r *response, status string, details any, output []any) map[string]any {
	var usage any
	switch {
	case status == "in_progress":
	case r.spec.Usage != nil:
		usage = r.spec.Usage
	case c.opts.Usage != nil:
		usage = c.opts.Usage
	default:
		audioTokens := r.sent / (50 * bytesPerMs) // about one token per 50 ms of audio
		usage = map[string]any{
			"total_tokens": audioTokens, "input_tokens": 0, "output_tokens": audioTokens,
			"input_token_details":  map[string]any{"text_tokens": 0, "audio_tokens": 0, "cached_tokens": 0},
			"output_token_details": map[string]any{"text_tokens": 0, "audio_tokens": audioTokens},
		}
	}
	return map[string]any{
		"object": "realtime.response", "id": r.id, "status": status, "status_details": details,
		"output": output, "conversation_id": c.convID, "output_modalities": []any{"audio"},
		"audio": c.outputAudioLocked(), "usage": usage, "metadata": nil,
	}
}
