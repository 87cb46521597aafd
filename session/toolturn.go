package session

import "time"

// MaxToolText bounds each of a tool turn's arguments and output.
const MaxToolText = 1000

// ToolCall is one function call of the agent and the output it was
// answered with, kept so that a new model session (a re-dial, a rotation, a
// resume on another pod) can be seeded with the call and its result.
type ToolCall struct {
	CallID    string `json:"call_id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments,omitempty"`
	Output    string `json:"output,omitempty"`
}

func (tc *ToolCall) size() int {
	if tc == nil {
		return 0
	}
	return len(tc.CallID) + len(tc.Name) + len(tc.Arguments) + len(tc.Output)
}

// ToolTurn is the RoleTool turn of tc: its parts cut at MaxToolText and a
// one-line summary as its text.
func ToolTurn(now time.Time, tc ToolCall) Turn {
	tc.CallID = truncate(tc.CallID, 128)
	tc.Name = truncate(tc.Name, 128)
	tc.Arguments = truncate(tc.Arguments, MaxToolText)
	tc.Output = truncate(tc.Output, MaxToolText)
	text := truncate(tc.Name+" "+tc.Arguments+" -> "+tc.Output, 300)
	return Turn{At: now, Role: RoleTool, Text: text, Tool: &tc}
}

// AddToolTurn appends the RoleTool turn of tc (ToolTurn) under the same
// bounds as AddTurn.
func (s *Session) AddToolTurn(now time.Time, tc ToolCall) {
	s.appendTurn(now, ToolTurn(now, tc))
}

// PutTurn appends a copy of t: a tool turn as AddToolTurn, a text turn as
// AddTurn.
func (s *Session) PutTurn(t Turn) {
	if t.Tool != nil {
		s.AddToolTurn(t.At, *t.Tool)
		return
	}
	s.AddTurn(t.At, t.Role, t.Text)
}
