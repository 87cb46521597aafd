package twiliotest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// Message is one message the server sent on the stream, decoded.
type Message struct {
	// Event is "media", "mark" or "clear" (or whatever an invalid message
	// claimed; empty when it had no readable event).
	Event     string
	StreamSID string
	// Payload is the decoded audio of a media message.
	Payload []byte
	// Mark is the name of a mark message.
	Mark string
	// At is when the message was received.
	At time.Time
	// Err is the protocol error the message raised, empty when it was valid.
	// Invalid messages are recorded but not acted on, as Twilio ignores them.
	Err string
}

// Twilio error codes for what a server may send wrong (twilio.md §1.2).
const (
	codeBinaryFrame    = "31950"
	codeInvalidMessage = "31951"
)

// Messages Twilio sends (twilio.md §1.1). Field order follows the docs.
type (
	connectedMsg struct {
		Event    string `json:"event"`
		Protocol string `json:"protocol"`
		Version  string `json:"version"`
	}
	startMsg struct {
		Event          string    `json:"event"`
		SequenceNumber string    `json:"sequenceNumber"`
		Start          startBody `json:"start"`
		StreamSid      string    `json:"streamSid"`
	}
	startBody struct {
		AccountSid       string            `json:"accountSid"`
		StreamSid        string            `json:"streamSid"`
		CallSid          string            `json:"callSid"`
		Tracks           []string          `json:"tracks"`
		MediaFormat      mediaFormat       `json:"mediaFormat"`
		CustomParameters map[string]string `json:"customParameters"`
	}
	mediaFormat struct {
		Encoding   string `json:"encoding"`
		SampleRate int    `json:"sampleRate"`
		Channels   int    `json:"channels"`
	}
	mediaMsg struct {
		Event          string    `json:"event"`
		SequenceNumber string    `json:"sequenceNumber"`
		Media          mediaBody `json:"media"`
		StreamSid      string    `json:"streamSid"`
	}
	mediaBody struct {
		Track     string `json:"track"`
		Chunk     string `json:"chunk"`
		Timestamp string `json:"timestamp"`
		Payload   string `json:"payload"`
	}
	dtmfMsg struct {
		Event          string   `json:"event"`
		StreamSid      string   `json:"streamSid"`
		SequenceNumber string   `json:"sequenceNumber"`
		DTMF           dtmfBody `json:"dtmf"`
	}
	dtmfBody struct {
		Track string `json:"track"`
		Digit string `json:"digit"`
	}
	markMsg struct {
		Event          string   `json:"event"`
		SequenceNumber string   `json:"sequenceNumber"`
		StreamSid      string   `json:"streamSid"`
		Mark           markBody `json:"mark"`
	}
	markBody struct {
		Name string `json:"name"`
	}
	stopMsg struct {
		Event          string   `json:"event"`
		SequenceNumber string   `json:"sequenceNumber"`
		Stop           stopBody `json:"stop"`
		StreamSid      string   `json:"streamSid"`
	}
	stopBody struct {
		AccountSid string `json:"accountSid"`
		CallSid    string `json:"callSid"`
	}
)

// seq formats a sequence number the way Twilio does: as a JSON string.
func seq2str(n int) string { return strconv.Itoa(n) }

// parseOutbound decodes and validates one text message from the server the
// way Twilio does (error 31951): a known event (media, mark, clear), exactly
// the documented fields with the documented types, and our streamSid.
func parseOutbound(data []byte, streamSID string) (Message, error) {
	var msg Message
	top, err := decodeObject(data)
	if err != nil {
		return msg, invalid("not a JSON object: %v", err)
	}
	raw, ok := top["event"]
	if !ok {
		return msg, invalid("missing field \"event\"")
	}
	if msg.Event, err = decodeString(raw); err != nil {
		return msg, invalid("field \"event\": %v", err)
	}
	if raw, ok := top["streamSid"]; ok {
		if msg.StreamSID, err = decodeString(raw); err != nil {
			return msg, invalid("%s: field \"streamSid\": %v", msg.Event, err)
		}
	}
	switch msg.Event {
	case "media":
		err = parseMedia(top, &msg)
	case "mark":
		err = parseMark(top, &msg)
	case "clear":
		err = checkFields("clear", top, "event", "streamSid")
	default:
		return msg, invalid("unknown event %q (want media, mark or clear)", msg.Event)
	}
	if err != nil {
		return msg, err
	}
	if msg.StreamSID != streamSID {
		return msg, invalid("%s: streamSid %q does not match the stream %q", msg.Event, msg.StreamSID, streamSID)
	}
	return msg, nil
}

func parseMedia(top map[string]json.RawMessage, msg *Message) error {
	if err := checkFields("media", top, "event", "streamSid", "media"); err != nil {
		return err
	}
	media, err := decodeObject(top["media"])
	if err != nil {
		return invalid("media: field \"media\": %v", err)
	}
	if err := checkFields("media.media", media, "payload"); err != nil {
		return err
	}
	payload, err := decodeString(media["payload"])
	if err != nil {
		return invalid("media: field \"media.payload\": %v", err)
	}
	if payload == "" {
		return invalid("media: empty media.payload")
	}
	if msg.Payload, err = base64.StdEncoding.DecodeString(payload); err != nil {
		return invalid("media: media.payload is not base64: %v", err)
	}
	return nil
}

func parseMark(top map[string]json.RawMessage, msg *Message) error {
	if err := checkFields("mark", top, "event", "streamSid", "mark"); err != nil {
		return err
	}
	mark, err := decodeObject(top["mark"])
	if err != nil {
		return invalid("mark: field \"mark\": %v", err)
	}
	if err := checkFields("mark.mark", mark, "name"); err != nil {
		return err
	}
	if msg.Mark, err = decodeString(mark["name"]); err != nil {
		return invalid("mark: field \"mark.name\": %v", err)
	}
	if msg.Mark == "" {
		return invalid("mark: empty mark.name")
	}
	return nil
}

// checkFields reports a missing or unexpected field of obj.
func checkFields(what string, obj map[string]json.RawMessage, want ...string) error {
	for _, k := range want {
		if _, ok := obj[k]; !ok {
			return invalid("%s: missing field %q", what, k)
		}
	}
	var extra []string
	for k := range obj {
		if !slices.Contains(want, k) {
			extra = append(extra, k)
		}
	}
	if len(extra) > 0 {
		slices.Sort(extra)
		return invalid("%s: unexpected fields %q", what, extra)
	}
	return nil
}

// decodeObject decodes a JSON object, refusing null and other types.
func decodeObject(raw json.RawMessage) (map[string]json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, fmt.Errorf("want a JSON object, got %.40q", raw)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	return obj, nil
}

// decodeString decodes a JSON string, refusing null and other types.
func decodeString(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '"' {
		return "", fmt.Errorf("want a JSON string, got %.40q", raw)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", err
	}
	return s, nil
}

// invalid builds a 31951 (Stream - Protocol - Invalid Message) error.
func invalid(format string, args ...any) error {
	return fmt.Errorf(codeInvalidMessage+" invalid message: "+format, args...)
}
