package jsonscan

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// fields walks a top-level object and returns its string members (raw) and
// the names of the members it skipped.
func fields(b []byte) (strs map[string]string, skipped []string, ok bool) {
	var s Scanner
	s.Reset(b)
	if !s.Object() {
		return nil, nil, false
	}
	strs = map[string]string{}
	for {
		k, more := s.Key()
		if !more {
			break
		}
		if s.i < len(s.b) && s.b[s.i] == '"' {
			v, _, good := s.String()
			if !good {
				return nil, nil, false
			}
			strs[string(k)] = string(v)
			continue
		}
		if !s.Skip() {
			return nil, nil, false
		}
		skipped = append(skipped, string(k))
	}
	return strs, skipped, !s.Failed()
}

func TestScanner(t *testing.T) {
	tests := map[string]struct {
		in      string
		ok      bool
		strs    map[string]string
		skipped int
	}{
		"flat": {in: `{"a":"1","b":"2"}`, ok: true, strs: map[string]string{"a": "1", "b": "2"}},
		"spaces": {in: " { \"a\" : \"x\" ,\n\t\"b\":\"y\" } ", ok: true,
			strs: map[string]string{"a": "x", "b": "y"}},
		"nested skipped": {in: `{"o":{"x":[1,2,{"y":"}"}],"z":null},"a":"v","n":-1.5e3,"t":true}`, ok: true,
			strs: map[string]string{"a": "v"}, skipped: 3},
		"escaped value kept raw": {in: `{"a":"q\"uote"}`, ok: true, strs: map[string]string{"a": `q\"uote`}},
		"empty object":           {in: `{}`, ok: true, strs: map[string]string{}},
		"not an object":          {in: `["a"]`},
		"truncated":              {in: `{"a":"b`},
		"missing colon":          {in: `{"a" "b"}`},
		"unbalanced":             {in: `{"a":{"b":1}`},
		"control char":           {in: "{\"a\":\"x\x01\"}"},
		"escaped key":            {in: `{"\u0061":"b"}`},
		"empty":                  {in: ``},
		"bare word":              {in: `{"a":}`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			strs, skipped, ok := fields([]byte(tc.in))
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			if len(strs) != len(tc.strs) {
				t.Fatalf("strings = %v, want %v", strs, tc.strs)
			}
			for k, v := range tc.strs {
				if strs[k] != v {
					t.Errorf("%s = %q, want %q", k, strs[k], v)
				}
			}
			if len(skipped) != tc.skipped {
				t.Errorf("skipped %v, want %d", skipped, tc.skipped)
			}
		})
	}
}

func TestStringReportsEscapes(t *testing.T) {
	var s Scanner
	s.Reset([]byte(`"a\/b"`))
	v, plain, ok := s.String()
	if !ok || plain || string(v) != `a\/b` {
		t.Fatalf("got %q plain=%v ok=%v", v, plain, ok)
	}
	s.Reset([]byte("\"a\xffb\""))
	if v, plain, ok := s.String(); !ok || plain {
		t.Fatalf("invalid UTF-8 %q: plain=%v ok=%v (encoding/json decodes it to U+FFFD)", v, plain, ok)
	}
	s.Reset([]byte(`"cafÃ©"`))
	if _, plain, ok := s.String(); !ok || !plain {
		t.Fatalf("valid UTF-8: plain=%v ok=%v", plain, ok)
	}
}

// invalidJSON are values encoding/json rejects; each is put where the
// scanner only skips, so only a full grammar check can refuse them.
var invalidJSON = []string{
	`tru`, `nul`, `fals`, `truex`, `True`, `01`, `-01`, `1.`, `.5`, `-`, `+1`, `1e`, `1e+`, `0x1`, `1..2`,
	`"\q"`, `"\u12"`, `"\u12g4"`, `"\`, "\"a\tb\"" + "\x01", `'a'`,
	`[1,]`, `[,1]`, `[1 2]`, `[1:2]`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{,"a":1}`, `{1:2}`, `{"a" 1}`, `{"a":1 "b":2}`,
	`[`, `{`, `]`, `}`, `[}`, `{]`, `[[1]`, `{"a":[1}`,
	strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), // too deep for the fast path
}

func TestSkipRefusesInvalidValues(t *testing.T) {
	for _, v := range invalidJSON {
		in := `{"a":` + v + `,"b":"c"}`
		if _, _, ok := fields([]byte(in)); ok {
			t.Errorf("accepted %s", in)
		}
	}
	valid := []string{`true`, `false`, `null`, `0`, `-0`, `-0.5e+3`, `12E-2`, `1.25`, `"\u00e9\n\"\\\/"`, `[]`, `{}`,
		`[ ]`, `{ }`, `[1, "x", {"k": [true, null]}, []]`, `{"a": {"b": {}}, "c": [{}]}`,
		strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth)}
	for _, v := range valid {
		in := `{"a":` + v + `,"b":"c"}`
		if !json.Valid([]byte(in)) {
			t.Fatalf("test bug: %s is not valid", in)
		}
		if strs, _, ok := fields([]byte(in)); !ok || strs["b"] != "c" {
			t.Errorf("refused %s", in)
		}
	}
}

func TestInt(t *testing.T) {
	for in, want := range map[string]bool{
		`0`: true, `-12`: true, `999999999999999999`: true,
		`9999999999999999999`: false, `1.0`: false, `1e2`: false, `"1"`: false, `01`: false,
	} {
		var s Scanner
		s.Reset([]byte(in))
		if got := s.Int() && s.Done(); got != want {
			t.Errorf("Int(%s) = %v, want %v", in, got, want)
		}
	}
}

func TestFold(t *testing.T) {
	var buf [8]byte
	if got, ascii := Fold(buf[:], []byte("EvEnT")); !ascii || string(got) != "event" {
		t.Errorf("Fold(EvEnT) = %q %v", got, ascii)
	}
	if got, ascii := Fold(buf[:], []byte("averylongkey")); !ascii || got != nil {
		t.Errorf("long key = %q %v, want nil (it names no field)", got, ascii)
	}
	// encoding/json folds these onto ASCII field names: the caller must defer.
	for _, k := range []string{"mar\u212a", "\u017ftart", "\u017f" + strings.Repeat("x", 20), "a\xff"} {
		if _, ascii := Fold(buf[:], []byte(k)); ascii {
			t.Errorf("Fold(%q) claims ASCII", k)
		}
	}
}

func TestBase64(t *testing.T) {
	for n := 1; n <= 9; n++ {
		raw := make([]byte, n)
		for i := range raw {
			raw[i] = byte(i * 37)
		}
		enc := base64.StdEncoding.EncodeToString(raw)
		got, ok := Base64([]byte(enc))
		if !ok || got != n {
			t.Errorf("Base64(%q) = %d, %v; want %d, true", enc, got, ok, n)
		}
	}
	bad := map[string]string{
		"empty":             "",
		"not multiple of 4": "abc",
		"quote":             `ab"c`,
		"backslash":         `ab\c`,
		"url alphabet":      "ab-_",
		"padding inside":    "a=bc",
		"three pads":        "a===",
		"space":             "ab c",
	}
	for name, in := range bad {
		if _, ok := Base64([]byte(in)); ok {
			t.Errorf("%s: Base64(%q) accepted", name, in)
		}
	}
}

// FuzzScanner: the scanner never panics, never accepts what encoding/json
// rejects, and every string it calls plain is what encoding/json decodes.
func FuzzScanner(f *testing.F) {
	f.Add([]byte(`{"event":"media","media":{"payload":"AAAA"}}`))
	f.Add([]byte(`{"a":[{"b":"c"}],"d":1}`))
	f.Add([]byte(`{"a":"x","a":1}`))
	f.Add([]byte(`{"a":"caf\u00e9","b":"\xff"}`))
	for _, v := range invalidJSON {
		f.Add([]byte(`{"a":` + v + `}`))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		strs, plain, ok := plainFields(b)
		if !ok {
			return
		}
		var full map[string]any
		if err := json.Unmarshal(b, &full); err != nil {
			t.Fatalf("scanner accepted %q, encoding/json: %v", b, err)
		}
		for k, v := range strs {
			// encoding/json turns invalid UTF-8 in a key into U+FFFD (the
			// fast paths leave every non-ASCII key to it, see Fold).
			if plain[k] && utf8.ValidString(k) && full[k] != v {
				t.Fatalf("%q: plain %s = %q, encoding/json %q", b, k, v, full[k])
			}
		}
	})
}

// plainFields is fields keeping, for each key, only its last value (the
// rule of encoding/json for a map) and whether that value is a plain string.
func plainFields(b []byte) (strs map[string]string, plain map[string]bool, ok bool) {
	var s Scanner
	s.Reset(b)
	if !s.Object() {
		return nil, nil, false
	}
	strs, plain = map[string]string{}, map[string]bool{}
	for {
		k, more := s.Key()
		if !more {
			break
		}
		if s.i < len(s.b) && s.b[s.i] == '"' {
			v, p, good := s.String()
			if !good {
				return nil, nil, false
			}
			strs[string(k)], plain[string(k)] = string(v), p
			continue
		}
		if !s.Skip() {
			return nil, nil, false
		}
		plain[string(k)] = false
	}
	return strs, plain, s.Done()
}
