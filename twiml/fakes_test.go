package twiml

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiml/twimltest"
)

// fakeRouter routes with its function field and counts calls.
type fakeRouter struct {
	route func(ctx context.Context, sourceIP, extension string) (Route, error)
	calls atomic.Int32
}

func (f *fakeRouter) Route(ctx context.Context, sourceIP, extension string) (Route, error) {
	f.calls.Add(1)
	return f.route(ctx, sourceIP, extension)
}

// rejection is a refusal as channel.RejectError is one.
type rejection string

func (r rejection) Error() string        { return "call rejected: " + string(r) }
func (r rejection) RejectReason() string { return string(r) }

// fakeIssuer issues with its function field and counts the tokens issued;
// Sign re-signs with the real signer (sign).
type fakeIssuer struct {
	issue func(callSID, channelID, agentID string, now time.Time) (string, session.Claims, error)
	sign  func(c session.Claims) (string, error)
	calls atomic.Int32
}

func (f *fakeIssuer) Sign(c session.Claims) (string, error) { return f.sign(c) }

func (f *fakeIssuer) Issue(callSID, channelID, agentID string, now time.Time) (string, session.Claims, error) {
	f.calls.Add(1)
	return f.issue(callSID, channelID, agentID, now)
}

// fakeCalls reports live calls with its function field and counts calls.
type fakeCalls struct {
	active func() int
	calls  atomic.Int32
}

func (f *fakeCalls) ActiveCalls() int {
	f.calls.Add(1)
	return f.active()
}

// memSessions is a map-backed Sessions that copies sessions in and out like
// a real store. The hook fields, when set, replace an operation's result.
type memSessions struct {
	mu       sync.Mutex
	byID     map[string]*session.Session
	ops      atomic.Int32
	creates  atomic.Int32
	writes   atomic.Int32 // updates that stored a session
	createFn func(s *session.Session) error
	updateFn func(callSID string) error
	getFn    func(callSID string) error
}

func newMemSessions() *memSessions { return &memSessions{byID: map[string]*session.Session{}} }

func copySession(s *session.Session) *session.Session {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	var c session.Session
	if err := json.Unmarshal(b, &c); err != nil {
		panic(err)
	}
	return &c
}

func (m *memSessions) CreateSession(_ context.Context, s *session.Session) error {
	m.ops.Add(1)
	m.creates.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.createFn != nil {
		if err := m.createFn(s); err != nil {
			return err
		}
	}
	if _, ok := m.byID[s.CallSID]; ok {
		return fmt.Errorf("mem: create %s: exists", s.CallSID)
	}
	m.byID[s.CallSID] = copySession(s)
	return nil
}

func (m *memSessions) UpdateSession(_ context.Context, callSID string, fn func(*session.Session) error) (*session.Session, error) {
	m.ops.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.updateFn != nil {
		if err := m.updateFn(callSID); err != nil {
			return nil, err
		}
	}
	cur, ok := m.byID[callSID]
	if !ok {
		return nil, fmt.Errorf("mem: update %s: %w", callSID, session.ErrNotFound)
	}
	s := copySession(cur)
	if err := fn(s); err != nil {
		return nil, err
	}
	m.byID[callSID] = copySession(s)
	m.writes.Add(1)
	return s, nil
}

func (m *memSessions) Session(_ context.Context, callSID string) (*session.Session, error) {
	m.ops.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.getFn != nil {
		if err := m.getFn(callSID); err != nil {
			return nil, err
		}
	}
	cur, ok := m.byID[callSID]
	if !ok {
		return nil, fmt.Errorf("mem: get %s: %w", callSID, session.ErrNotFound)
	}
	return copySession(cur), nil
}

// put stores s directly (test setup).
func (m *memSessions) put(s *session.Session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.byID[s.CallSID] = copySession(s)
}

// get returns the stored session or fails the test.
func (m *memSessions) get(t *testing.T, callSID string) *session.Session {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.byID[callSID]
	if !ok {
		t.Fatalf("no session stored for %s", callSID)
	}
	return copySession(s)
}

func (m *memSessions) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.byID)
}

// harness is a Handler on a mux with fakes around it.
type harness struct {
	publicURL string
	now       time.Time
	mux       *http.ServeMux
	router    *fakeRouter
	sessions  *memSessions
	tokens    *session.Tokens
	issuer    *fakeIssuer
	calls     *fakeCalls
	answered  *Answered
	logs      *observer.ObservedLogs
	handler   *Handler
}

const (
	testChannel = "ch-front"
	testAgent   = "ag-reception"
	testIP      = "203.0.113.7"
	testExt     = "1001"
	maxCalls    = 3
)

var errStoreDown = errors.New("redis: connection refused")

func newHarness(t *testing.T, publicURL string, validate bool) *harness {
	t.Helper()
	return newHarnessWith(t, publicURL, validate, nil)
}

// newHarnessWith is newHarness with a StreamProber wired.
func newHarnessWith(t *testing.T, publicURL string, validate bool, prober StreamProber) *harness {
	t.Helper()
	toks, err := session.NewTokens([]byte("0123456789abcdef0123456789abcdef"), 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.DebugLevel)
	x := &harness{
		publicURL: publicURL,
		now:       time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		mux:       http.NewServeMux(),
		router: &fakeRouter{route: func(_ context.Context, ip, ext string) (Route, error) {
			if ip != testIP {
				return Route{}, rejection("unknown_source_ip")
			}
			if ext != testExt {
				return Route{}, rejection("unknown_extension")
			}
			return Route{ChannelID: testChannel, AgentID: testAgent}, nil
		}},
		sessions: newMemSessions(),
		tokens:   toks,
		issuer:   &fakeIssuer{issue: toks.Issue, sign: toks.Sign},
		calls:    &fakeCalls{active: func() int { return 0 }},
		logs:     logs,
	}
	x.answered = NewAnswered(AnswerTimeout, func() time.Time { return x.now })
	v, err := NewValidator(testAuthToken, publicURL, validate)
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHandler(
		Config{PublicURL: publicURL, MaxCalls: maxCalls, Logger: zap.New(core), Now: func() time.Time { return x.now }},
		Deps{Validator: v, Router: x.router, Sessions: x.sessions, Tokens: x.issuer, Calls: x.calls, Answered: x.answered,
			Prober: prober},
	)
	if err != nil {
		t.Fatal(err)
	}
	h.Register(x.mux)
	x.handler = h
	return x
}

// post sends params to path signed as Twilio would and returns the response.
func (x *harness) post(path string, params url.Values) *httptest.ResponseRecorder {
	return x.serve(twimltest.SignedRequest(testAuthToken, x.publicURL, path, params))
}

func (x *harness) serve(r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	x.mux.ServeHTTP(w, r)
	return w
}

// untouched fails the test if any dependency was used.
func (x *harness) untouched(t *testing.T) {
	t.Helper()
	if n := x.router.calls.Load() + x.sessions.ops.Load() + x.issuer.calls.Load() + x.calls.calls.Load(); n != 0 {
		t.Fatalf("dependencies were used %d times (router %d, sessions %d, tokens %d, calls %d)", n,
			x.router.calls.Load(), x.sessions.ops.Load(), x.issuer.calls.Load(), x.calls.calls.Load())
	}
}

// voiceParams is a SIP Domain voice webhook for the test channel.
func voiceParams(callSID string) url.Values {
	return url.Values{
		"AccountSid": {"ACtest"}, "ApiVersion": {"2010-04-01"}, "CallSid": {callSID},
		"CallStatus": {"ringing"}, "Direction": {"inbound"},
		"From":        {"sip:+14155550100@pbx.example.com"},
		"To":          {"sip:" + testExt + "@vivi.sip.twilio.com;transport=tls"},
		"SipSourceIp": {testIP}, "SipDomain": {"vivi.sip.twilio.com"}, "SipCallId": {"abc@pbx"},
	}
}

// loggedReasons returns the reason field of every log line about callSID.
func (x *harness) loggedReasons(callSID string) []string {
	var out []string
	for _, e := range x.logs.All() {
		m := e.ContextMap()
		if m["call_sid"] == callSID {
			out = append(out, fmt.Sprint(m["reason"]))
		}
	}
	return out
}
