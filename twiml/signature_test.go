package twiml

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/vivi/bridge/twiml/twimltest"
)

const testAuthToken = "token123"

func newTestValidator(t *testing.T, publicURL string, enabled bool) *Validator {
	t.Helper()
	v, err := NewValidator(testAuthToken, publicURL, enabled)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// formRequest is a POST of params to target carrying signature sig.
func formRequest(target string, params url.Values, sig string) (*http.Request, []byte) {
	body := []byte(params.Encode())
	r := httptest.NewRequest("POST", target, strings.NewReader(string(body)))
	if sig != "" {
		r.Header.Set(SignatureHeader, sig)
	}
	return r, body
}

// The validator accepts Twilio's published example as Twilio sent it.
func TestValidateFormPublishedVector(t *testing.T) {
	v, err := NewValidator("12345", "https://example.com", true)
	if err != nil {
		t.Fatal(err)
	}
	params := url.Values{
		"Digits": {"1234"}, "To": {"+18005551212"}, "From": {"+14158675310"},
		"Caller": {"+14158675310"}, "CallSid": {"CA1234567890ABCDE"},
	}
	r, body := formRequest("/myapp.php?foo=1&bar=2", params, "L/OH5YylLD5NRKLltdqwSvS0BnU=")
	if !v.ValidateForm(r, body) {
		t.Fatal("published example rejected")
	}
}

func TestValidateForm(t *testing.T) {
	params := url.Values{"CallSid": {"CA1"}, "To": {"sip:1001@x;transport=tls"}, "SipHeader_X-Foo": {"bar baz"}}
	sign := func(u string, p url.Values) string { return twimltest.Sign(testAuthToken, u, p) }
	good := sign("https://h.example/twilio/voice", params)
	tampered := url.Values{"CallSid": {"CA2"}, "To": params["To"], "SipHeader_X-Foo": params["SipHeader_X-Foo"]}
	tests := map[string]struct {
		publicURL string
		target    string
		params    url.Values
		sig       string
		enabled   bool
		want      bool
	}{
		"valid":                     {"https://h.example", "/twilio/voice", params, good, true, true},
		"public URL trailing slash": {"https://h.example/", "/twilio/voice", params, good, true, true},
		"query is signed": {"https://h.example", "/twilio/voice?x=1", params,
			sign("https://h.example/twilio/voice?x=1", params), true, true},
		"public URL with port, signed without": {"https://h.example:8443", "/twilio/voice", params, good, true, true},
		"missing signature":                    {"https://h.example", "/twilio/voice", params, "", true, false},
		"garbage signature":                    {"https://h.example", "/twilio/voice", params, "not-base64!", true, false},
		"other token": {"https://h.example", "/twilio/voice", params,
			twimltest.Sign("other", "https://h.example/twilio/voice", params), true, false},
		"body tampered":      {"https://h.example", "/twilio/voice", tampered, good, true, false},
		"signed other path":  {"https://h.example", "/twilio/call-status", params, good, true, false},
		"query not signed":   {"https://h.example", "/twilio/voice?x=1", params, good, true, false},
		"signed as http":     {"https://h.example", "/twilio/voice", params, sign("http://h.example/twilio/voice", params), true, false},
		"signed double /":    {"https://h.example/", "/twilio/voice", params, sign("https://h.example//twilio/voice", params), true, false},
		"disabled, none":     {"https://h.example", "/twilio/voice", params, "", false, true},
		"disabled, garbage":  {"https://h.example", "/twilio/voice", params, "x", false, true},
		"signed with prefix": {"https://h.example/bridge/", "/twilio/voice", params, sign("https://h.example/bridge/twilio/voice", params), true, true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			v := newTestValidator(t, tc.publicURL, tc.enabled)
			r, body := formRequest(tc.target, tc.params, tc.sig)
			if got := v.ValidateForm(r, body); got != tc.want {
				t.Fatalf("ValidateForm = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestValidateStream(t *testing.T) {
	sign := func(u string) string { return twimltest.Sign(testAuthToken, u, nil) }
	tests := map[string]struct {
		publicURL string
		path      string
		sig       string
		enabled   bool
		want      bool
	}{
		"valid":                       {"https://h.example", "/twilio/stream", sign("wss://h.example/twilio/stream"), true, true},
		"public URL trailing slash":   {"https://h.example/", "/twilio/stream", sign("wss://h.example/twilio/stream"), true, true},
		"signed with trailing slash":  {"https://h.example", "/twilio/stream", sign("wss://h.example/twilio/stream/"), true, true},
		"public URL path is not used": {"https://h.example/bridge", "/twilio/stream", sign("wss://h.example/twilio/stream"), true, true},
		"signed as https":             {"https://h.example", "/twilio/stream", sign("https://h.example/twilio/stream"), true, false},
		"other host":                  {"https://h.example", "/twilio/stream", sign("wss://evil.example/twilio/stream"), true, false},
		"other path":                  {"https://h.example", "/twilio/stream", sign("wss://h.example/twilio/voice"), true, false},
		"other token":                 {"https://h.example", "/twilio/stream", twimltest.Sign("x", "wss://h.example/twilio/stream", nil), true, false},
		"missing":                     {"https://h.example", "/twilio/stream", "", true, false},
		"disabled":                    {"https://h.example", "/twilio/stream", "", false, true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			v := newTestValidator(t, tc.publicURL, tc.enabled)
			r := httptest.NewRequest("GET", tc.path, nil)
			if tc.sig != "" {
				r.Header.Set(SignatureHeader, tc.sig)
			}
			if got := v.ValidateStream(r); got != tc.want {
				t.Fatalf("ValidateStream = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestNewValidatorErrors(t *testing.T) {
	tests := map[string]struct {
		token, publicURL string
		enabled          bool
	}{
		"relative URL":     {"t", "/twilio", true},
		"no scheme":        {"t", "h.example", true},
		"ws scheme":        {"t", "wss://h.example", true},
		"query":            {"t", "https://h.example/?a=1", true},
		"user":             {"t", "https://u:p@h.example", true},
		"empty":            {"t", "", true},
		"no token enabled": {"", "https://h.example", true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := NewValidator(tc.token, tc.publicURL, tc.enabled); err == nil {
				t.Fatal("want an error")
			}
		})
	}
	if _, err := NewValidator("", "https://h.example", false); err != nil {
		t.Fatalf("disabled validation needs no token: %v", err)
	}
}
