package realtime

import (
	"encoding/json"
	"fmt"
)

// Client event types (GA names).
const (
	TypeSessionUpdate    = "session.update"
	TypeInputAudioAppend = "input_audio_buffer.append"
	TypeItemCreate       = "conversation.item.create"
	TypeItemTruncate     = "conversation.item.truncate"
	TypeResponseCreate   = "response.create"
	TypeResponseCancel   = "response.cancel"
)

// Server event types (GA names) the bridge acts on.
const (
	TypeError                       = "error"
	TypeSessionCreated              = "session.created"
	TypeSessionUpdated              = "session.updated"
	TypeSpeechStarted               = "input_audio_buffer.speech_started"
	TypeSpeechStopped               = "input_audio_buffer.speech_stopped"
	TypeResponseCreated             = "response.created"
	TypeResponseDone                = "response.done"
	TypeOutputItemAdded             = "response.output_item.added"
	TypeOutputItemDone              = "response.output_item.done"
	TypeInputCommitted              = "input_audio_buffer.committed"
	TypeAudioDelta                  = "response.output_audio.delta"
	TypeAudioDone                   = "response.output_audio.done"
	TypeAudioTranscriptDone         = "response.output_audio_transcript.done"
	TypeFunctionCallArgumentsDone   = "response.function_call_arguments.done"
	TypeInputTranscriptionCompleted = "conversation.item.input_audio_transcription.completed"
	TypeItemTruncated               = "conversation.item.truncated"
)

// Error codes that name known, harmless races of the protocol.
const (
	CodeActiveResponse    = "conversation_already_has_active_response"
	CodeCancelNotActive   = "response_cancel_not_active"
	CodeSessionExpired    = "session_expired"
	CodeBetaShapeDisabled = "beta_api_shape_disabled"
)

// Values of session settings used by the bridge.
const (
	SessionTypeRealtime    = "realtime"
	FormatPCMU             = "audio/pcmu" // G.711 μ-law, 8 kHz: Twilio's format
	TranscriptionModel     = "gpt-4o-mini-transcribe"
	TurnDetectionServerVAD = "server_vad"
)

// SessionUpdate is the session.update client event.
type SessionUpdate struct {
	Type    string  `json:"type"`
	Session Session `json:"session"`
}

// Session is the GA session configuration (only the fields the bridge sets).
type Session struct {
	Type             string        `json:"type"` // "realtime"
	Instructions     string        `json:"instructions"`
	OutputModalities []string      `json:"output_modalities,omitempty"`
	Audio            *SessionAudio `json:"audio,omitempty"`
	Tools            []Tool        `json:"tools"`
	ToolChoice       string        `json:"tool_choice,omitempty"`
}

// SessionAudio holds the nested GA audio settings.
type SessionAudio struct {
	Input  AudioInput  `json:"input"`
	Output AudioOutput `json:"output"`
}

// AudioInput configures the caller's audio.
type AudioInput struct {
	Format        AudioFormat    `json:"format"`
	Transcription *Transcription `json:"transcription,omitempty"`
	TurnDetection *TurnDetection `json:"turn_detection,omitempty"`
}

// AudioOutput configures the model's audio.
type AudioOutput struct {
	Format AudioFormat `json:"format"`
	Voice  string      `json:"voice,omitempty"`
}

// AudioFormat is a GA format object, e.g. {"type":"audio/pcmu"}.
type AudioFormat struct {
	Type string `json:"type"`
	Rate int    `json:"rate,omitempty"`
}

// Transcription turns on input transcription.
type Transcription struct {
	Model    string `json:"model"`
	Language string `json:"language,omitempty"`
}

// TurnDetection is server VAD; zero numbers keep the model's defaults.
type TurnDetection struct {
	Type              string  `json:"type"`
	Threshold         float64 `json:"threshold,omitempty"`
	PrefixPaddingMs   int     `json:"prefix_padding_ms,omitempty"`
	SilenceDurationMs int     `json:"silence_duration_ms,omitempty"`
	CreateResponse    bool    `json:"create_response"`
	InterruptResponse bool    `json:"interrupt_response"`
}

// Tool is a GA (flat) function tool.
type Tool struct {
	Type        string          `json:"type"` // "function"
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters"`
}

// ResponseCreate is the response.create client event.
type ResponseCreate struct {
	Type     string          `json:"type"`
	Response *ResponseParams `json:"response,omitempty"`
}

// ResponseParams overrides settings for one response.
type ResponseParams struct {
	Instructions string `json:"instructions,omitempty"`
}

// ItemCreate is the conversation.item.create client event.
type ItemCreate struct {
	Type string `json:"type"`
	Item Item   `json:"item"`
}

// Item is a conversation item: a message or a function call output.
type Item struct {
	Type    string    `json:"type"` // "message", "function_call_output"
	Role    string    `json:"role,omitempty"`
	Content []Content `json:"content,omitempty"`
	CallID  string    `json:"call_id,omitempty"`
	Output  string    `json:"output,omitempty"`
	// Name and Arguments are a function_call item's.
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments,omitempty"`
}

// Content is one part of a message.
type Content struct {
	Type string `json:"type"` // "input_text" (user, system), "output_text" (assistant)
	Text string `json:"text"`
}

// ItemTruncate is the conversation.item.truncate client event.
type ItemTruncate struct {
	Type         string `json:"type"`
	ItemID       string `json:"item_id"`
	ContentIndex int    `json:"content_index"`
	AudioEndMs   int    `json:"audio_end_ms"`
}

// Message returns a conversation.item.create of a text message. role is
// "user", "system" or "assistant"; assistant text is output_text in GA.
func Message(role, text string) ItemCreate {
	typ := "input_text"
	if role == "assistant" {
		typ = "output_text"
	}
	return ItemCreate{Type: TypeItemCreate, Item: Item{Type: "message", Role: role, Content: []Content{{Type: typ, Text: text}}}}
}

// FunctionOutput returns the conversation.item.create answering a tool call.
func FunctionOutput(callID, output string) ItemCreate {
	return ItemCreate{Type: TypeItemCreate, Item: Item{Type: "function_call_output", CallID: callID, Output: output}}
}

// FunctionCall returns the conversation.item.create of a function_call
// item (a re-seeded call of the model's).
func FunctionCall(callID, name, arguments string) ItemCreate {
	return ItemCreate{Type: TypeItemCreate, Item: Item{Type: "function_call", CallID: callID, Name: name, Arguments: arguments}}
}

// Truncate returns the conversation.item.truncate of an assistant item.
func Truncate(itemID string, audioEndMs int) ItemTruncate {
	return ItemTruncate{Type: TypeItemTruncate, ItemID: itemID, AudioEndMs: audioEndMs}
}

// CreateResponse returns a response.create, with instructions when non-empty.
func CreateResponse(instructions string) ResponseCreate {
	r := ResponseCreate{Type: TypeResponseCreate}
	if instructions != "" {
		r.Response = &ResponseParams{Instructions: instructions}
	}
	return r
}

// ServerEvent is the union of the server events the bridge reads off the
// slow path; fields absent from an event stay zero.
type ServerEvent struct {
	Type         string          `json:"type"`
	EventID      string          `json:"event_id,omitempty"`
	ResponseID   string          `json:"response_id,omitempty"`
	ItemID       string          `json:"item_id,omitempty"`
	CallID       string          `json:"call_id,omitempty"`
	Name         string          `json:"name,omitempty"`
	Arguments    string          `json:"arguments,omitempty"`
	Transcript   string          `json:"transcript,omitempty"`
	Delta        string          `json:"delta,omitempty"`
	AudioStartMs int             `json:"audio_start_ms,omitempty"`
	AudioEndMs   int             `json:"audio_end_ms,omitempty"`
	Error        *Error          `json:"error,omitempty"`
	Item         *ServerItem     `json:"item,omitempty"`
	Response     *ServerResponse `json:"response,omitempty"`
	Session      *SessionInfo    `json:"session,omitempty"`
}

// Error is the payload of an error event. Code may be absent.
type Error struct {
	Type    string `json:"type"`
	Code    string `json:"code,omitempty"`
	Message string `json:"message"`
	Param   string `json:"param,omitempty"`
	EventID string `json:"event_id,omitempty"`
}

// ServerItem is the item of response.output_item.*.
type ServerItem struct {
	ID        string `json:"id"`
	Type      string `json:"type"`
	Status    string `json:"status,omitempty"`
	Role      string `json:"role,omitempty"`
	CallID    string `json:"call_id,omitempty"`
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments,omitempty"`
}

// ServerResponse is the response of response.created and response.done;
// Output is read for its function_call items. Usage is response.done's
// token usage, nil when absent (see Usage for how it is read).
type ServerResponse struct {
	ID     string       `json:"id"`
	Status string       `json:"status"`
	Output []ServerItem `json:"output,omitempty"`
	Usage  *Usage       `json:"usage,omitempty"`
}

// SessionInfo is the part of session.created/updated the bridge reads.
type SessionInfo struct {
	ID        string `json:"id"`
	Model     string `json:"model"`
	ExpiresAt int64  `json:"expires_at"`
}

// ParseEvent decodes a server event.
func ParseEvent(b []byte) (*ServerEvent, error) {
	ev := new(ServerEvent)
	if err := json.Unmarshal(b, ev); err != nil {
		return nil, fmt.Errorf("realtime: decode server event: %w", err)
	}
	if ev.Type == "" {
		return nil, fmt.Errorf("realtime: decode server event: no type")
	}
	return ev, nil
}
