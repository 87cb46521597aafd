package bridge

import (
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
)

const testSID = "MZ0123456789abcdef0123456789abcdef"

func twilioMedia(payload string) []byte {
	return []byte(`{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"` +
		payload + `"},"streamSid":"` + testSID + `"}`)
}

func TestTwilioToModel(t *testing.T) {
	payload := base64.StdEncoding.EncodeToString(make([]byte, 160))
	tests := map[string]struct {
		in    []byte
		ok    bool
		event string
		audio int
	}{
		"media":                 {in: twilioMedia(payload), ok: true, event: "media", audio: 160},
		"media fields shuffled": {in: []byte(`{"streamSid":"x","media":{"payload":"` + payload + `","track":"inbound"},"event":"media"}`), ok: true, event: "media", audio: 160},
		"injection refused":     {in: twilioMedia(`AAAA\",\"x\":\"y`), event: ""},
		"not base64":            {in: twilioMedia("AA-_"), event: "media"},
		"escaped payload":       {in: twilioMedia(`AA\/A`), event: ""}, // slow path
		"mark":                  {in: []byte(`{"event":"mark","streamSid":"x","mark":{"name":"m12"}}`), event: "mark"},
		"malformed":             {in: []byte(`{"event":"media","media":{"payload":`), event: ""},
		"not json":              {in: []byte(`hello`), event: ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			out, f, n, ok := twilioToModel(nil, tc.in)
			if ok != tc.ok || string(f.event) != tc.event {
				t.Fatalf("ok=%v event=%q, want %v %q", ok, f.event, tc.ok, tc.event)
			}
			if !ok {
				if len(out) != 0 {
					t.Fatalf("wrote %q on refusal", out)
				}
				return
			}
			if n != tc.audio {
				t.Errorf("audio = %d, want %d", n, tc.audio)
			}
			var ev struct{ Type, Audio string }
			if err := json.Unmarshal(out, &ev); err != nil {
				t.Fatalf("output is not JSON: %v: %s", err, out)
			}
			if ev.Type != "input_audio_buffer.append" || ev.Audio != payload {
				t.Errorf("got %+v", ev)
			}
		})
	}
}

func TestScanTwilioFields(t *testing.T) {
	f, ok := scanTwilio([]byte(`{"event":"dtmf","streamSid":"x","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"7"}}`))
	if !ok || string(f.event) != "dtmf" || string(f.digit) != "7" {
		t.Fatalf("dtmf: %q %q %v", f.event, f.digit, ok)
	}
	f, ok = scanTwilio([]byte(`{"event":"mark","sequenceNumber":"4","streamSid":"x","mark":{"name":"m42"}}`))
	if !ok || string(f.mark) != "m42" {
		t.Fatalf("mark: %q %v", f.mark, ok)
	}
	if seq, ok := parseMark(f.mark); !ok || seq != 42 {
		t.Fatalf("parseMark = %d %v", seq, ok)
	}
	for _, bad := range []string{"", "m", "x1", "m1a", "m99999999999999999999999"} {
		if _, ok := parseMark([]byte(bad)); ok {
			t.Errorf("parseMark(%q) accepted", bad)
		}
	}
	// start goes through encoding/json
	_, m, err := decodeTwilio([]byte(`{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{"token":"t.k"}},"streamSid":"MZ1"}`))
	if err != nil || m.Start == nil || m.Start.CallSID != "CA1" || m.Start.CustomParameters["token"] != "t.k" || m.Start.MediaFormat.SampleRate != 8000 {
		t.Fatalf("start: %+v %v", m, err)
	}
}

func TestModelToTwilio(t *testing.T) {
	sf := newStreamFrames(testSID)
	audio := make([]byte, 800)
	delta := base64.StdEncoding.EncodeToString(audio)
	msg := []byte(`{"type":"response.output_audio.delta","event_id":"e1","response_id":"r1","item_id":"item_9","output_index":0,"content_index":0,"delta":"` + delta + `"}`)
	var seq atomic.Uint64
	seq.Store(6)
	out, split, mark, item, n, ok := sf.modelToTwilio(nil, msg, &seq)
	if !ok || string(item) != "item_9" || n != 800 || mark != 7 {
		t.Fatalf("ok=%v item=%q n=%d mark=%d", ok, item, n, mark)
	}
	var media struct {
		Event, StreamSid string
		Media            struct{ Payload string }
	}
	if err := json.Unmarshal(out[:split], &media); err != nil || media.Event != "media" || media.StreamSid != testSID || media.Media.Payload != delta {
		t.Fatalf("media %s: %+v %v", out[:split], media, err)
	}
	var mk struct {
		Event, StreamSid string
		Mark             struct{ Name string }
	}
	if err := json.Unmarshal(out[split:], &mk); err != nil || mk.Event != "mark" || mk.Mark.Name != "m7" {
		t.Fatalf("mark %s: %+v %v", out[split:], mk, err)
	}

	for name, bad := range map[string]string{
		"other event":  `{"type":"response.done","response":{"id":"r1"}}`,
		"bad delta":    `{"type":"response.output_audio.delta","item_id":"i","delta":"AA\"}"}`,
		"not base64":   `{"type":"response.output_audio.delta","item_id":"i","delta":"AA_-"}`,
		"no item":      `{"type":"response.output_audio.delta","delta":"AAAA"}`,
		"escaped type": `{"type":"response.output_audio\u002edelta","item_id":"i","delta":"AAAA"}`,
	} {
		if _, _, _, _, _, ok := sf.modelToTwilio(nil, []byte(bad), &seq); ok {
			t.Errorf("%s: accepted", name)
		}
	}
	if seq.Load() != 7 {
		t.Errorf("refused events advanced the mark sequence to %d", seq.Load())
	}
}

func TestStreamFramesEscapeSID(t *testing.T) {
	sf := newStreamFrames(`MZ"evil`)
	var v map[string]any
	if err := json.Unmarshal(sf.clear, &v); err != nil || v["streamSid"] != `MZ"evil` {
		t.Fatalf("clear %s: %v", sf.clear, err)
	}
	if !strings.HasPrefix(string(sf.clear), `{"event":"clear"`) {
		t.Fatalf("clear = %s", sf.clear)
	}
}

func BenchmarkTwilioToModel(b *testing.B) {
	msg := twilioMedia(base64.StdEncoding.EncodeToString(make([]byte, 160)))
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		out, _, _, ok := twilioToModel(buf[:0], msg)
		if !ok {
			b.Fatal("refused")
		}
		buf = out
	}
}

func BenchmarkModelToTwilio(b *testing.B) {
	sf := newStreamFrames(testSID)
	delta := base64.StdEncoding.EncodeToString(make([]byte, 800))
	msg := []byte(`{"type":"response.output_audio.delta","event_id":"event_123","response_id":"resp_1","item_id":"item_1","output_index":0,"content_index":0,"delta":"` + delta + `"}`)
	var seq atomic.Uint64
	buf := make([]byte, 0, 2048)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		out, _, _, _, _, ok := sf.modelToTwilio(buf[:0], msg, &seq)
		if !ok {
			b.Fatal("refused")
		}
		buf = out
	}
}

// TestTwilioFieldsCoverTwilioMessage: scanTwilio knows every member of
// twilioMessage (see TestEventFieldsCoverServerEvent for why).
func TestTwilioFieldsCoverTwilioMessage(t *testing.T) {
	typ := reflect.TypeFor[twilioMessage]()
	for i := range typ.NumField() {
		name := typ.Field(i).Tag.Get("json")
		if twilioField([]byte(strings.ToLower(name))) == 0 {
			t.Errorf("scanTwilio does not know twilioMessage.%s (%q)", typ.Field(i).Name, name)
		}
	}
	f, ok := scanTwilio([]byte(`{"EVENT":"media","Media":{"PayLoad":"AAAA"},"streamsid":"MZ1"}`))
	if !ok || string(f.event) != "media" || string(f.payload) != "AAAA" {
		t.Errorf("keys in other cases, as encoding/json reads them: ok=%v %q %q", ok, f.event, f.payload)
	}
}
