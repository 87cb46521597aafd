// Package twiml owns the Twilio side of a call's HTTP life: TwiML documents,
// X-Twilio-Signature validation, and the webhook endpoints that answer or
// refuse a call (POST /twilio/voice) and follow its lifecycle (stream status,
// call status, the end of <Connect>).
//
// The package imports only session and outside libraries; what it needs from
// channels, the store, stream tokens and the bridge it declares below as
// small interfaces that cmd wires.
package twiml

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"go.uber.org/zap"

	"github.com/vivi/bridge/session"
)

// Paths of the Twilio endpoints (the outside contract, DESIGN.md section 2).
const (
	VoicePath        = "/twilio/voice"
	StreamPath       = "/twilio/stream"
	StreamStatusPath = "/twilio/stream-status"
	CallStatusPath   = "/twilio/call-status"
	ConnectEndedPath = "/twilio/connect-ended"
	ReferStatusPath  = "/twilio/refer-status"
)

// DefaultMaxCalls is the concurrent-call limit used when Config.MaxCalls is not positive.
const DefaultMaxCalls = 500

// MaxBodyBytes bounds the body of a Twilio webhook; larger bodies get 413.
const MaxBodyBytes = 64 << 10

// storeTimeout bounds the store and routing work of one webhook, well inside
// Twilio's 15 s webhook timeout, so a slow store still gets an answer out.
const storeTimeout = 5 * time.Second

// Route is the channel and agent that answer a call.
type Route struct {
	ChannelID string
	AgentID   string
}

// Router matches a call to a channel by the INVITE's source IP and the
// dialled extension. A refusal is an error implementing Rejection; any other
// error means routing could not be decided (store down).
type Router interface {
	Route(ctx context.Context, sourceIP, extension string) (Route, error)
}

// Rejection is an error refusing a call; RejectReason is the logged reason
// code (unknown_source_ip, unknown_extension, no_agent, agent_not_realtime).
type Rejection interface {
	error
	RejectReason() string
}

// Sessions loads and saves call sessions. Session and UpdateSession return an
// error wrapping session.ErrNotFound for an unknown call SID. UpdateSession
// applies fn to the stored session atomically (it may run fn again after a
// conflict) and saves it when fn returns nil; an error from fn is returned
// (wrapped or not) and nothing is written. CreateSession fails when the call
// SID is taken; any error will do, the handler looks the session up again.
type Sessions interface {
	CreateSession(ctx context.Context, s *session.Session) error
	UpdateSession(ctx context.Context, callSID string, fn func(*session.Session) error) (*session.Session, error)
	Session(ctx context.Context, callSID string) (*session.Session, error)
}

// TokenIssuer signs stream tokens (session.Tokens implements it). Sign must
// be deterministic: the claims of an issued token sign that same token.
type TokenIssuer interface {
	Issue(callSID, channelID, agentID string, now time.Time) (string, session.Claims, error)
	Sign(c session.Claims) (string, error)
}

// CallCounter reports this pod's live calls.
type CallCounter interface {
	ActiveCalls() int
}

// StreamProber asks the pod podID, which the session says holds the call's
// media stream, whether that stream (streamSID, when not empty) is really
// live: it saw Twilio send on it after the question. An error means no
// answer (the pod is gone, or did not answer in time).
type StreamProber interface {
	ProbeStream(ctx context.Context, podID, callSID, streamSID string) (bool, error)
}

// Config configures a Handler.
type Config struct {
	// PublicURL is the public origin Twilio calls (PUBLIC_URL), with or
	// without a trailing slash.
	PublicURL string
	// MaxCalls is this pod's concurrent-call limit: open streams plus calls
	// answered here whose stream has not started (Answered); at the limit
	// new calls get <Reject reason="busy"/>. Not positive means DefaultMaxCalls.
	MaxCalls int
	// Logger receives one line per decision; nil means no logging.
	Logger *zap.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Deps are the Handler's collaborators. All are required except Calls (nil
// counts no live calls) and Answered (nil: the handler keeps its own, and
// calls stop counting only at AnswerTimeout).
type Deps struct {
	Validator *Validator
	Router    Router
	Sessions  Sessions
	Tokens    TokenIssuer
	Calls     CallCounter
	// Answered counts the calls answered but not streaming yet; cmd wires
	// its Started to the bridge's token claims.
	Answered *Answered
	// Prober, when set, is asked before connect-ended reconnects a
	// streaming call; a stream its pod says is live makes the callback
	// stale. nil reconnects without asking.
	Prober StreamProber
}

// Handler serves the Twilio webhook endpoints.
type Handler struct {
	public    publicURL
	maxCalls  int
	log       *zap.Logger
	now       func() time.Time
	validator *Validator
	router    Router
	sessions  Sessions
	tokens    TokenIssuer
	calls     CallCounter
	answered  *Answered
	prober    StreamProber
}

// NewHandler returns the webhook handler. It fails on a bad PublicURL or a
// missing dependency.
func NewHandler(cfg Config, deps Deps) (*Handler, error) {
	pu, err := parsePublicURL(cfg.PublicURL)
	if err != nil {
		return nil, fmt.Errorf("twiml: handler: %w", err)
	}
	if deps.Validator == nil || deps.Router == nil || deps.Sessions == nil || deps.Tokens == nil {
		return nil, errors.New("twiml: handler: Validator, Router, Sessions and Tokens are required")
	}
	h := &Handler{
		public: pu, maxCalls: cfg.MaxCalls, log: cfg.Logger, now: cfg.Now,
		validator: deps.Validator, router: deps.Router, sessions: deps.Sessions,
		tokens: deps.Tokens, calls: deps.Calls, answered: deps.Answered, prober: deps.Prober,
	}
	if h.maxCalls <= 0 {
		h.maxCalls = DefaultMaxCalls
	}
	if h.log == nil {
		h.log = zap.NewNop()
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.calls == nil {
		h.calls = noCalls{}
	}
	if h.answered == nil {
		h.answered = NewAnswered(AnswerTimeout, h.now)
	}
	return h, nil
}

// Register adds the Twilio endpoints to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST "+VoicePath, h.voice)
	mux.HandleFunc("POST "+StreamStatusPath, h.streamStatus)
	mux.HandleFunc("POST "+CallStatusPath, h.callStatus)
	mux.HandleFunc("POST "+ConnectEndedPath, h.connectEnded)
	mux.HandleFunc("POST "+ReferStatusPath, h.referStatus)
}

// readForm reads, authenticates and parses a Twilio form post and returns
// its parameters and CallSid. When it returns false it has answered: 413 for
// a body over MaxBodyBytes, 403 for a bad or missing signature (before
// anything else is looked at), 400 for a body that is not a form or has no
// valid CallSid.
func (h *Handler) readForm(w http.ResponseWriter, r *http.Request) (url.Values, string, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return nil, "", false
		}
		http.Error(w, "cannot read request body", http.StatusBadRequest)
		return nil, "", false
	}
	if !h.validator.ValidateForm(r, body) {
		h.log.Warn("twilio request refused", zap.String("path", r.URL.Path), zap.String("reason", "bad_signature"))
		http.Error(w, "invalid Twilio signature", http.StatusForbidden)
		return nil, "", false
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		http.Error(w, "body is not a form", http.StatusBadRequest)
		return nil, "", false
	}
	sid := form.Get("CallSid")
	if !validCallSID(sid) {
		http.Error(w, "missing or malformed CallSid", http.StatusBadRequest)
		return nil, "", false
	}
	return form, sid, true
}

// validCallSID accepts 1-64 ASCII letters, digits, '-' and '_' (Twilio's are
// CA + 32 hex; fakes use shorter ones). The SID becomes a store key and a log
// field, so nothing else gets through.
func validCallSID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// ConnectParam is the query parameter of the <Connect action> URL naming the
// connect generation (the id of the stream token answered with it). Twilio
// signs the whole URL, so the value is as authentic as the callback's form.
const ConnectParam = "connect"

// newConnect issues the claims of a fresh <Connect><Stream> for s and makes
// it the call's current connect generation (s.Connect). Only the claims are
// kept; connectStream signs them.
func (h *Handler) newConnect(s *session.Session, now time.Time) error {
	_, c, err := h.tokens.Issue(s.CallSID, s.ChannelID, s.AgentID, now)
	if err != nil {
		return fmt.Errorf("twiml: issue stream token for %s: %w", s.CallSID, err)
	}
	s.Connect = &c
	return nil
}

// connectStream answers the <Connect><Stream> of the call's current connect
// generation: the same document, with the same token, every time it is
// asked for. The token goes only into the document, never into a log.
func (h *Handler) connectStream(s *session.Session) (string, error) {
	if s.Connect == nil {
		return "", fmt.Errorf("twiml: call %s has no current connect", s.CallSID)
	}
	token, err := h.tokens.Sign(*s.Connect)
	if err != nil {
		return "", fmt.Errorf("twiml: sign stream token for %s: %w", s.CallSID, err)
	}
	action := h.public.join(ConnectEndedPath) + "?" + url.Values{ConnectParam: {s.Connect.ID}}.Encode()
	return ConnectStream(action, h.public.streamURL(), h.public.join(StreamStatusPath), map[string]string{"token": token})
}

func writeTwiML(w http.ResponseWriter, doc string) {
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, doc)
}

// clip bounds a request value copied into a log line or a session record.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 { // cut on a rune boundary
		n--
	}
	return s[:n]
}

type noCalls struct{}

func (noCalls) ActiveCalls() int { return 0 }
