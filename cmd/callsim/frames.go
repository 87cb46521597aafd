package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strconv"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/twiliotest"
)

// Every caller frame carries a 6-byte header in its first audio bytes, so
// that its echo can be recognised wherever it shows up (the echo model, the
// caller's reader) without any table: a magic byte, the call's number and
// the frame's sequence number. 6 bytes are exactly the first 8 base64
// characters, so a frame is a pre-encoded template with 8 characters
// patched, and reading a header decodes 8 characters.
const (
	frameBytes  = twiliotest.FrameBytes // 20 ms of 8 kHz μ-law
	headerBytes = 6
	headerChars = 8
	// magicCaller starts the caller's frames; magicAgent the audio the echo
	// model says on its own (greeting, replies), which is not an echo.
	magicCaller byte = 0xA5
	magicAgent  byte = 0x5A
	maxSeq           = 1<<24 - 1
)

// frameHeader is what the first audio bytes of a frame say.
type frameHeader struct {
	magic byte
	call  uint16
	seq   uint32
}

// putHeader writes the base64 of h into dst[:headerChars].
func putHeader(dst []byte, h frameHeader) {
	b := [headerBytes]byte{h.magic, byte(h.call >> 8), byte(h.call), byte(h.seq >> 16), byte(h.seq >> 8), byte(h.seq)}
	base64.StdEncoding.Encode(dst[:headerChars], b[:])
}

// readHeader decodes the header of a base64 payload.
func readHeader(payload []byte) (frameHeader, bool) {
	if len(payload) < headerChars {
		return frameHeader{}, false
	}
	var b [headerBytes]byte
	if n, err := base64.StdEncoding.Decode(b[:], payload[:headerChars]); err != nil || n != headerBytes {
		return frameHeader{}, false
	}
	h := frameHeader{magic: b[0], call: uint16(b[1])<<8 | uint16(b[2]), seq: uint32(b[3])<<16 | uint32(b[4])<<8 | uint32(b[5])}
	return h, h.magic == magicCaller || h.magic == magicAgent
}

// audioTemplates are the base64 payloads of one speech and one silence
// frame, their first headerChars characters to be patched.
type audioTemplates struct {
	speech, silence []byte
}

func newAudioTemplates() audioTemplates {
	enc := func(b []byte) []byte { return []byte(base64.StdEncoding.EncodeToString(b)) }
	return audioTemplates{speech: enc(realtimetest.Tone(frameBytes)), silence: enc(realtimetest.Silence(frameBytes))}
}

// agentAudio returns the base64 of n bytes of tone headed as the model's own
// audio (greeting and replies of the echo model).
func agentAudio(n int) []byte {
	b := []byte(base64.StdEncoding.EncodeToString(realtimetest.Tone(n)))
	putHeader(b, frameHeader{magic: magicAgent})
	return b
}

// twilioFrames renders what Twilio sends on one stream, in its documented
// shapes (field order as in the docs), into a reused buffer. Owned by the
// writer of the stream (the pacer, after set-up).
type twilioFrames struct {
	streamSID string
	seq       int // sequenceNumber of the last message (start is 1)
	buf       []byte
}

// connected is Twilio's first message; it has no sequence number.
func connectedMessage() []byte {
	return []byte(`{"event":"connected","protocol":"Call","version":"1.0.0"}`)
}

// start renders the start message.
func (f *twilioFrames) start(accountSID, callSID string, params map[string]string) []byte {
	f.seq++
	type mediaFormat struct {
		Encoding   string `json:"encoding"`
		SampleRate int    `json:"sampleRate"`
		Channels   int    `json:"channels"`
	}
	type body struct {
		AccountSid       string            `json:"accountSid"`
		StreamSid        string            `json:"streamSid"`
		CallSid          string            `json:"callSid"`
		Tracks           []string          `json:"tracks"`
		MediaFormat      mediaFormat       `json:"mediaFormat"`
		CustomParameters map[string]string `json:"customParameters"`
	}
	b, _ := json.Marshal(struct {
		Event          string `json:"event"`
		SequenceNumber string `json:"sequenceNumber"`
		Start          body   `json:"start"`
		StreamSid      string `json:"streamSid"`
	}{"start", strconv.Itoa(f.seq), body{accountSID, f.streamSID, callSID, []string{"inbound"},
		mediaFormat{"audio/x-mulaw", 8000, 1}, params}, f.streamSID})
	return b
}

// media renders media chunk n (from 1) whose payload is the template tmpl
// with header h.
func (f *twilioFrames) media(chunk int, tmpl []byte, h frameHeader) []byte {
	f.seq++
	b := append(f.buf[:0], `{"event":"media","sequenceNumber":"`...)
	b = strconv.AppendInt(b, int64(f.seq), 10)
	b = append(b, `","media":{"track":"inbound","chunk":"`...)
	b = strconv.AppendInt(b, int64(chunk), 10)
	b = append(b, `","timestamp":"`...)
	b = strconv.AppendInt(b, int64(chunk-1)*20, 10)
	b = append(b, `","payload":"`...)
	at := len(b)
	b = append(b, tmpl...)
	putHeader(b[at:], h)
	b = append(b, `"},"streamSid":"`...)
	b = append(b, f.streamSID...)
	b = append(b, `"}`...)
	f.buf = b
	return b
}

// mark renders the echo of mark name.
func (f *twilioFrames) mark(name []byte) []byte {
	f.seq++
	b := append(f.buf[:0], `{"event":"mark","sequenceNumber":"`...)
	b = strconv.AppendInt(b, int64(f.seq), 10)
	b = append(b, `","streamSid":"`...)
	b = append(b, f.streamSID...)
	b = append(b, `","mark":{"name":"`...)
	b = append(b, name...) // raw as received: still valid JSON string content
	b = append(b, `"}}`...)
	f.buf = b
	return b
}

// dtmf renders a key press.
func (f *twilioFrames) dtmf(digit byte) []byte {
	f.seq++
	b := append(f.buf[:0], `{"event":"dtmf","streamSid":"`...)
	b = append(b, f.streamSID...)
	b = append(b, `","sequenceNumber":"`...)
	b = strconv.AppendInt(b, int64(f.seq), 10)
	b = append(b, `","dtmf":{"track":"inbound_track","digit":"`...)
	b = append(b, digit)
	b = append(b, `"}}`...)
	f.buf = b
	return b
}

// stop renders the end of the stream.
func (f *twilioFrames) stop(accountSID, callSID string) []byte {
	f.seq++
	b := append(f.buf[:0], `{"event":"stop","sequenceNumber":"`...)
	b = strconv.AppendInt(b, int64(f.seq), 10)
	b = append(b, `","stop":{"accountSid":"`...)
	b = append(b, accountSID...)
	b = append(b, `","callSid":"`...)
	b = append(b, callSID...)
	b = append(b, `"},"streamSid":"`...)
	b = append(b, f.streamSID...)
	b = append(b, `"}`...)
	f.buf = b
	return b
}

// outbound is one message the bridge sent on a stream, read on the fast
// path: the slices point into the message.
type outbound struct {
	event   []byte // media, mark, clear, or whatever it said
	payload []byte // media
	name    []byte // mark
}

var (
	keyEvent   = []byte(`"event":"`)
	keyPayload = []byte(`"payload":"`)
	keyName    = []byte(`"name":"`)
)

// parseOutbound reads the event, media payload and mark name of a message
// without decoding JSON: the load tool must stay cheaper than what it
// measures. It looks for the keys' first occurrence, which is right for the
// shapes Twilio documents (a payload or name never contains a quote).
func parseOutbound(msg []byte) outbound {
	var o outbound
	o.event = stringAfter(msg, keyEvent)
	switch string(o.event) {
	case "media":
		o.payload = stringAfter(msg, keyPayload)
	case "mark":
		o.name = stringAfter(msg, keyName)
	}
	return o
}

// stringAfter returns the raw string value following key, or nil.
func stringAfter(msg, key []byte) []byte {
	i := bytes.Index(msg, key)
	if i < 0 {
		return nil
	}
	v := msg[i+len(key):]
	j := bytes.IndexByte(v, '"')
	if j < 0 {
		return nil
	}
	return v[:j]
}

// decodedLen is the number of audio bytes of a padded base64 payload.
func decodedLen(b64 []byte) int {
	n := len(b64) / 4 * 3
	if len(b64) >= 2 && b64[len(b64)-1] == '=' {
		n--
		if b64[len(b64)-2] == '=' {
			n--
		}
	}
	return n
}
