package bridge

import (
	"slices"

	"go.uber.org/zap"

	"github.com/vivi/bridge/bridge/realtime"
	"github.com/vivi/bridge/session"
)

// Bounds on what the model's tool calls can make the bridge do. A round is
// one tool call answered with an output after which the model would be
// asked to speak again (an unknown tool, a refused transfer, ...): that is
// the loop a model can drive by itself, each round a billed response.
const (
	maxToolRoundsPerTurn = 3  // per caller turn (speech, a commit, a digit)
	maxToolRoundsPerCall = 20 // for the whole call
	// maxTrackedToolCalls bounds the function_call items remembered while
	// their name or arguments are awaited, and those already acted on.
	maxTrackedToolCalls = 64
	// maxRecordedToolCalls bounds the tool calls put on the timeline and
	// logged one by one; beyond it they are counted in the anomaly log.
	maxRecordedToolCalls = 2 * maxToolRoundsPerCall
)

// toolsUnavailable is told to the model, once per caller turn, when the
// round limits stop the bridge from asking for another response.
const toolsUnavailable = "Tools are unavailable for now. Do not call any tool until the caller speaks again; answer the caller without tools."

// toolCall is one function_call item of the model, as far as known: the
// name and the arguments may come in different events (some
// implementations send the name only in output_item.added/.done and in
// response.done, not in function_call_arguments.done).
type toolCall struct {
	item    string
	name    string
	args    string
	hasArgs bool
	acted   bool
}

// toolState is the call's tool calls and round budget; owned by the loop.
type toolState struct {
	calls     map[string]*toolCall // by call_id
	order     []string             // call_ids, oldest first (for the bound)
	byItem    map[string]string    // item_id -> call_id
	turn      int                  // rounds since the caller's turn began
	total     int                  // rounds in the call
	toldLimit bool                 // the model was told, this turn
	acted     int                  // tool calls acted on in the call
}

// get returns the call callID, made when new; nil when the bound is
// reached and nothing can be forgotten (every tracked call still waits).
func (ts *toolState) get(callID, item string) *toolCall {
	if ts.calls == nil {
		ts.calls, ts.byItem = map[string]*toolCall{}, map[string]string{}
	}
	if tc := ts.calls[callID]; tc != nil {
		if tc.item == "" && item != "" {
			tc.item = item
			ts.byItem[item] = callID
		}
		return tc
	}
	if len(ts.order) >= maxTrackedToolCalls {
		// Forget the oldest; a call acted on long ago will not come back
		// (and if it does, it is one more round, which the budget bounds).
		old := ts.order[0]
		ts.order = ts.order[1:]
		if tc := ts.calls[old]; tc != nil && tc.item != "" {
			delete(ts.byItem, tc.item)
		}
		delete(ts.calls, old)
	}
	tc := &toolCall{item: item}
	ts.calls[callID] = tc
	ts.order = append(ts.order, callID)
	if item != "" {
		ts.byItem[item] = callID
	}
	return tc
}

// newTurn starts a caller turn: the per-turn budget is full again.
func (ts *toolState) newTurn() { ts.turn, ts.toldLimit = 0, false }

// onFunctionCall merges what one event says of a function_call item and
// acts on the call once its name and arguments are both known, exactly
// once per call_id. Any of response.output_item.added/.done,
// response.function_call_arguments.done and response.done may bring it.
func (c *call) onFunctionCall(callID, item, name, args string, hasArgs bool) {
	if callID == "" {
		callID = c.tools.byItem[item]
	}
	if callID == "" {
		if item == "" {
			c.anomaly("tool_call_id", "model tool call without call_id ignored", zap.String("tool", clip(name, 40)))
		}
		return // arguments.done before output_item.added: the item event brings the call_id
	}
	tc := c.tools.get(callID, item)
	if tc.acted {
		return
	}
	if name != "" {
		tc.name = name
	}
	if hasArgs {
		tc.args, tc.hasArgs = args, true
	}
	if tc.name == "" || !tc.hasArgs {
		return
	}
	tc.acted = true
	c.onToolCall(callID, tc.name, tc.args)
}

// onResponseOutput looks at the function_call items of response.done: the
// last event that can name a call.
func (c *call) onResponseOutput(r *realtime.ServerResponse) {
	if r == nil {
		return
	}
	for i := range r.Output {
		if it := &r.Output[i]; it.Type == "function_call" {
			c.onFunctionCall(it.CallID, it.ID, it.Name, it.Arguments, it.Status == "completed" || it.Arguments != "")
		}
	}
}

// toolRound answers a tool call with output and asks the model to speak
// about it while the round budget lasts; beyond it the output is sent
// without a response.create, and the model is told (once a turn) that
// tools are unavailable for now.
func (c *call) toolRound(callID, output string) {
	c.toModelJSON(c.functionOutput(callID, output))
	if c.tools.turn < maxToolRoundsPerTurn && c.tools.total < maxToolRoundsPerCall {
		c.tools.turn++
		c.tools.total++
		c.requestResponse()
		return
	}
	if c.tools.toldLimit {
		return
	}
	c.tools.toldLimit = true
	scope := "turn"
	if c.tools.total >= maxToolRoundsPerCall {
		scope = "call"
	}
	c.srv.metrics.toolLimited.WithLabelValues(scope).Inc()
	c.record(session.EventToolCall, "tool round limit reached ("+scope+"): no more responses for tool calls this turn")
	c.log.Warn("model tool-call round limit reached: not asking for another response",
		zap.String("scope", scope), zap.Int("rounds_turn", c.tools.turn), zap.Int("rounds_call", c.tools.total))
	c.toModelJSON(realtime.Message("system", toolsUnavailable))
}

// functionOutput is the item answering the tool call callID with output;
// the call and its output are kept as a tool turn of the transcript (a
// bounded number a call), so that a new model session is seeded with them.
func (c *call) functionOutput(callID, output string) realtime.ItemCreate {
	if tc := c.tools.calls[callID]; tc != nil && c.writer != nil && c.tools.acted <= maxRecordedToolCalls {
		now := c.now()
		call := session.ToolCall{CallID: callID, Name: tc.name, Arguments: tc.args, Output: output}
		c.transcript = append(c.transcript, session.ToolTurn(now, call))
		if n := len(c.transcript); n > session.MaxTranscriptTurns {
			c.transcript = slices.Delete(c.transcript, 0, n-session.MaxTranscriptTurns)
		}
		c.writer.toolTurn(now, call)
	}
	return realtime.FunctionOutput(callID, output)
}
