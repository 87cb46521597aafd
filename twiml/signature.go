package twiml

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/twilio/twilio-go/client"
)

// SignatureHeader is the header carrying Twilio's request signature.
const SignatureHeader = "X-Twilio-Signature"

// Validator checks X-Twilio-Signature on webhooks and on the media stream's
// websocket handshake. It is safe for concurrent use.
type Validator struct {
	rv      client.RequestValidator
	public  publicURL
	enabled bool
}

// NewValidator returns a Validator for the account's auth token and the
// public origin Twilio calls (PUBLIC_URL, with or without a trailing slash).
// When enabled is false every request passes (TWILIO_VALIDATE_SIGNATURES=false,
// for local experiments only; the caller warns about it).
func NewValidator(authToken, publicURL string, enabled bool) (*Validator, error) {
	pu, err := parsePublicURL(publicURL)
	if err != nil {
		return nil, fmt.Errorf("twiml: validator: %w", err)
	}
	if enabled && authToken == "" {
		return nil, errors.New("twiml: validator: auth token is required when signatures are validated")
	}
	return &Validator{rv: client.NewRequestValidator(authToken), public: pu, enabled: enabled}, nil
}

// Enabled reports whether signatures are checked.
func (v *Validator) Enabled() bool { return v.enabled }

// ValidateForm reports whether r, whose form body is body (already read),
// carries a valid signature for PUBLIC_URL + r.URL.RequestURI() and the
// body's parameters. Twilio signs the URL it was configured with, so the
// public origin is used, never r.Host (the pod is behind a TLS proxy).
func (v *Validator) ValidateForm(r *http.Request, body []byte) bool {
	if !v.enabled {
		return true
	}
	sig := r.Header.Get(SignatureHeader)
	if sig == "" {
		return false
	}
	return v.rv.ValidateBody(v.public.base+r.URL.RequestURI(), body, sig)
}

// ValidateStream reports whether the websocket handshake r carries a valid
// signature for wss://{PUBLIC_URL host}{r.URL.Path} with no parameters, or
// for the same URL with a trailing slash (Twilio's advice for Media Streams
// handshakes).
func (v *Validator) ValidateStream(r *http.Request) bool {
	if !v.enabled {
		return true
	}
	sig := r.Header.Get(SignatureHeader)
	if sig == "" {
		return false
	}
	u := "wss://" + v.public.host + r.URL.EscapedPath()
	none := map[string]string{}
	return v.rv.Validate(u, none, sig) || v.rv.Validate(u+"/", none, sig)
}

// publicURL is PUBLIC_URL taken apart once.
type publicURL struct {
	base string // scheme://host[:port][/path] without a trailing slash
	host string // host[:port]
}

func parsePublicURL(s string) (publicURL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return publicURL{}, fmt.Errorf("public URL %q: %w", s, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return publicURL{}, fmt.Errorf("public URL %q: want an absolute http(s) origin without user, query or fragment", s)
	}
	return publicURL{base: strings.TrimRight(s, "/"), host: u.Host}, nil
}

// streamURL is the <Stream url>: wss:// on the public host (Twilio supports
// only wss). A path in PUBLIC_URL is kept for HTTP callbacks only.
func (p publicURL) streamURL() string { return "wss://" + p.host + StreamPath }

// join joins the public origin and an absolute path without a double slash.
func (p publicURL) join(path string) string { return p.base + path }
