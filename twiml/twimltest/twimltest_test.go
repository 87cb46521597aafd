package twimltest_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/vivi/bridge/twiml/twimltest"
)

// TestSignPublishedVectors checks the signing code against Twilio's own
// vectors before any other test relies on it.
func TestSignPublishedVectors(t *testing.T) {
	tests := map[string]struct {
		url    string
		params url.Values
		want   string
	}{
		// Twilio's security documentation worked example. (Its URL is
		// example.com; with mycompany.com the same input signs differently.)
		"security docs example": {
			url: "https://example.com/myapp.php?foo=1&bar=2",
			params: url.Values{
				"Digits": {"1234"}, "To": {"+18005551212"}, "From": {"+14158675310"},
				"Caller": {"+14158675310"}, "CallSid": {"CA1234567890ABCDE"},
			},
			want: "L/OH5YylLD5NRKLltdqwSvS0BnU=",
		},
		// twilio-go client/request_validator_test.go: Reason must sort before
		// ReasonConferenceEnded.
		"twilio-go validator test": {
			url: "https://mycompany.com/myapp.php?foo=1&bar=2",
			params: url.Values{
				"Digits": {"1234"}, "CallSid": {"CA1234567890ABCDE"}, "To": {"+18005551212"},
				"Caller": {"+14158675309"}, "From": {"+14158675309"},
				"ReasonConferenceEnded": {"test"}, "Reason": {"Participant"},
			},
			want: "vOEb5UThFn24KEfnOFLQY2AE5FY=",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := twimltest.Sign("12345", tc.url, tc.params); got != tc.want {
				t.Fatalf("Sign = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestSignedURLJoinsWithoutDoubleSlash(t *testing.T) {
	for _, base := range []string{"https://h.example", "https://h.example/"} {
		if got := twimltest.SignedURL(base, "/twilio/voice"); got != "https://h.example/twilio/voice" {
			t.Errorf("SignedURL(%q) = %q", base, got)
		}
	}
}

func TestSignedRequest(t *testing.T) {
	params := url.Values{"CallSid": {"CA1"}, "To": {"sip:1001@x"}}
	r := twimltest.SignedRequest("tok", "https://h.example/", "/twilio/voice", params)
	if r.Method != http.MethodPost || r.URL.Path != "/twilio/voice" {
		t.Fatalf("request %s %s", r.Method, r.URL)
	}
	body, _ := io.ReadAll(r.Body)
	if string(body) != params.Encode() {
		t.Fatalf("body %q", body)
	}
	want := twimltest.Sign("tok", "https://h.example/twilio/voice", params)
	if got := r.Header.Get(twimltest.SignatureHeader); got != want {
		t.Fatalf("signature %q, want %q", got, want)
	}

	c, err := twimltest.NewSignedRequest(context.Background(), "http://127.0.0.1:1/", "tok", "https://h.example", "/twilio/voice", params)
	if err != nil {
		t.Fatal(err)
	}
	if c.URL.String() != "http://127.0.0.1:1/twilio/voice" || c.Header.Get(twimltest.SignatureHeader) != want {
		t.Fatalf("client request %s %q", c.URL, c.Header.Get(twimltest.SignatureHeader))
	}
	if got := twimltest.StreamHeader("tok", "wss://h.example/twilio/stream").Get(twimltest.SignatureHeader); got != twimltest.Sign("tok", "wss://h.example/twilio/stream", nil) {
		t.Fatalf("stream header signature %q", got)
	}
}
