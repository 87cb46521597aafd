package bridge

import (
	"encoding/json"
	"net/url"
	"strings"

	"github.com/vivi/bridge/bridge/realtime"
	"github.com/vivi/bridge/session"
)

// seedBudget bounds the transcript text re-seeded into a new model
// connection (the model's context is ~28k tokens of input): the most recent
// turns that fit are kept.
const seedBudget = 16000

// sessionUpdate is the session.update that configures the model for agent:
// μ-law both ways (no transcoding), server VAD, caller transcription, and
// the tools the agent may use.
func sessionUpdate(agent Agent, from, transcriptionModel string) realtime.SessionUpdate {
	td := &realtime.TurnDetection{
		Type:              realtime.TurnDetectionServerVAD,
		Threshold:         agent.TurnDetection.Threshold,
		PrefixPaddingMs:   agent.TurnDetection.PrefixPaddingMs,
		SilenceDurationMs: agent.TurnDetection.SilenceMs,
		CreateResponse:    true,
		InterruptResponse: true,
	}
	return realtime.SessionUpdate{
		Type: realtime.TypeSessionUpdate,
		Session: realtime.Session{
			Type:             realtime.SessionTypeRealtime,
			Instructions:     instructions(agent, from),
			OutputModalities: []string{"audio"},
			Audio: &realtime.SessionAudio{
				Input: realtime.AudioInput{
					Format:        realtime.AudioFormat{Type: realtime.FormatPCMU},
					Transcription: &realtime.Transcription{Model: transcriptionModel},
					TurnDetection: td,
				},
				Output: realtime.AudioOutput{
					Format: realtime.AudioFormat{Type: realtime.FormatPCMU},
					Voice:  agent.Voice,
				},
			},
			Tools:      tools(agent),
			ToolChoice: "auto",
		},
	}
}

// instructions are the agent's instructions, who is calling, and when to
// use the tools.
func instructions(agent Agent, from string) string {
	var b strings.Builder
	b.WriteString(strings.TrimSpace(agent.Instructions))
	if from != "" {
		// Only the parsed number: From is set by whoever places the call,
		// and text from outside must never read as instructions.
		b.WriteString("\n\nThe caller's number is ")
		b.WriteString(callerNumber(from))
		b.WriteString(".")
	}
	if len(agent.Destinations) > 0 {
		b.WriteString("\n\nYou can transfer the caller with the transfer_call tool. Tell the caller before you transfer. Destinations:")
		for _, d := range agent.Destinations {
			b.WriteString("\n- ")
			b.WriteString(d.Name)
			if t := oneLine(d.Trigger, 300); t != "" {
				b.WriteString(": ")
				b.WriteString(t)
			}
		}
	}
	b.WriteString("\n\nWhen the conversation is over, say goodbye, then call the end_call tool.")
	return strings.TrimSpace(b.String())
}

// greetingInstructions are the instructions of the first response: the
// agent's own (a response's instructions replace the session's for that
// response) and the greeting to say.
func greetingInstructions(agent Agent, from string) string {
	g := strings.TrimSpace(agent.Greeting)
	if g == "" {
		return ""
	}
	return instructions(agent, from) + "\n\nGreet the caller with: " + g
}

// tools are transfer_call (only when the agent has destinations; its enum
// is their names) and end_call.
func tools(agent Agent) []realtime.Tool {
	var out []realtime.Tool
	if len(agent.Destinations) > 0 {
		names := make([]string, 0, len(agent.Destinations))
		var desc strings.Builder
		desc.WriteString("Transfer the caller to a destination. Tell the caller you are transferring them before calling. Destinations: ")
		for i, d := range agent.Destinations {
			names = append(names, d.Name)
			if i > 0 {
				desc.WriteString("; ")
			}
			desc.WriteString(d.Name)
			if t := oneLine(d.Trigger, 300); t != "" {
				desc.WriteString(" (" + t + ")")
			}
		}
		params, _ := json.Marshal(map[string]any{
			"type": "object",
			"properties": map[string]any{
				"destination": map[string]any{"type": "string", "enum": names, "description": "Name of the destination."},
			},
			"required": []string{"destination"},
		})
		out = append(out, realtime.Tool{Type: "function", Name: toolTransfer, Description: desc.String() + ".", Parameters: params})
	}
	out = append(out, realtime.Tool{
		Type: "function", Name: toolEndCall,
		Description: "End the call. Say goodbye to the caller first.",
		Parameters:  json.RawMessage(`{"type":"object","properties":{}}`),
	})
	return out
}

// seedItems are the conversation items that restore a conversation on a
// new model connection: caller turns as user input_text, agent turns as
// assistant output_text, tool turns as the function_call item and its
// function_call_output, the most recent that fit in seedBudget, then note
// (e.g. that a transfer failed) as a system message when non-empty.
//
// At most seedMaxItems items in all: they are queued on the new
// connection's writer at once, and must leave room there for the held
// audio and the events that follow (modelOutQueue, modelOutReserve).
func seedItems(transcript []session.Turn, note string) []realtime.ItemCreate {
	start, total, n := len(transcript), 0, 0
	if note != "" {
		n++
	}
	for start > 0 && total+len(transcript[start-1].Text) <= seedBudget {
		k := 1
		if transcript[start-1].Tool != nil {
			k = 2
		}
		if n+k > seedMaxItems {
			break
		}
		n += k
		total += len(transcript[start-1].Text)
		start--
	}
	items := make([]realtime.ItemCreate, 0, len(transcript)-start+1)
	for _, t := range transcript[start:] {
		if t.Tool != nil {
			// The call and its output, as the model made and got them.
			items = append(items, realtime.FunctionCall(t.Tool.CallID, t.Tool.Name, t.Tool.Arguments),
				realtime.FunctionOutput(t.Tool.CallID, t.Tool.Output))
			continue
		}
		role := "user"
		if t.Role == session.RoleAgent {
			role = "assistant"
		}
		items = append(items, realtime.Message(role, t.Text))
	}
	if note != "" {
		items = append(items, realtime.Message("system", note))
	}
	return items
}

// seedMaxItems bounds the items of a seed (a long call has hundreds of
// short turns); the most recent are kept.
const seedMaxItems = 120

// oneLine makes outside text safe to put on one line of the instructions.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n]
	}
	return s
}

// maxNumberDigits bounds the digits of a caller number given to the model:
// E.164 has at most 15, a PBX extension or a national number with a prefix
// a few more.
const maxNumberDigits = 20

// callerNumber is the caller's number as the model may see it: the user
// part of a sip:, sips: or tel: From (or a bare number), when it is digits
// with an optional leading + (visual separators - . ( ) and spaces
// removed); otherwise "unknown". Nothing else of From reaches the model.
func callerNumber(from string) string {
	const unknown = "unknown"
	s := strings.TrimSpace(from)
	if i := strings.IndexByte(s, '<'); i >= 0 { // "Name" <sip:...>
		s = s[i+1:]
		if j := strings.IndexByte(s, '>'); j >= 0 {
			s = s[:j]
		}
	}
	if scheme, rest, ok := strings.Cut(s, ":"); ok {
		switch strings.ToLower(scheme) {
		case "sip", "sips", "tel":
			s = rest
		default:
			return unknown
		}
	}
	s, _, _ = strings.Cut(s, "@")
	s, _, _ = strings.Cut(s, ";") // user or tel: parameters
	s, _, _ = strings.Cut(s, ":") // a password
	if u, err := url.PathUnescape(s); err == nil {
		s = u
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			if b.Len() > maxNumberDigits {
				return unknown
			}
			b.WriteByte(c)
		case c == '+' && i == 0:
			b.WriteByte(c)
		case c == '-' || c == '.' || c == '(' || c == ')' || c == ' ':
		default:
			return unknown
		}
	}
	if n := b.String(); strings.TrimPrefix(n, "+") != "" {
		return n
	}
	return unknown
}
