package session

import (
	"strings"
	"testing"
	"time"
)

// A tool turn keeps the call and its output, bounded, with a summary as
// its text; PutTurn copies it (and text turns) as they are.
func TestToolTurn(t *testing.T) {
	now := time.Now()
	s := New("CA1", "ch", "ag", now)
	s.AddToolTurn(now, ToolCall{CallID: "call_1", Name: "transfer_call", Arguments: `{"destination":"Sales"}`,
		Output: strings.Repeat("x", 3*MaxToolText)})
	tt := s.Transcript[0]
	if tt.Role != RoleTool || tt.Tool == nil || tt.Tool.CallID != "call_1" || tt.Tool.Name != "transfer_call" ||
		len(tt.Tool.Output) != MaxToolText || !strings.HasPrefix(tt.Text, `transfer_call {"destination":"Sales"} -> x`) {
		t.Fatalf("tool turn %+v", tt)
	}
	c := New("CA2", "ch", "ag", now)
	c.PutTurn(tt)
	c.PutTurn(Turn{At: now, Role: RoleCaller, Text: "hello"})
	if len(c.Transcript) != 2 || c.Transcript[0].Tool == nil || *c.Transcript[0].Tool != *tt.Tool || c.Transcript[1].Text != "hello" {
		t.Fatalf("copied transcript %+v", c.Transcript)
	}
	// Tool turns count in the byte bound: many of them fold like text turns.
	for range 200 {
		c.AddToolTurn(now, ToolCall{CallID: "c", Name: "n", Output: strings.Repeat("y", MaxToolText)})
	}
	total := 0
	for _, t := range c.Transcript {
		total += turnSize(t)
	}
	if total > MaxTranscriptBytes || c.TranscriptFolded == 0 {
		t.Fatalf("transcript %d bytes, %d folded; want within %d", total, c.TranscriptFolded, MaxTranscriptBytes)
	}
}
