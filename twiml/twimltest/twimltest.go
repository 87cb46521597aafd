// Package twimltest signs requests the way Twilio does, for tests and tools
// that play Twilio against the bridge (handler tests, the bridge's websocket
// tests, cmd/callsim). Signing is twiliotest.SignForm, which has its own
// HMAC-SHA1 code (checked against Twilio's published vectors) and does not use
// twilio-go, so tests built on it check twilio-go's validator rather than
// agree with it by construction.
package twimltest

import (
	"context"
	"fmt"
	"github.com/vivi/bridge/twiliotest"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
)

// SignatureHeader is the header Twilio puts the signature in.
const SignatureHeader = "X-Twilio-Signature"

// Sign returns Twilio's X-Twilio-Signature for a request to rawURL (the full
// URL Twilio was configured with, query included) with form params: the
// base64 HMAC-SHA1, keyed with authToken, of rawURL followed by each parameter
// name and value, names sorted (byte order), a repeated name's values in
// sorted order. A websocket handshake is signed with nil params.
func Sign(authToken, rawURL string, params url.Values) string {
	return twiliotest.SignForm(authToken, rawURL, params)
}

// SignedURL returns publicURL (with or without a trailing slash) joined with
// path (an absolute path, query allowed) the way the bridge joins them.
func SignedURL(publicURL, path string) string {
	return strings.TrimRight(publicURL, "/") + path
}

// SignedRequest returns a server-side request (as httptest.NewRequest) for
// POST path with params form-encoded, signed for publicURL + path: the
// request Twilio would send to a handler.
func SignedRequest(authToken, publicURL, path string, params url.Values) *http.Request {
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(params.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set(SignatureHeader, Sign(authToken, SignedURL(publicURL, path), params))
	return r
}

// NewSignedRequest returns a client request that POSTs params to serverURL +
// path, signed as Twilio signs a webhook it sends to publicURL + path (the
// server runs behind publicURL, e.g. an ngrok origin, and listens at
// serverURL).
func NewSignedRequest(ctx context.Context, serverURL, authToken, publicURL, path string, params url.Values) (*http.Request, error) {
	target := strings.TrimRight(serverURL, "/") + path
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(params.Encode()))
	if err != nil {
		return nil, fmt.Errorf("twimltest: request %s: %w", target, err)
	}
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set(SignatureHeader, Sign(authToken, SignedURL(publicURL, path), params))
	return r, nil
}

// StreamHeader returns the handshake header Twilio sends when it opens the
// media stream websocket at wssURL (the <Stream url>, e.g.
// wss://bridge.example.com/twilio/stream).
func StreamHeader(authToken, wssURL string) http.Header {
	h := http.Header{}
	h.Set(SignatureHeader, Sign(authToken, wssURL, nil))
	return h
}
