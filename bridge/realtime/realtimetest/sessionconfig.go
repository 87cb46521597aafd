package realtimetest

import (
	"fmt"
	"time"
)

// sessionDuration is the GA session limit, reported in expires_at.
const sessionDuration = 60 * time.Minute

// gaSessionField reports whether a GA session.update may carry field k.
func gaSessionField(k string) bool {
	switch k {
	case "type", "model", "output_modalities", "instructions", "audio", "include", "tracing",
		"tools", "tool_choice", "max_output_tokens", "truncation", "prompt", "reasoning",
		"parallel_tool_calls":
		return true
	}
	return false
}

// readOnlySessionField reports whether k is a session field that clients
// copying session.created back may send; it is accepted and ignored.
func readOnlySessionField(k string) bool {
	return k == "id" || k == "object" || k == "expires_at"
}

// audioFormat reports whether t is a GA audio format type.
func audioFormat(t string) bool {
	return t == "audio/pcm" || t == "audio/pcmu" || t == "audio/pcma"
}

// apiError is an invalid_request_error to report to the client.
type apiError struct {
	code, message string
	param         *string
}

func invalid(code, param, format string, args ...any) *apiError {
	return &apiError{code: code, message: fmt.Sprintf(format, args...), param: &param}
}

// defaultSession is the GA session object of session.created: PCM 24 kHz
// both ways and server VAD, as the real service starts.
func defaultSession(id, model string, now time.Time, lifetime time.Duration) map[string]any {
	return map[string]any{
		"type":              "realtime",
		"object":            "realtime.session",
		"id":                id,
		"model":             model,
		"output_modalities": []any{"audio"},
		"instructions":      "",
		"tools":             []any{},
		"tool_choice":       "auto",
		"max_output_tokens": "inf",
		"tracing":           nil,
		"truncation":        "auto",
		"prompt":            nil,
		"include":           nil,
		"expires_at":        now.Add(lifetime + time.Second - 1).Unix(), // rounded up
		"audio": map[string]any{
			"input": map[string]any{
				"format":          map[string]any{"type": "audio/pcm", "rate": 24000},
				"transcription":   nil,
				"noise_reduction": nil,
				"turn_detection":  withTurnDefaults(map[string]any{"type": "server_vad"}),
			},
			"output": map[string]any{
				"format": map[string]any{"type": "audio/pcm", "rate": 24000},
				"voice":  "alloy",
				"speed":  1.0,
			},
		},
	}
}

// withTurnDefaults fills the defaults of a turn_detection object.
func withTurnDefaults(td map[string]any) map[string]any {
	defaults := map[string]any{"create_response": true, "interrupt_response": true}
	if td["type"] == "server_vad" {
		defaults["threshold"] = 0.5
		defaults["prefix_padding_ms"] = 300
		defaults["silence_duration_ms"] = 500
		defaults["idle_timeout_ms"] = nil
	} else {
		defaults["eagerness"] = "auto"
	}
	for k, v := range defaults {
		if _, ok := td[k]; !ok {
			td[k] = v
		}
	}
	return td
}

// validateUpdate checks the session object of a session.update against the
// GA shape; beta-only fields are unknown parameters, as on the real service.
func validateUpdate(sess any) *apiError {
	m, ok := sess.(map[string]any)
	if !ok {
		if sess == nil {
			return invalid("missing_required_parameter", "session", "Missing required parameter: 'session'.")
		}
		return invalid("invalid_type", "session", "Invalid type for 'session': expected an object.")
	}
	for k := range m {
		if !gaSessionField(k) && !readOnlySessionField(k) {
			return invalid("unknown_parameter", "session."+k, "Unknown parameter: 'session.%s'.", k)
		}
	}
	switch t := m["type"]; t {
	case "realtime":
	case nil:
		return invalid("missing_required_parameter", "session.type", "Missing required parameter: 'session.type'.")
	default:
		return invalid("invalid_value", "session.type", "Invalid value: '%v'. Supported values are: 'realtime'.", t)
	}
	if mods, ok := m["output_modalities"]; ok {
		list, ok := mods.([]any)
		if !ok || len(list) != 1 || (list[0] != "audio" && list[0] != "text") {
			return invalid("invalid_value", "session.output_modalities",
				"Invalid 'session.output_modalities': expected [\"audio\"] or [\"text\"].")
		}
	}
	audio, ok := m["audio"]
	if !ok {
		return nil
	}
	am, ok := audio.(map[string]any)
	if !ok {
		return invalid("invalid_type", "session.audio", "Invalid type for 'session.audio': expected an object.")
	}
	for k, v := range am {
		if k != "input" && k != "output" {
			return invalid("unknown_parameter", "session.audio."+k, "Unknown parameter: 'session.audio.%s'.", k)
		}
		dir, ok := v.(map[string]any)
		if !ok {
			return invalid("invalid_type", "session.audio."+k, "Invalid type for 'session.audio.%s': expected an object.", k)
		}
		if f, ok := dir["format"]; ok {
			if err := validateFormat(f, "session.audio."+k+".format"); err != nil {
				return err
			}
		}
		if td, ok := dir["turn_detection"]; ok && k == "input" && td != nil {
			tdm, ok := td.(map[string]any)
			if !ok {
				return invalid("invalid_type", "session.audio.input.turn_detection",
					"Invalid type for 'session.audio.input.turn_detection': expected an object or null.")
			}
			if typ := tdm["type"]; typ != "server_vad" && typ != "semantic_vad" {
				return invalid("invalid_value", "session.audio.input.turn_detection.type",
					"Invalid value: '%v'. Supported values are: 'server_vad' and 'semantic_vad'.", typ)
			}
		}
	}
	return nil
}

func validateFormat(f any, param string) *apiError {
	fm, ok := f.(map[string]any)
	if !ok {
		return invalid("invalid_type", param, "Invalid type for '%s': expected an object, but got %T instead.", param, f)
	}
	typ, _ := fm["type"].(string)
	if !audioFormat(typ) {
		return invalid("invalid_value", param+".type",
			"Invalid value: '%v'. Supported values are: 'audio/pcm', 'audio/pcmu', and 'audio/pcma'.", fm["type"])
	}
	if rate, ok := fm["rate"]; ok && typ == "audio/pcm" && toInt(rate, 0) != 24000 {
		return invalid("invalid_value", param+".rate", "Invalid value: '%v'. Supported values are: 24000.", rate)
	}
	return nil
}

// mergeSession applies a validated partial update: audio.input and
// audio.output are merged field by field, every other field is replaced.
// model, id, object and expires_at cannot change.
func mergeSession(cur, upd map[string]any) {
	for k, v := range upd {
		switch k {
		case "type", "model", "id", "object", "expires_at":
		case "audio":
			curAudio, _ := cur["audio"].(map[string]any)
			for dir, dv := range v.(map[string]any) {
				curDir, _ := curAudio[dir].(map[string]any)
				for fk, fv := range dv.(map[string]any) {
					curDir[fk] = normalizeAudioField(fk, fv)
				}
			}
		default:
			cur[k] = v
		}
	}
}

func normalizeAudioField(k string, v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	switch k {
	case "format":
		if m["type"] == "audio/pcm" {
			m["rate"] = 24000
		}
	case "turn_detection":
		return withTurnDefaults(m)
	}
	return m
}

// turnConfig is the part of turn_detection the fake acts on.
type turnConfig struct {
	serverVAD         bool // turn_detection is server_vad
	silenceMs         int
	prefixMs          int
	createResponse    bool
	interruptResponse bool
}

func (c *Conn) turnLocked() turnConfig {
	tc := turnConfig{silenceMs: 500, prefixMs: 300, createResponse: true, interruptResponse: true}
	audio, _ := c.session["audio"].(map[string]any)
	input, _ := audio["input"].(map[string]any)
	td, _ := input["turn_detection"].(map[string]any)
	if td == nil {
		return tc
	}
	tc.serverVAD = td["type"] == "server_vad"
	tc.silenceMs = toInt(td["silence_duration_ms"], tc.silenceMs)
	tc.prefixMs = toInt(td["prefix_padding_ms"], tc.prefixMs)
	if b, ok := td["create_response"].(bool); ok {
		tc.createResponse = b
	}
	if b, ok := td["interrupt_response"].(bool); ok {
		tc.interruptResponse = b
	}
	return tc
}

// outputAudioLocked returns the session's audio.output (format and voice).
func (c *Conn) outputAudioLocked() map[string]any {
	audio, _ := c.session["audio"].(map[string]any)
	out, _ := audio["output"].(map[string]any)
	return map[string]any{"output": map[string]any{"format": out["format"], "voice": out["voice"]}}
}

func toInt(v any, def int) int {
	switch n := v.(type) {
	case float64:
		return int(n)
	case int:
		return n
	case int64:
		return int(n)
	}
	return def
}
