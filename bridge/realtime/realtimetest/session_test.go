package realtimetest

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// gaUpdate is the session.update the bridge sends: μ-law both ways.
func gaUpdate() map[string]any {
	return map[string]any{"type": "session.update", "session": map[string]any{
		"type":         "realtime",
		"model":        "gpt-realtime",
		"instructions": "You are a phone agent.",
		"audio": map[string]any{
			"input": map[string]any{
				"format":         map[string]any{"type": "audio/pcmu"},
				"turn_detection": map[string]any{"type": "server_vad", "silence_duration_ms": 700},
			},
			"output": map[string]any{"format": map[string]any{"type": "audio/pcmu"}, "voice": "marin"},
		},
		"tools": []any{map[string]any{"type": "function", "name": "transfer_call"}},
	}}
}

func TestSessionCreatedThenUpdated(t *testing.T) {
	s := newServer(t, Options{})
	cl, c := dial(t, s)

	created := cl.expect("session.created")[0].obj("session")
	if created.str("type") != "realtime" || created.str("object") != "realtime.session" ||
		!strings.HasPrefix(created.str("id"), "sess_") || created.str("model") != "gpt-realtime" {
		t.Errorf("session.created session = %v", created)
	}
	if exp := int64(created["expires_at"].(float64)); exp < time.Now().Add(59*time.Minute).Unix() {
		t.Errorf("expires_at = %d, want about an hour from now", exp)
	}
	for _, dir := range []string{"input", "output"} {
		f := created.obj("audio").obj(dir).obj("format")
		if f.str("type") != "audio/pcm" || f.num("rate") != 24000 {
			t.Errorf("default %s format = %v, want audio/pcm 24000", dir, f)
		}
	}

	cl.send(gaUpdate())
	updated := cl.expect("session.updated")[0].obj("session")
	in, out := updated.obj("audio").obj("input"), updated.obj("audio").obj("output")
	if in.obj("format").str("type") != "audio/pcmu" || out.obj("format").str("type") != "audio/pcmu" {
		t.Errorf("formats = %v / %v, want audio/pcmu", in["format"], out["format"])
	}
	td := in.obj("turn_detection")
	if td.num("silence_duration_ms") != 700 || td.num("prefix_padding_ms") != 300 || td["interrupt_response"] != true {
		t.Errorf("turn_detection = %v, want silence 700 with defaults filled", td)
	}
	if out.str("voice") != "marin" || updated.str("instructions") != "You are a phone agent." ||
		updated.str("id") != created.str("id") {
		t.Errorf("session.updated = %v", updated)
	}

	var eff map[string]any
	if err := json.Unmarshal(c.Session(), &eff); err != nil {
		t.Fatal(err)
	}
	if event(eff).obj("audio").obj("output").obj("format").str("type") != "audio/pcmu" {
		t.Errorf("Session() = %s", c.Session())
	}
	ev, err := c.WaitEvent(ctx(t), "session.update", 1)
	if err != nil || !strings.Contains(string(ev.Raw), "audio/pcmu") {
		t.Errorf("WaitEvent session.update = %s, %v", ev.Raw, err)
	}
}

func TestSessionUpdateRejectsNonGAShapes(t *testing.T) {
	tests := map[string]struct {
		session any
		code    string
		param   string
	}{
		"beta input_audio_format": {
			session: map[string]any{"type": "realtime", "input_audio_format": "g711_ulaw"},
			code:    "unknown_parameter", param: "session.input_audio_format",
		},
		"beta modalities": {
			session: map[string]any{"type": "realtime", "modalities": []any{"audio", "text"}},
			code:    "unknown_parameter", param: "session.modalities",
		},
		"beta session without type": {
			session: map[string]any{"voice": "alloy", "output_audio_format": "g711_ulaw"},
			code:    "unknown_parameter",
		},
		"missing type": {
			session: map[string]any{"instructions": "hi"},
			code:    "missing_required_parameter", param: "session.type",
		},
		"transcription type": {
			session: map[string]any{"type": "transcription"},
			code:    "invalid_value", param: "session.type",
		},
		"format as string": {
			session: map[string]any{"type": "realtime", "audio": map[string]any{
				"input": map[string]any{"format": "g711_ulaw"}}},
			code: "invalid_type", param: "session.audio.input.format",
		},
		"unknown format": {
			session: map[string]any{"type": "realtime", "audio": map[string]any{
				"output": map[string]any{"format": map[string]any{"type": "g711_ulaw"}}}},
			code: "invalid_value", param: "session.audio.output.format.type",
		},
		"pcm at 8 kHz": {
			session: map[string]any{"type": "realtime", "audio": map[string]any{
				"input": map[string]any{"format": map[string]any{"type": "audio/pcm", "rate": 8000}}}},
			code: "invalid_value", param: "session.audio.input.format.rate",
		},
		"no session": {session: nil, code: "missing_required_parameter", param: "session"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			s := newServer(t, Options{})
			cl, c := dial(t, s)
			cl.expect("session.created")
			before := string(c.Session())
			cl.send(map[string]any{"type": "session.update", "event_id": "evt_1", "session": tt.session})
			e := cl.expectError(tt.code)
			if e.str("type") != "invalid_request_error" || e.str("event_id") != "evt_1" {
				t.Errorf("error = %v, want invalid_request_error echoing evt_1", e)
			}
			if tt.param != "" && e.str("param") != tt.param {
				t.Errorf("param = %q, want %q", e.str("param"), tt.param)
			}
			if after := string(c.Session()); after != before {
				t.Errorf("session changed by a rejected update:\n%s\n%s", before, after)
			}
		})
	}
}

func TestSessionUpdateTurnDetectionOff(t *testing.T) {
	s := newServer(t, Options{})
	cl, _ := dial(t, s)
	cl.expect("session.created")
	cl.send(map[string]any{"type": "session.update", "session": map[string]any{
		"type": "realtime", "audio": map[string]any{"input": map[string]any{"turn_detection": nil}}}})
	in := cl.expect("session.updated")[0].obj("session").obj("audio").obj("input")
	if v, ok := in["turn_detection"]; !ok || v != nil {
		t.Errorf("turn_detection = %v, want null", v)
	}
	if in.obj("format").str("type") != "audio/pcm" {
		t.Errorf("partial update lost the input format: %v", in)
	}
}
