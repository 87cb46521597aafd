package bridge

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"sync/atomic"
	"testing"

	"github.com/vivi/bridge/bridge/realtime"
)

// Inputs on which the fast paths once disagreed with encoding/json, or
// might: keys that fold onto a needed key (ASCII case, the Kelvin sign K
// folding to k, the long s folding to s), repeats, values of the wrong
// type, and invalid JSON where only the skipped parts are wrong. They seed
// the fuzz targets and TestFastPathsAgreeWithEncodingJSON.
var twilioHostile = []string{
	`{"event":"media","media":{"payload":"AAAA"},"EVENT":"stop"}`,
	`{"Event":"stop","event":"media","media":{"payload":"AAAA"}}`,
	`{"event":"media","media":{"payload":"AAAA","PAYLOAD":"BBBB"}}`,
	`{"event":"media","media":{"payload":"AAAA"},"Media":{"payload":"BBBB"}}`,
	`{"event":"mark","mark":{"name":"m1"},"mar` + "\u212a" + `":{"name":"m2"}}`,
	`{"event":"mark","mark":{"name":"m1","nam` + "\u0065\u0301" + `":"m2"}}`,
	`{"event":"media","media":{"payload":"AAAA"},"` + "\u017f" + `treamSid":5}`,
	`{"event":"media","media":{"payload":"AAAA"},"` + "\u017f" + `tart":{}}`,
	`{"event":"media","media":{"payload":"AAAA"},"streamSid":5}`,
	`{"event":"media","media":{"payload":"AAAA"},"start":5}`,
	`{"event":"media","media":{"payload":"AAAA"},"mark":"m1"}`,
	`{"event":"media","media":{"payload":"AAAA"},"dtmf":[]}`,
	`{"event":"media","media":{"payload":"AAAA"},"x":tru}`,
	`{"event":"media","media":{"payload":"AAAA"},"x":01}`,
	`{"event":"media","media":{"payload":"AAAA"},"x":"\q"}`,
	`{"event":"media","media":{"payload":"AAAA"},"x":"\u12"}`,
	`{"event":"media","media":{"payload":"AAAA"},"x":1.}`,
	`{"event":"media","media":{"payload":"AAAA"},"x":-}`,
	`{"event":"media","media":{"payload":"AAAA"},"x":.5}`,
	`{"event":"media","media":{"payload":"AAAA"},"x":1e}`,
	`{"event":"media","media":{"payload":"AAAA"},"x":[1,]}`,
	`{"event":"media","media":{"payload":"AAAA"},"x":[1:2]}`,
	`{"event":"media","media":{"payload":"AAAA"},"x":{"a"}}`,
	`{"event":"media","media":{"payload":"AAAA"},"x":{"a":1,}}`,
	`{"event":"media","media":{"payload":"AAAA"},"x":{1:2}}`,
	`{"event":"media","media":{"payload":"AAAA","track":nul}}`,
	`{"event":"media","media":{"payload":"AAAA"},"x":truefalse}`,
	`{"event":"dtmf","dtmf":{"digit":"` + "\xff" + `"}}`,
	`{"event":"mark","mark":{"name":"m1"}}`,
	`{"event":"media","streamSid":null,"start":null,"media":{"payload":"AAAA","track":[{"a":[]},-0.5e+3,true,false,null]}}`,
}

var modelHostile = []string{
	`{"type":"response.output_audio.delta","item_id":"i","delta":"AAAA","TYPE":"error"}`,
	`{"Type":"error","type":"response.output_audio.delta","item_id":"i","delta":"AAAA"}`,
	`{"type":"response.output_audio.delta","item_id":"i","delta":"AAAA","Delta":"BBBB"}`,
	`{"type":"response.output_audio.delta","item_id":"i","Item_ID":"j","delta":"AAAA"}`,
	`{"type":"response.output_audio.delta","item_id":"i","delta":"AAAA","re` + "\u017f" + `ponse_id":5}`,
	`{"type":"response.output_audio.delta","item_id":"i","delta":"AAAA","audio_end_ms":"5"}`,
	`{"type":"response.output_audio.delta","item_id":"i","delta":"AAAA","audio_end_ms":1.5}`,
	`{"type":"response.output_audio.delta","item_id":"i","delta":"AAAA","audio_end_ms":99999999999999999999}`,
	`{"type":"response.output_audio.delta","item_id":"i","delta":"AAAA","error":5}`,
	`{"type":"response.output_audio.delta","item_id":"i","delta":"AAAA","name":5}`,
	`{"type":"response.output_audio.delta","item_id":"i","delta":"AAAA","output_index":tru}`,
	`{"type":"response.output_audio.delta","item_id":"i","delta":"AAAA","output_index":01}`,
	`{"type":"response.output_audio.delta","item_id":"i","delta":"AAAA","event_id":"\q"}`,
	`{"type":"response.output_audio.delta","item_id":"","delta":"AAAA"}`,
	`{"type":"response.output_audio.delta","item_id":"` + "\xc3" + `","delta":"AAAA"}`,
	`{"type":"response.output_audio.delta","item_id":"i","delta":"AAAA","event_id":null,"audio_end_ms":-12,"item":null,"output_index":0}`,
}

// checkTwilioAgrees fails t when the Twilio fast path reads msg at all but
// the slow path (encoding/json into twilioMessage) would read it otherwise.
func checkTwilioAgrees(t *testing.T, msg []byte) {
	t.Helper()
	f, scanned := scanTwilio(msg)
	out, _, n, relayed := twilioToModel(nil, msg)
	if !scanned {
		if relayed {
			t.Fatalf("relayed %q without scanning it", msg)
		}
		return
	}
	slow, _, err := decodeTwilio(msg)
	if err != nil {
		t.Fatalf("fast path read %q, which encoding/json rejects: %v", msg, err)
	}
	if !bytes.Equal(f.event, slow.event) || !bytes.Equal(f.payload, slow.payload) ||
		!bytes.Equal(f.mark, slow.mark) || !bytes.Equal(f.digit, slow.digit) {
		t.Fatalf("%q: fast path read event=%q payload=%q mark=%q digit=%q, encoding/json %q %q %q %q",
			msg, f.event, f.payload, f.mark, f.digit, slow.event, slow.payload, slow.mark, slow.digit)
	}
	if !relayed {
		return
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
	if string(slow.event) != "media" || ev.Type != "input_audio_buffer.append" || ev.Audio != string(slow.payload) {
		t.Fatalf("relayed %q as %q (encoding/json: event %q payload %q)", msg, out, slow.event, slow.payload)
	}
	if n < 0 || n > len(ev.Audio) {
		t.Fatalf("audio length %d for a %d-byte payload", n, len(ev.Audio))
	}
}

// checkModelAgrees fails t when the model fast path relays msg but the slow
// path (realtime.ParseEvent, then parseModel's checks) would not, or would
// relay something else.
func checkModelAgrees(t *testing.T, sf *streamFrames, msg []byte) {
	t.Helper()
	var seq atomic.Uint64
	out, split, mark, item, _, ok := sf.modelToTwilio(nil, msg, &seq)
	if !ok {
		return
	}
	full, err := realtime.ParseEvent(msg)
	if err != nil {
		t.Fatalf("fast path relayed %q, which encoding/json rejects: %v", msg, err)
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
	if full.Type != realtime.TypeAudioDelta || full.ItemID == "" || media.Event != "media" || media.Media.Payload != full.Delta ||
		!bytes.Equal(item, []byte(full.ItemID)) || m.Event != "mark" || mark != 1 || media.StreamSID != testSID {
		t.Fatalf("relayed %q as %q (encoding/json: %+v)", msg, out, full)
	}
}

// TestFastPathsAgreeWithEncodingJSON: on each hostile input, a fast path
// either defers or reads exactly what encoding/json reads.
func TestFastPathsAgreeWithEncodingJSON(t *testing.T) {
	for _, msg := range twilioHostile {
		checkTwilioAgrees(t, []byte(msg))
	}
	sf := newStreamFrames(testSID)
	for _, msg := range modelHostile {
		checkModelAgrees(t, &sf, []byte(msg))
	}
}

// FuzzTwilioToModel: the caller-audio fast path never panics, and whatever
// it reads it reads as encoding/json does; whenever it relays a frame, the
// event it builds is valid JSON carrying exactly the payload the slow path
// finds.
func FuzzTwilioToModel(f *testing.F) {
	f.Add([]byte(`{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"/////w=="},"streamSid":"MZ1"}`))
	f.Add([]byte(`{"event":"media","media":{"payload":"ab\"c"}}`))
	f.Add([]byte(`{"event":"mark","streamSid":"MZ1","mark":{"name":"7"}}`))
	f.Add([]byte(`{"event":"media","media":{"payload":"AAAA","payload":"BBBB"}}`))
	f.Add([]byte(`{"event":"start","start":{"callSid":"CA1","customParameters":{"token":"x"}}}`))
	for _, msg := range twilioHostile {
		f.Add([]byte(msg))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		checkTwilioAgrees(t, msg)
	})
}

// FuzzModelToTwilio: the model-audio fast path never panics, and whenever
// it relays a delta, it builds a Twilio media message carrying exactly the
// delta that the slow path finds, then a mark, both valid JSON for the stream.
func FuzzModelToTwilio(f *testing.F) {
	f.Add([]byte(`{"type":"response.output_audio.delta","event_id":"e1","response_id":"r","item_id":"item_1","output_index":0,"content_index":0,"delta":"/////w=="}`))
	f.Add([]byte(`{"type":"response.output_audio.delta","item_id":"i","delta":"a\"}"}`))
	f.Add([]byte(`{"type":"response.done"}`))
	f.Add([]byte(`{"type":"response.output_audio.delta","type":"error","item_id":"i","delta":"AAAA"}`))
	for _, msg := range modelHostile {
		f.Add([]byte(msg))
	}
	sf := newStreamFrames(testSID)
	f.Fuzz(func(t *testing.T, msg []byte) {
		checkModelAgrees(t, &sf, msg)
	})
}
