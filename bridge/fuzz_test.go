package bridge

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"sync/atomic"
	"testing"
)

// FuzzTwilioToModel: the caller-audio fast path never panics, and whenever
// it relays a frame, the event it builds is valid JSON carrying exactly the
// payload that a full JSON decode of the Twilio message finds.
func FuzzTwilioToModel(f *testing.F) {
	f.Add([]byte(`{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"/////w=="},"streamSid":"MZ1"}`))
	f.Add([]byte(`{"event":"media","media":{"payload":"ab\"c"}}`))
	f.Add([]byte(`{"event":"mark","streamSid":"MZ1","mark":{"name":"7"}}`))
	f.Add([]byte(`{"event":"media","media":{"payload":"AAAA","payload":"BBBB"}}`))
	f.Add([]byte(`{"event":"start","start":{"callSid":"CA1","customParameters":{"token":"x"}}}`))
	f.Fuzz(func(t *testing.T, msg []byte) {
		out, _, n, ok := twilioToModel(nil, msg)
		if !ok {
			return
		}
		var full struct {
			Event string `json:"event"`
			Media struct {
				Payload string `json:"payload"`
			} `json:"media"`
		}
		var ev struct {
			Type  string `json:"type"`
			Audio string `json:"audio"`
		}
		if err := json.Unmarshal(out, &ev); err != nil {
			t.Fatalf("built invalid JSON %q from %q", out, msg)
		}
		if _, err := base64.StdEncoding.DecodeString(ev.Audio); err != nil {
			t.Fatalf("relayed a payload that is not base64: %q", ev.Audio)
		}
		// The scanner does not check the grammar of the values it skips;
		// where encoding/json reads the message, both must agree.
		if err := json.Unmarshal(msg, &full); err != nil {
			return
		}
		if full.Event != "media" || ev.Type != "input_audio_buffer.append" || ev.Audio != full.Media.Payload {
			t.Fatalf("relayed %q as %q (full decode: %+v)", msg, out, full)
		}
		if n < 0 || n > len(ev.Audio) {
			t.Fatalf("audio length %d for a %d-byte payload", n, len(ev.Audio))
		}
	})
}

// FuzzModelToTwilio: the model-audio fast path never panics, and whenever
// it relays a delta, it builds a Twilio media message carrying exactly the
// delta that a full decode finds, then a mark, both valid JSON for the stream.
func FuzzModelToTwilio(f *testing.F) {
	f.Add([]byte(`{"type":"response.output_audio.delta","event_id":"e1","response_id":"r","item_id":"item_1","output_index":0,"content_index":0,"delta":"/////w=="}`))
	f.Add([]byte(`{"type":"response.output_audio.delta","item_id":"i","delta":"a\"}"}`))
	f.Add([]byte(`{"type":"response.done"}`))
	f.Add([]byte(`{"type":"response.output_audio.delta","type":"error","item_id":"i","delta":"AAAA"}`))
	sf := newStreamFrames("MZ0123456789abcdef0123456789abcdef")
	f.Fuzz(func(t *testing.T, msg []byte) {
		var seq atomic.Uint64
		out, split, mark, item, _, ok := sf.modelToTwilio(nil, msg, &seq)
		if !ok {
			return
		}
		var full struct {
			Type   string `json:"type"`
			ItemID string `json:"item_id"`
			Delta  string `json:"delta"`
		}
		var media struct {
			Event     string `json:"event"`
			StreamSID string `json:"streamSid"`
			Media     struct {
				Payload string `json:"payload"`
			} `json:"media"`
		}
		var m struct {
			Event string `json:"event"`
			Mark  struct {
				Name string `json:"name"`
			} `json:"mark"`
		}
		if err := json.Unmarshal(out[:split], &media); err != nil {
			t.Fatalf("invalid media JSON %q", out[:split])
		}
		if err := json.Unmarshal(out[split:], &m); err != nil {
			t.Fatalf("invalid mark JSON %q", out[split:])
		}
		if _, err := base64.StdEncoding.DecodeString(media.Media.Payload); err != nil {
			t.Fatalf("relayed a delta that is not base64: %q", media.Media.Payload)
		}
		if err := json.Unmarshal(msg, &full); err != nil {
			return // see FuzzTwilioToModel
		}
		if full.Type != "response.output_audio.delta" || media.Event != "media" || media.Media.Payload != full.Delta ||
			!bytes.Equal(item, []byte(full.ItemID)) || m.Event != "mark" || mark != 1 || media.StreamSID != "MZ0123456789abcdef0123456789abcdef" {
			t.Fatalf("relayed %q as %q (full decode %+v)", msg, out, full)
		}
	})
}
