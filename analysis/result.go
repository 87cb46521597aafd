package analysis

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/session"
)

// Bounds of a result.
const (
	MaxSummary      = 2000
	MaxIntent       = 2000
	MaxFollowUps    = 10
	MaxFollowUp     = 500
	MaxExtraString  = 500
	maxContentBytes = 256 << 10
)

// languageTag is the shape of a BCP 47 tag (not its registry).
var languageTag = regexp.MustCompile(`^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,4}$`)

// answer is the JSON the schema asks for.
type answer struct {
	Summary   *string                    `json:"summary"`
	Intent    *string                    `json:"intent"`
	Outcome   *string                    `json:"outcome"`
	FollowUps []string                   `json:"follow_ups"`
	Language  *string                    `json:"language"`
	Extra     map[string]json.RawMessage `json:"extra"`
}

// parseResult reads the model's answer content: the schema's required
// fields must be there with their types; the outcome must be resolved,
// abandoned or the fact, and the fact wins; texts are cut to their bounds;
// extra keeps the agent's fields whose value has the field's type (unknown
// keys and mistyped values are dropped).
func parseResult(content string, fields []channel.AnalysisField, f facts) (session.AnalysisResult, error) {
	if len(content) > maxContentBytes {
		return session.AnalysisResult{}, errors.New("content too large")
	}
	var a answer
	dec := json.NewDecoder(bytes.NewReader([]byte(content)))
	if err := dec.Decode(&a); err != nil {
		return session.AnalysisResult{}, errors.New("content is not the JSON object of the schema")
	}
	if dec.More() {
		return session.AnalysisResult{}, errors.New("content holds more than one JSON value")
	}
	switch {
	case a.Summary == nil:
		return session.AnalysisResult{}, errors.New("summary is missing")
	case a.Intent == nil:
		return session.AnalysisResult{}, errors.New("intent is missing")
	case a.Outcome == nil:
		return session.AnalysisResult{}, errors.New("outcome is missing")
	case a.Language == nil:
		return session.AnalysisResult{}, errors.New("language is missing")
	case !slices.Contains(f.outcomes(), *a.Outcome):
		return session.AnalysisResult{}, fmt.Errorf("outcome %q is not one of the schema's", clip(*a.Outcome, 40))
	}
	r := session.AnalysisResult{
		Summary:   clip(*a.Summary, MaxSummary),
		Intent:    clip(*a.Intent, MaxIntent),
		Outcome:   *a.Outcome,
		FollowUps: []string{},
		FromModel: true,
	}
	if f.outcome != "" {
		r.Outcome, r.Destination = f.outcome, f.destination
	}
	for _, fu := range a.FollowUps {
		if len(r.FollowUps) == MaxFollowUps {
			break
		}
		if fu != "" {
			r.FollowUps = append(r.FollowUps, clip(fu, MaxFollowUp))
		}
	}
	if languageTag.MatchString(*a.Language) {
		r.Language = *a.Language
	}
	r.Extra = extraValues(a.Extra, fields)
	return r, nil
}

// extraValues keeps the values of raw that have their field's type:
// strings (cut, and in the enum when there is one), numbers as float64,
// integers as int64, booleans. nil when none is kept.
func extraValues(raw map[string]json.RawMessage, fields []channel.AnalysisField) map[string]any {
	var out map[string]any
	for _, fd := range fields {
		msg, ok := raw[fd.Name]
		if !ok {
			continue
		}
		v, ok := typed(msg, fd)
		if !ok {
			continue
		}
		if out == nil {
			out = make(map[string]any, len(fields))
		}
		out[fd.Name] = v
	}
	return out
}

func typed(msg json.RawMessage, fd channel.AnalysisField) (any, bool) {
	msg = bytes.TrimSpace(msg)
	if bytes.Equal(msg, []byte("null")) { // Unmarshal would leave the zero value
		return nil, false
	}
	switch fd.Type {
	case channel.FieldString:
		var s string
		if json.Unmarshal(msg, &s) != nil {
			return nil, false
		}
		if len(fd.Enum) > 0 && !slices.Contains(fd.Enum, s) {
			return nil, false
		}
		return clip(s, MaxExtraString), true
	case channel.FieldNumber:
		var n float64
		if json.Unmarshal(msg, &n) != nil || math.IsInf(n, 0) || math.IsNaN(n) {
			return nil, false
		}
		return n, true
	case channel.FieldInteger:
		if len(msg) == 0 || msg[0] == '"' { // a json.Number would take "3"
			return nil, false
		}
		var n json.Number
		dec := json.NewDecoder(bytes.NewReader(msg))
		dec.UseNumber()
		if dec.Decode(&n) != nil {
			return nil, false
		}
		if i, err := n.Int64(); err == nil {
			return i, true
		}
		// 3.0 is an integer too.
		if fl, err := n.Float64(); err == nil && fl == math.Trunc(fl) && math.Abs(fl) < 1<<53 {
			return int64(fl), true
		}
		return nil, false
	case channel.FieldBoolean:
		var b bool
		if json.Unmarshal(msg, &b) != nil {
			return nil, false
		}
		return b, true
	}
	return nil, false
}
