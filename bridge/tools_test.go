package bridge

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/session"
)

// countEvents counts the client events of typ the fake model received.
func countEvents(mc *realtimetest.Conn, typ string) int {
	n := 0
	for _, e := range mc.Events() {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// countItemText counts the message items the model received with text.
func countItemText(t *testing.T, mc *realtimetest.Conn, text string) int {
	n := 0
	for _, it := range itemTexts(t, mc) {
		if it[1] == text {
			n++
		}
	}
	return n
}

// sendJSON sends v to the bridge as one raw server event.
func sendJSON(t *testing.T, mc *realtimetest.Conn, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	mc.SendRaw(b)
}

// TestUnknownToolRoundsBounded: a model that answers every response with a
// call of a tool that does not exist gets a few rounds per caller turn, then
// no more response.create, one note that tools are unavailable, a timeline
// event and a metric; a caller turn (a digit) gives it a few rounds again.
// Before the bound, each unknown-tool output asked for a new response at
// once, without end.
func TestUnknownToolRoundsBounded(t *testing.T) {
	h := newHarness(t, harnessOpts{model: realtimetest.Options{
		Reply: func(*realtimetest.Conn, string) realtimetest.Response {
			return realtimetest.Response{FunctionCall: &realtimetest.FunctionCall{Name: "no_such_tool", Arguments: "{}"}}
		},
	}})
	call, mc := h.call(nil)
	waitEvent(t, mc, "response.create", 1) // the greeting
	waitFor(t, "the greeting at Twilio", func() bool { return call.ReceivedBytes() >= 1600 })
	mc.CallFunction("no_such_tool", "{}")

	waitFor(t, "the model told that tools are unavailable", func() bool { return countItemText(t, mc, toolsUnavailable) == 1 })
	if n := countEvents(mc, "response.create"); n != 1+maxToolRoundsPerTurn {
		t.Fatalf("%d response.create, want the greeting and %d rounds", n, maxToolRoundsPerTurn)
	}
	if v := h.counter("vivi_bridge_tool_rounds_limited_total", "scope", "turn"); v != 1 {
		t.Fatalf("tool_rounds_limited_total{scope=turn} = %v", v)
	}

	call.Digit("5") // a caller turn: a response for the digit, then a few rounds again
	waitFor(t, "the limit reached again", func() bool { return countItemText(t, mc, toolsUnavailable) == 2 })
	if n := countEvents(mc, "response.create"); n != 2+2*maxToolRoundsPerTurn {
		t.Fatalf("%d response.create after the digit, want %d", n, 2+2*maxToolRoundsPerTurn)
	}
	outs := functionOutputs(t, mc)
	if len(outs) != 2*(maxToolRoundsPerTurn+1) {
		t.Fatalf("%d tool outputs, want every call answered: %v", len(outs), outs)
	}
	waitFor(t, "the limit on the timeline", func() bool {
		n := 0
		for _, e := range h.sessions.get(call.CallSID()).Timeline {
			if e.Type == session.EventToolCall && strings.HasPrefix(e.Detail, "tool round limit reached (turn)") {
				n++
			}
		}
		return n == 2
	})
}

// TestToolRoundsPerCallCap: however many caller turns, a call gets at most
// maxToolRoundsPerCall tool rounds.
func TestToolRoundsPerCallCap(t *testing.T) {
	h := newHarness(t, harnessOpts{model: realtimetest.Options{
		Reply: func(*realtimetest.Conn, string) realtimetest.Response {
			return realtimetest.Response{FunctionCall: &realtimetest.FunctionCall{Name: "no_such_tool", Arguments: "{}"}}
		},
	}})
	call, mc := h.call(nil)
	waitEvent(t, mc, "response.create", 1)
	waitFor(t, "the greeting at Twilio", func() bool { return call.ReceivedBytes() >= 1600 })
	mc.CallFunction("no_such_tool", "{}")
	turns := 1
	for ; h.counter("vivi_bridge_tool_rounds_limited_total", "scope", "call") == 0; turns++ {
		if turns > maxToolRoundsPerCall {
			t.Fatal("no per-call limit")
		}
		waitFor(t, "the turn's limit", func() bool { return countItemText(t, mc, toolsUnavailable) == turns })
		call.Digit("5")
	}
	waitFor(t, "the call's limit told", func() bool { return countItemText(t, mc, toolsUnavailable) == turns })
	// Each digit asks for one response; tool rounds stop at the call's cap.
	if n, want := countEvents(mc, "response.create"), 1+(turns-1)+maxToolRoundsPerCall; n != want {
		t.Fatalf("%d response.create over %d turns, want %d", n, turns, want)
	}
}

// TestToolNameFromAnyEvent: a function_call_arguments.done without a name
// (the name only in output_item.added/.done or in response.done) is acted
// on by its name, exactly once, not taken for an unknown tool.
func TestToolNameFromAnyEvent(t *testing.T) {
	fc := func(id, callID, name, args, status string) map[string]any {
		m := map[string]any{"id": id, "type": "function_call", "call_id": callID, "status": status, "arguments": args}
		if name != "" {
			m["name"] = name
		}
		return m
	}
	argsDone := func(item, callID string) map[string]any {
		return map[string]any{"type": "response.function_call_arguments.done", "response_id": "resp_x", "item_id": item,
			"output_index": 0, "call_id": callID, "arguments": `{"destination":"Nowhere"}`}
	}
	done := func(items ...any) map[string]any {
		return map[string]any{"type": "response.done", "response": map[string]any{"id": "resp_x", "status": "completed", "output": items}}
	}
	for name, events := range map[string][]any{
		"name in output_item.added and .done": {
			map[string]any{"type": "response.output_item.added", "item": fc("it_1", "call_1", "transfer_call", "", "in_progress")},
			argsDone("it_1", "call_1"),
			map[string]any{"type": "response.output_item.done", "item": fc("it_1", "call_1", "transfer_call", `{"destination":"Nowhere"}`, "completed")},
			done(fc("it_1", "call_1", "transfer_call", `{"destination":"Nowhere"}`, "completed")),
		},
		"name only in output_item.added": {
			map[string]any{"type": "response.output_item.added", "item": fc("it_1", "call_1", "transfer_call", "", "in_progress")},
			argsDone("it_1", "call_1"),
			done(),
		},
		"name only in response.done": {
			argsDone("it_1", "call_1"),
			done(fc("it_1", "call_1", "transfer_call", `{"destination":"Nowhere"}`, "completed")),
		},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{})
			call, mc := h.call(nil)
			waitEvent(t, mc, "response.create", 1)
			waitFor(t, "the greeting at Twilio", func() bool { return call.ReceivedBytes() >= 1600 })
			sendJSON(t, mc, map[string]any{"type": "response.created", "response": map[string]any{"id": "resp_x", "status": "in_progress"}})
			for _, ev := range events {
				sendJSON(t, mc, ev)
			}
			waitEvent(t, mc, "response.create", 2) // the bridge lets the model speak about the refusal
			outs := functionOutputs(t, mc)
			if out := outs["call_1"]; out != `{"ok":false,"error":"unknown destination"}` {
				t.Fatalf("output %q: the call was not acted on as transfer_call", out)
			}
			waitFor(t, "the tool call on the timeline", func() bool {
				ev, ok := hasEvent(h.sessions.get(call.CallSID()), session.EventTransferFailed)
				return ok && strings.Contains(ev.Detail, "Nowhere")
			})
			n := 0
			for _, e := range mc.Events() {
				if e.Type == "conversation.item.create" && strings.Contains(string(e.Raw), `"call_1"`) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("%d outputs for call_1, want exactly one", n)
			}
		})
	}
}

// TestManyToolCallsBoundedRecords: a model sending many tool calls in one
// response (each answered) gets a bounded number of timeline events and one
// response.create, not one per call.
func TestManyToolCallsBoundedRecords(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	call, mc := h.call(nil)
	waitEvent(t, mc, "response.create", 1)
	waitFor(t, "the greeting at Twilio", func() bool { return call.ReceivedBytes() >= 1600 })
	sendJSON(t, mc, map[string]any{"type": "response.created", "response": map[string]any{"id": "resp_x", "status": "in_progress"}})
	const calls = 200
	for i := range calls {
		id := "call_" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + "_" + strings.Repeat("y", i/26)
		sendJSON(t, mc, map[string]any{"type": "response.output_item.done", "response_id": "resp_x",
			"item": map[string]any{"id": "it_" + id, "type": "function_call", "status": "completed", "call_id": id, "name": "no_such_tool", "arguments": "{}"}})
	}
	sendJSON(t, mc, map[string]any{"type": "response.done", "response": map[string]any{"id": "resp_x", "status": "completed"}})
	waitFor(t, "every call answered", func() bool { return len(functionOutputs(t, mc)) == calls })
	waitEvent(t, mc, "response.create", 2)
	waitFor(t, "the limit on the timeline", func() bool {
		_, ok := hasEvent(h.sessions.get(call.CallSID()), session.EventToolCall)
		return ok && countItemText(t, mc, toolsUnavailable) == 1
	})
	n := 0
	for _, e := range h.sessions.get(call.CallSID()).Timeline {
		if e.Type == session.EventToolCall {
			n++
		}
	}
	if n > maxRecordedToolCalls+1 {
		t.Fatalf("%d tool_call events on the timeline for %d calls (at most %d)", n, calls, maxRecordedToolCalls+1)
	}
	if c := countEvents(mc, "response.create"); c != 2 {
		t.Fatalf("%d response.create, want the greeting and one for the tool outputs", c)
	}
}
