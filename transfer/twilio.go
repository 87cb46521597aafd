// Package transfer hands a live call back to the customer's PBX with a SIP
// REFER and controls live calls through the Twilio REST API.
package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	twilio "github.com/twilio/twilio-go"
	"github.com/twilio/twilio-go/client"
	openapi "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/vivi/bridge/internal/redact"
)

// DefaultAPIBaseURL is Twilio's REST API origin.
const DefaultAPIBaseURL = "https://api.twilio.com"

// TwilioConfig configures the Twilio REST client.
type TwilioConfig struct {
	AccountSID string
	AuthToken  string
	// BaseURL replaces https://api.twilio.com (TWILIO_API_BASE_URL), for fakes.
	BaseURL string
	// Timeout bounds each REST request; default 10 s.
	Timeout time.Duration
}

// Twilio updates live calls through the Twilio REST API (twilio-go UpdateCall).
type Twilio struct {
	api    *openapi.ApiService
	redact *redact.Redactor // Twilio's answers may echo our request, auth included
}

// NewTwilio returns a REST client for live-call updates (see NewRESTClient).
func NewTwilio(cfg TwilioConfig) (*Twilio, error) {
	rc, err := NewRESTClient(cfg)
	if err != nil {
		return nil, err
	}
	return &Twilio{api: rc.Api, redact: redact.New(cfg.AuthToken)}, nil
}

// NewRESTClient returns a twilio-go client built the way this project needs
// it, for any Twilio REST API it calls. A BaseURL other than Twilio's sends
// every request there instead (twilio-go has no base URL setting, so the
// transport rewrites scheme and host). Each request is bounded by
// cfg.Timeout and its answer is read whole (see bufferedTransport).
func NewRESTClient(cfg TwilioConfig) (*twilio.RestClient, error) {
	if cfg.AccountSID == "" || cfg.AuthToken == "" {
		return nil, errors.New("twilio: account SID and auth token are required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	var rt http.RoundTripper = http.DefaultTransport
	if cfg.BaseURL != "" && strings.TrimRight(cfg.BaseURL, "/") != DefaultAPIBaseURL {
		u, err := url.Parse(cfg.BaseURL)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return nil, fmt.Errorf("twilio: bad API base URL %q", cfg.BaseURL)
		}
		rt = rewriteHost{scheme: u.Scheme, host: u.Host, next: http.DefaultTransport}
	}
	c := &client.Client{
		Credentials: client.NewCredentials(cfg.AccountSID, cfg.AuthToken),
		HTTPClient: &http.Client{
			// The timeout lives in the transport, which also reads every
			// answer whole: twilio-go never closes the body of an error
			// answer, which would hold a connection (and, with
			// http.Client.Timeout, a goroutine) until the timeout.
			Transport: bufferedTransport{next: rt, timeout: cfg.Timeout},
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
	}
	c.SetAccountSid(cfg.AccountSID)
	return twilio.NewRestClientWithParams(twilio.ClientParams{Client: c}), nil
}

// Hangup ends a live call (UpdateCall with Status=completed).
func (t *Twilio) Hangup(ctx context.Context, callSID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p := (&openapi.UpdateCallParams{}).SetStatus("completed")
	if _, err := t.api.UpdateCall(callSID, p); err != nil {
		return t.restError("hang up "+callSID, err)
	}
	return nil
}

// UpdateTwiML replaces the TwiML a live call is executing.
func (t *Twilio) UpdateTwiML(ctx context.Context, callSID, twiml string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p := (&openapi.UpdateCallParams{}).SetTwiml(twiml)
	if _, err := t.api.UpdateCall(callSID, p); err != nil {
		return t.restError("update call "+callSID, err)
	}
	return nil
}

// restError is a failed REST request whose text is safe to log and store:
// Twilio's error body (or a proxy's, or a fake's) is remote text that may
// echo the request's Authorization header, so its message is scrubbed and
// clipped here, once, for every caller. errors.As still reaches twilio-go's
// *client.TwilioRestError for its status and code.
func (t *Twilio) restError(op string, err error) error {
	return &scrubbedError{msg: "twilio: " + op + ": " + t.redact.Error(err), err: err}
}

type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }

// maxAnswer bounds a REST answer; Twilio's are small JSON documents.
const maxAnswer = 1 << 20

// bufferedTransport bounds each request by timeout and hands back the answer
// read whole and closed, so nothing stays open whatever the caller does with
// the body.
type bufferedTransport struct {
	next    http.RoundTripper
	timeout time.Duration
}

func (b bufferedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(req.Context(), b.timeout)
	defer cancel()
	resp, err := b.next.RoundTrip(req.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("twilio: read answer: %w", err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// rewriteHost sends requests meant for api.twilio.com to another origin.
type rewriteHost struct {
	scheme, host string
	next         http.RoundTripper
}

func (r rewriteHost) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.URL.Scheme, req.URL.Host, req.Host = r.scheme, r.host, r.host
	return r.next.RoundTrip(req)
}
