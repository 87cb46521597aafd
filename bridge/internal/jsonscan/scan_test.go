package jsonscan

import (
	"encoding/base64"
	"testing"
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
	v, esc, ok := s.String()
	if !ok || !esc || string(v) != `a\/b` {
		t.Fatalf("got %q esc=%v ok=%v", v, esc, ok)
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

func FuzzScanner(f *testing.F) {
	f.Add([]byte(`{"event":"media","media":{"payload":"AAAA"}}`))
	f.Add([]byte(`{"a":[{"b":"c"}],"d":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fields(b) // must not panic or loop
	})
}
