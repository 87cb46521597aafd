package twiliotest

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"testing"

	"github.com/twilio/twilio-go/client"
)

func TestSignFormMatchesPublishedVectors(t *testing.T) {
	form := url.Values{
		"Digits": {"1234"}, "To": {"+18005551212"}, "From": {"+14158675310"},
		"Caller": {"+14158675310"}, "CallSid": {"CA1234567890ABCDE"},
	}
	tests := map[string]struct {
		url, want string
	}{
		// Twilio's security page worked example (twilio.md §4.3).
		"security page": {url: "https://example.com/myapp.php?foo=1&bar=2", want: "L/OH5YylLD5NRKLltdqwSvS0BnU="},
		// The same parameters on the mycompany.com URL of older Twilio docs.
		"older docs": {url: "https://mycompany.com/myapp.php?foo=1&bar=2", want: "GvWf1cFY/Q7PnoempGyD5oXAezc="},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := SignForm("12345", tc.url, form); got != tc.want {
				t.Errorf("SignForm = %s, want %s", got, tc.want)
			}
		})
	}
	// twilio-go's own vector (client/request_validator_test.go): seven
	// parameters, Caller and From ending in 09, on the mycompany.com URL.
	form.Set("Caller", "+14158675309")
	form.Set("From", "+14158675309")
	form.Set("ReasonConferenceEnded", "test")
	form.Set("Reason", "Participant")
	if got := SignForm("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", form); got != "vOEb5UThFn24KEfnOFLQY2AE5FY=" {
		t.Errorf("SignForm(twilio-go vector) = %s", got)
	}
}

func TestSignFormAgreesWithTwilioGo(t *testing.T) {
	rv := client.NewRequestValidator(testToken)
	tests := map[string]struct {
		url  string
		form url.Values
	}{
		"websocket handshake": {url: "wss://bridge.example.com/twilio/stream"},
		"voice webhook": {url: "https://bridge.example.com/twilio/voice", form: url.Values{
			"To": {"sip:1001@vivi.sip.twilio.com;transport=tls"}, "SipSourceIp": {"203.0.113.7"},
			"SipHeader_X-Foo": {"bar baz"}, "CallSid": {"CA1"}, "a": {"lower sorts last"},
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			params := map[string]string{}
			for k := range tc.form {
				params[k] = tc.form.Get(k)
			}
			if sig := SignForm(testToken, tc.url, tc.form); !rv.Validate(tc.url, params, sig) {
				t.Errorf("twilio-go does not validate %s", sig)
			}
		})
	}
}

func TestPostFormSignsThePublicURL(t *testing.T) {
	const public = "https://bridge.example.com"
	form := url.Values{"CallSid": {"CA1"}, "From": {"sip:alice@pbx.example.com"}, "Digits": {"1#"}}
	var gotValid bool
	var gotForm url.Values
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rv := client.NewRequestValidator(testToken)
		gotValid = r.Method == http.MethodPost &&
			r.Header.Get("Content-Type") == "application/x-www-form-urlencoded" &&
			rv.ValidateBody(public+r.URL.RequestURI(), body, r.Header.Get(SignatureHeader))
		gotForm, _ = url.ParseQuery(string(body))
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	httpClient := &http.Client{Transport: &http.Transport{}}
	defer httpClient.CloseIdleConnections()

	resp, err := PostForm(context.Background(), httpClient, srv.URL, public, "/twilio/voice?x=1", testToken, form)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || !gotValid {
		t.Errorf("status %d, signature valid %v", resp.StatusCode, gotValid)
	}
	if gotForm.Encode() != form.Encode() {
		t.Errorf("form = %v, want %v", gotForm, form)
	}
}

func TestNewSIDs(t *testing.T) {
	for prefix, fn := range map[string]func() string{"CA": NewCallSID, "MZ": NewStreamSID, "AC": NewAccountSID} {
		a, b := fn(), fn()
		if !regexp.MustCompile("^"+prefix+"[0-9a-f]{32}$").MatchString(a) || a == b {
			t.Errorf("%s SIDs %q %q", prefix, a, b)
		}
	}
}
