package analysis

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/session"
)

var testFields = []channel.AnalysisField{
	{Name: "department", Type: "string", Enum: []string{"sales", "support"}},
	{Name: "note", Type: "string"},
	{Name: "party_size", Type: "integer"},
	{Name: "spend", Type: "number"},
	{Name: "callback", Type: "boolean"},
}

func content(t *testing.T, extra map[string]any, mutate func(map[string]any)) string {
	t.Helper()
	m := map[string]any{"summary": "s", "intent": "i", "outcome": "resolved", "follow_ups": []string{}, "language": "en"}
	if extra != nil {
		m["extra"] = extra
	}
	if mutate != nil {
		mutate(m)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseResultBounds(t *testing.T) {
	long := strings.Repeat("é", 1500) // 3000 bytes
	var fus []string
	for range 12 {
		fus = append(fus, strings.Repeat("x", 600))
	}
	c := content(t, nil, func(m map[string]any) {
		m["summary"], m["intent"], m["follow_ups"] = long, long+"!", append(fus, "")
	})
	r, err := parseResult(c, nil, facts{})
	if err != nil {
		t.Fatalf("parseResult: %v", err)
	}
	if len(r.Summary) != 2000 || !utf8.ValidString(r.Summary) || len(r.Intent) != 2000 {
		t.Errorf("summary %d bytes, intent %d bytes", len(r.Summary), len(r.Intent))
	}
	if len(r.FollowUps) != MaxFollowUps || len(r.FollowUps[0]) != MaxFollowUp {
		t.Errorf("%d follow-ups of %d bytes", len(r.FollowUps), len(r.FollowUps[0]))
	}
	if !r.FromModel || r.Outcome != "resolved" || r.Extra != nil {
		t.Errorf("result %+v", r)
	}
}

func TestParseResultExtra(t *testing.T) {
	tests := map[string]struct {
		extra map[string]any
		want  map[string]any
	}{
		"all typed": {
			map[string]any{"department": "support", "note": "vip", "party_size": 4, "spend": 12.5, "callback": true},
			map[string]any{"department": "support", "note": "vip", "party_size": int64(4), "spend": 12.5, "callback": true},
		},
		"unknown keys dropped": {map[string]any{"note": "n", "secret": "x"}, map[string]any{"note": "n"}},
		"enum mismatch":        {map[string]any{"department": "billing", "callback": false}, map[string]any{"callback": false}},
		"integer as float":     {map[string]any{"party_size": 3.0}, map[string]any{"party_size": int64(3)}},
		"integer fraction":     {map[string]any{"party_size": 3.5}, nil},
		"integer as string":    {map[string]any{"party_size": "3"}, nil},
		"number as string":     {map[string]any{"spend": "12"}, nil},
		"boolean as string":    {map[string]any{"callback": "true"}, nil},
		"string as number":     {map[string]any{"note": 5}, nil},
		"null values":          {map[string]any{"note": nil, "spend": nil}, nil},
		"long string cut":      {map[string]any{"note": strings.Repeat("n", 900)}, map[string]any{"note": strings.Repeat("n", MaxExtraString)}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r, err := parseResult(content(t, tc.extra, nil), testFields, facts{})
			if err != nil {
				t.Fatalf("parseResult: %v", err)
			}
			if !reflect.DeepEqual(r.Extra, tc.want) {
				t.Errorf("extra %#v; want %#v", r.Extra, tc.want)
			}
		})
	}
}

func TestParseResultOutcome(t *testing.T) {
	transferred := facts{outcome: session.OutcomeTransferred, destination: "Front Desk"}
	tests := map[string]struct {
		outcome string
		f       facts
		want    string
		dest    string
		err     bool
	}{
		"resolved":                {"resolved", facts{}, "resolved", "", false},
		"abandoned":               {"abandoned", facts{}, "abandoned", "", false},
		"fact without fact":       {"transferred", facts{}, "", "", true},
		"unknown":                 {"happy", facts{}, "", "", true},
		"fact overrides resolved": {"resolved", transferred, "transferred", "Front Desk", false},
		"fact given back":         {"transferred", transferred, "transferred", "Front Desk", false},
		"other fact refused":      {"agent_ended", transferred, "", "", true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r, err := parseResult(content(t, nil, func(m map[string]any) { m["outcome"] = tc.outcome }), nil, tc.f)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v; want error %v", err, tc.err)
			}
			if err == nil && (r.Outcome != tc.want || r.Destination != tc.dest) {
				t.Errorf("outcome %s destination %q", r.Outcome, r.Destination)
			}
		})
	}
}

func TestParseResultRefused(t *testing.T) {
	for name, c := range map[string]string{
		"empty":            "",
		"not JSON":         "The caller wanted a table.",
		"array":            `[]`,
		"two values":       `{"summary":"","intent":"","outcome":"resolved","language":""} {}`,
		"summary missing":  `{"intent":"","outcome":"resolved","follow_ups":[],"language":""}`,
		"summary null":     `{"summary":null,"intent":"","outcome":"resolved","follow_ups":[],"language":""}`,
		"intent a number":  `{"summary":"","intent":3,"outcome":"resolved","follow_ups":[],"language":""}`,
		"language absent":  `{"summary":"","intent":"","outcome":"resolved","follow_ups":[]}`,
		"follow-ups mixed": `{"summary":"","intent":"","outcome":"resolved","follow_ups":["a",1],"language":""}`,
		"too large":        `{"summary":"` + strings.Repeat("a", maxContentBytes) + `"}`,
	} {
		if _, err := parseResult(c, testFields, facts{}); err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), "table") {
			t.Errorf("%s: the error quotes the content: %v", name, err)
		}
	}
}

func TestParseResultLanguage(t *testing.T) {
	for lang, want := range map[string]string{"en": "en", "de-CH": "de-CH", "zh-Hant-TW": "zh-Hant-TW", "English": "", "e": "", "en_US": "", "": ""} {
		r, err := parseResult(content(t, nil, func(m map[string]any) { m["language"] = lang }), nil, facts{})
		if err != nil || r.Language != want {
			t.Errorf("%q: language %q, %v; want %q", lang, r.Language, err, want)
		}
	}
}

// FuzzParseResult: any content is either refused or gives a result within
// its bounds, with an outcome of the enum and only typed agent fields.
func FuzzParseResult(f *testing.F) {
	for _, seed := range []string{
		`{"summary":"Booked a table.","intent":"booking","outcome":"resolved","follow_ups":["confirm by SMS"],"language":"en","extra":{"department":"sales","party_size":4,"spend":1.5,"callback":false,"x":1}}`,
		`{"summary":"","intent":"","outcome":"abandoned","follow_ups":[],"language":"de-CH"}`,
		`{"summary":"s","intent":"i","outcome":"transferred","follow_ups":null,"language":"xx"}`,
		`{"summary":"\u00e9","intent":"i","outcome":"resolved","follow_ups":[""],"language":"en","extra":{"party_size":"3","note":null}}`,
		`{"summary":1}`, `[]`, `null`, ``, `{`, `"x"`,
	} {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	f.Fuzz(func(t *testing.T, c string, transferred bool) {
		fs := facts{}
		if transferred {
			fs = facts{outcome: session.OutcomeTransferred, destination: "Front Desk"}
		}
		r, err := parseResult(c, testFields, fs)
		if err != nil {
			return
		}
		if len(r.Summary) > MaxSummary || len(r.Intent) > MaxIntent || len(r.FollowUps) > MaxFollowUps || r.FollowUps == nil {
			t.Fatalf("unbounded result %+v", r)
		}
		for _, fu := range r.FollowUps {
			if len(fu) > MaxFollowUp || fu == "" {
				t.Fatalf("follow-up %q", fu)
			}
		}
		if transferred && r.Outcome != session.OutcomeTransferred || !transferred && r.Outcome != "resolved" && r.Outcome != "abandoned" {
			t.Fatalf("outcome %q (transferred fact %v)", r.Outcome, transferred)
		}
		for k, v := range r.Extra {
			var ok bool
			switch k {
			case "department", "note":
				_, ok = v.(string)
			case "party_size":
				_, ok = v.(int64)
			case "spend":
				_, ok = v.(float64)
			case "callback":
				_, ok = v.(bool)
			}
			if !ok {
				t.Fatalf("extra %s = %#v", k, v)
			}
		}
		if _, err := json.Marshal(r); err != nil {
			t.Fatalf("result does not marshal: %v", err)
		}
	})
}
