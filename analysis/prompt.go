package analysis

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/session"
)

// Bounds of the request: the agent's instructions (as validated by the
// channel package) and the user message (the transcript is already bounded
// to session.MaxTranscriptBytes; facts and line prefixes come on top).
const (
	maxInstructions = channel.MaxAnalysisInstructions
	maxUserMessage  = session.MaxTranscriptBytes + 16<<10
)

// SchemaName is the name of the response format's JSON schema.
const SchemaName = "call_analysis"

const systemPrompt = `You analyse a finished phone call between a caller and an AI voice agent.
Answer with the JSON object of the schema:
- summary: what the call was about and how it ended, in two to four sentences, in English.
- intent: what the caller wanted, in a few words.
- outcome: "resolved" when the caller got what they called for, "abandoned" when they did not or the call ended before; a fixed outcome given in the facts is the only other choice and is taken as given.
- follow_ups: actions someone must take after the call (call back, send a document); an empty list when none.
- language: the BCP 47 tag of the language the caller spoke (for example "en" or "de-CH").
Base everything on the transcript and the facts only; do not invent details.`

func (a *Analyzer) request(in Input, f facts) openai.ChatCompletionRequest {
	sys := systemPrompt
	if ins := strings.TrimSpace(in.Settings.Instructions); ins != "" {
		sys += "\n\nInstructions of the business running the agent:\n" + clip(ins, maxInstructions)
	}
	if len(in.Settings.Fields) > 0 {
		sys += "\n\nAlso fill in extra: the business's own fields, as described in the schema."
	}
	schema, _ := json.Marshal(Schema(in.Settings.Fields, f.outcomes()))
	return openai.ChatCompletionRequest{
		Model: a.model,
		Messages: []openai.ChatCompletionMessage{
			{Role: openai.ChatMessageRoleSystem, Content: sys},
			{Role: openai.ChatMessageRoleUser, Content: userMessage(in.Session, f)},
		},
		MaxCompletionTokens: maxCompletionTokens,
		ResponseFormat: &openai.ChatCompletionResponseFormat{
			Type: openai.ChatCompletionResponseFormatTypeJSONSchema,
			JSONSchema: &openai.ChatCompletionResponseFormatJSONSchema{
				Name:   SchemaName,
				Schema: json.RawMessage(schema),
				Strict: true,
			},
		},
	}
}

// Schema is the strict JSON schema of the answer: the fixed fields, with
// outcome one of outcomes, and extra (the agent's fields) when there are
// any.
func Schema(fields []channel.AnalysisField, outcomes []string) map[string]any {
	str := func(desc string) map[string]any { return map[string]any{"type": "string", "description": desc} }
	props := map[string]any{
		"summary": str("What the call was about and how it ended."),
		"intent":  str("What the caller wanted."),
		"outcome": map[string]any{"type": "string", "enum": outcomes, "description": "How the call ended for the caller."},
		"follow_ups": map[string]any{
			"type": "array", "items": map[string]any{"type": "string"},
			"description": "Actions to take after the call.",
		},
		"language": str("BCP 47 tag of the caller's language."),
	}
	required := []string{"summary", "intent", "outcome", "follow_ups", "language"}
	if len(fields) > 0 {
		extraProps := make(map[string]any, len(fields))
		names := make([]string, 0, len(fields))
		for _, fd := range fields {
			p := map[string]any{"type": fd.Type}
			if fd.Description != "" {
				p["description"] = fd.Description
			}
			if len(fd.Enum) > 0 {
				p["enum"] = fd.Enum
			}
			extraProps[fd.Name] = p
			names = append(names, fd.Name)
		}
		props["extra"] = map[string]any{
			"type": "object", "properties": extraProps, "required": names,
			"additionalProperties": false, "description": "The business's own fields.",
		}
		required = append(required, "extra")
	}
	return map[string]any{
		"type": "object", "properties": props, "required": required, "additionalProperties": false,
	}
}

// userMessage states the facts of the call and its transcript, one line
// per turn, bounded to maxUserMessage bytes.
func userMessage(s *session.Session, f facts) string {
	var b strings.Builder
	b.WriteString("Facts:\n")
	fmt.Fprintf(&b, "- end reason: %s\n", orNone(s.EndReason))
	if s.EndedAt != nil {
		fmt.Fprintf(&b, "- duration: %s\n", s.EndedAt.Sub(s.CreatedAt).Round(time.Second))
	}
	if f.outcome != "" {
		fmt.Fprintf(&b, "- fixed outcome: %s\n", f.outcome)
	}
	for _, t := range s.Transfers {
		fmt.Fprintf(&b, "- transfer to %q (via %s): %s\n", t.Destination, orNone(t.Via), transferOutcome(t))
	}
	if s.TranscriptFolded > 0 {
		fmt.Fprintf(&b, "- %d turns from the middle of the call are left out of the transcript\n", s.TranscriptFolded)
	}
	b.WriteString("\nTranscript:\n")
	for _, t := range s.Transcript {
		line := turnLine(t)
		if b.Len()+len(line)+1 > maxUserMessage {
			b.WriteString("[transcript cut]\n")
			break
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

func turnLine(t session.Turn) string {
	text := strings.ReplaceAll(t.Text, "\n", " ")
	if t.Role == session.RoleTool && t.Tool != nil {
		return fmt.Sprintf("tool call: %s(%s) -> %s", t.Tool.Name, oneLine(t.Tool.Arguments), oneLine(t.Tool.Output))
	}
	return t.Role + ": " + text
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

func transferOutcome(t session.Transfer) string {
	switch {
	case t.Error != "":
		return "could not be started"
	case t.Status == "in-progress":
		return "taken by the PBX"
	case t.Status == "":
		return "no outcome known"
	}
	out := "failed (" + t.Status
	code := t.NotifySIPCode
	if code == "" {
		code = t.ReferSIPCode
	}
	if code != "" {
		out += ", SIP " + code
	}
	return out + ")"
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// clip cuts s to at most n bytes on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
