package twiliotest

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
)

// SignatureHeader is the header in which Twilio sends its request signature.
const SignatureHeader = "X-Twilio-Signature"

// SignForm returns the X-Twilio-Signature Twilio would send for a request to
// rawURL carrying form: HMAC-SHA1, keyed by authToken, over rawURL followed by
// every parameter name and value with no delimiters, names sorted
// (case-sensitive byte order), base64 encoded. A nil or empty form signs the
// URL alone, which is what Twilio does for the Media Streams websocket
// handshake. Repeated names (never seen in voice webhooks) contribute every
// value in the order given.
func SignForm(authToken, rawURL string, form url.Values) string {
	keys := make([]string, 0, len(form))
	for k := range form {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(rawURL)
	for _, k := range keys {
		for _, v := range form[k] {
			b.WriteString(k)
			b.WriteString(v)
		}
	}
	mac := hmac.New(sha1.New, []byte(authToken))
	mac.Write([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// PostForm posts form to baseURL+path the way Twilio posts a webhook: form
// encoded, with the X-Twilio-Signature computed over publicURL+path (the URL
// the bridge believes Twilio called, i.e. its PUBLIC_URL). A nil client means
// http.DefaultClient. The caller closes the response body.
func PostForm(ctx context.Context, client *http.Client, baseURL, publicURL, path, authToken string, form url.Values) (*http.Response, error) {
	if client == nil {
		client = http.DefaultClient
	}
	body := form.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+path, strings.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("twiliotest: post %s: %w", path, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set(SignatureHeader, SignForm(authToken, publicURL+path, form))
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("twiliotest: post %s: %w", path, err)
	}
	return resp, nil
}

// NewCallSID returns a random call SID: "CA" and 32 lowercase hex digits.
func NewCallSID() string { return "CA" + randomHex() }

// NewStreamSID returns a random stream SID: "MZ" and 32 lowercase hex digits.
func NewStreamSID() string { return "MZ" + randomHex() }

// NewAccountSID returns a random account SID: "AC" and 32 lowercase hex digits.
func NewAccountSID() string { return "AC" + randomHex() }

// randomHex returns 32 random hex digits (16 random bytes).
func randomHex() string {
	var b [16]byte
	// crypto/rand.Read never returns an error (Go 1.24+); it crashes instead.
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
