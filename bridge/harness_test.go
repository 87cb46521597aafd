package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/internal/testwait"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiliotest"
	"github.com/vivi/bridge/usage"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// session.Tokens is what cmd passes as Tokens.
var _ Tokens = (*session.Tokens)(nil)

const (
	testAuthToken = "token123"
	testAccount   = "ACtest"
	testSignURL   = "wss://bridge.example.com/twilio/stream"
	testChannel   = "ch-acme"
	testFrom      = "sip:+15551234@pbx.example.com"
	waitLimit     = 10 * time.Second // generous: -race on a 2-core machine
)

// memSessions is an in-memory Sessions (deep copies, like a real store).
type memSessions struct {
	mu sync.Mutex
	m  map[string]*session.Session
}

func clone(s *session.Session) *session.Session {
	b, _ := json.Marshal(s)
	var c session.Session
	_ = json.Unmarshal(b, &c)
	return &c
}

func (ms *memSessions) Session(_ context.Context, sid string) (*session.Session, error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	s, ok := ms.m[sid]
	if !ok {
		return nil, session.ErrNotFound
	}
	return clone(s), nil
}

func (ms *memSessions) UpdateSession(_ context.Context, sid string, fn func(*session.Session) error) (*session.Session, error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	s, ok := ms.m[sid]
	if !ok {
		return nil, session.ErrNotFound
	}
	c := clone(s)
	if err := fn(c); err != nil {
		return nil, err
	}
	ms.m[sid] = c
	return clone(c), nil
}

func (ms *memSessions) put(s *session.Session) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	ms.m[s.CallSID] = clone(s)
}

func (ms *memSessions) get(sid string) *session.Session {
	s, _ := ms.Session(context.Background(), sid)
	return s
}

// memClaims is a one-time-use TokenClaimer.
type memClaims struct {
	mu   sync.Mutex
	used map[string]bool
}

func (mc *memClaims) ClaimToken(_ context.Context, id string, _ time.Duration) (bool, error) {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	if mc.used[id] {
		return false, nil
	}
	mc.used[id] = true
	return true, nil
}

// signatureCheck validates the handshake like Twilio signs it: the wss URL
// with no parameters, also with a trailing slash.
type signatureCheck struct{}

func (signatureCheck) ValidateStream(r *http.Request) bool {
	sig := r.Header.Get(twiliotest.SignatureHeader)
	return sig != "" && (sig == twiliotest.SignForm(testAuthToken, testSignURL, nil) ||
		sig == twiliotest.SignForm(testAuthToken, testSignURL+"/", nil))
}

// agentsFunc adapts a func to Agents.
type agentsFunc func(ctx context.Context, channelID, agentID string) (Agent, error)

func (f agentsFunc) CallAgent(ctx context.Context, channelID, agentID string) (Agent, error) {
	return f(ctx, channelID, agentID)
}

// restCalls hangs calls up through the Twilio REST fake, like transfer.Twilio.
type restCalls struct{ rest *twiliotest.REST }

func (rc restCalls) Hangup(ctx context.Context, callSID string) error {
	u := rc.rest.URL() + "/2010-04-01/Accounts/" + testAccount + "/Calls/" + callSID + ".json"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(url.Values{"Status": {"completed"}}.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(testAccount, testAuthToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("hangup: HTTP %d", resp.StatusCode)
	}
	return nil
}

// recTransfers records transfer requests.
type recTransfers struct {
	mu   sync.Mutex
	reqs []TransferRequest
	err  error
}

func (rt *recTransfers) Transfer(_ context.Context, req TransferRequest) error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.reqs = append(rt.reqs, req)
	return rt.err
}

func (rt *recTransfers) requests() []TransferRequest {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return append([]TransferRequest(nil), rt.reqs...)
}

// harnessOpts tune one test's bridge.
type harnessOpts struct {
	model      realtimetest.Options
	agent      Agent
	agentDelay time.Duration
	agents     Agents        // replaces the default agent look-up when set
	dialDelay  time.Duration // before the model's TCP connect
	transfers  Transferer
	migrator   Migrator
	sessions   *memSessions // shared with another harness (a second pod) when set
	noCalls    bool
	cfg        func(*Config)
}

// harness is the real Server on 127.0.0.1:0 with the fakes around it.
type harness struct {
	t        *testing.T
	srv      *Server
	url      string // ws://127.0.0.1:port/twilio/stream
	model    *realtimetest.Server
	rest     *twiliotest.REST
	sessions *memSessions
	claims   *memClaims
	tokens   *session.Tokens
	logs     *observer.ObservedLogs
	reg      *prometheus.Registry
}

func newHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	tokens, err := session.NewTokens([]byte(strings.Repeat("s", session.MinTokenSecret)), 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	h := &harness{
		t: t, logs: logs, tokens: tokens,
		model:    realtimetest.NewServer(o.model),
		rest:     twiliotest.NewREST(twiliotest.RESTOptions{AccountSID: testAccount, AuthToken: testAuthToken}),
		sessions: &memSessions{m: map[string]*session.Session{}},
		claims:   &memClaims{used: map[string]bool{}},
		reg:      prometheus.NewRegistry(),
	}
	t.Cleanup(h.model.Close)
	t.Cleanup(h.rest.Close)
	if o.sessions != nil {
		h.sessions = o.sessions
	}
	agent := o.agent
	if agent.Instructions == "" {
		agent = testAgent()
	}
	cfg := Config{
		PodID: "pod-a", RealtimeURL: h.model.URL(), APIKey: realtimetest.DefaultAPIKey,
		RealtimeModel: "gpt-realtime",
	}
	if o.dialDelay > 0 {
		cfg.RealtimeDialer = &websocket.Dialer{
			HandshakeTimeout: 5 * time.Second,
			NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				select {
				case <-time.After(o.dialDelay):
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			},
		}
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	deps := Deps{
		Sessions: h.sessions, Tokens: tokens, Claims: h.claims, Handshake: signatureCheck{},
		Agents: agentsFunc(func(ctx context.Context, channelID, agentID string) (Agent, error) {
			if channelID != testChannel || agentID != agent.ID {
				return Agent{}, fmt.Errorf("no agent %s/%s", channelID, agentID)
			}
			select {
			case <-time.After(o.agentDelay):
			case <-ctx.Done():
				return Agent{}, ctx.Err()
			}
			return agent, nil
		}),
		Transfers: o.transfers, Migrator: o.migrator,
		Logger: zap.New(core), Registerer: h.reg, Usage: usage.NewTokens(h.reg),
	}
	if o.agents != nil {
		deps.Agents = o.agents
	}
	if !o.noCalls {
		deps.Calls = restCalls{rest: h.rest}
	}
	h.srv, err = NewServer(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	h.srv.Register(mux)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_ = h.srv.Shutdown(ctx)
	})
	h.url = "ws" + strings.TrimPrefix(hs.URL, "http") + StreamPath
	return h
}

// newSession stores a ringing session for a new call and returns its SID
// and a stream token.
func (h *harness) newSession(mod func(*session.Session)) (callSID, token string) {
	h.t.Helper()
	callSID = twiliotest.NewCallSID()
	s := session.New(callSID, testChannel, testAgent().ID, time.Now())
	s.From = testFrom
	if mod != nil {
		mod(s)
	}
	h.sessions.put(s)
	token, _, err := h.tokens.Issue(callSID, testChannel, testAgent().ID, time.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	return callSID, token
}

// dial opens a Twilio media stream for callSID with token.
func (h *harness) dial(callSID, token string) *twiliotest.Call {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := twiliotest.Dial(ctx, twiliotest.CallConfig{
		URL: h.url, SignURL: testSignURL, AuthToken: testAuthToken, AccountSID: testAccount,
		CallSID: callSID, Parameters: map[string]string{"token": token},
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() {
		c.Close()
		<-c.Done()
	})
	return c
}

// call starts a new call and returns it with its model connection.
func (h *harness) call(mod func(*session.Session)) (*twiliotest.Call, *realtimetest.Conn) {
	h.t.Helper()
	sid, tok := h.newSession(mod)
	c := h.dial(sid, tok)
	return c, h.nextConn()
}

func (h *harness) nextConn() *realtimetest.Conn {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	mc, err := h.model.NextConn(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	return mc
}

// waitEvent waits for the n-th client event of typ on mc.
func waitEvent(t *testing.T, mc *realtimetest.Conn, typ string, n int) realtimetest.ClientEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	ev, err := mc.WaitEvent(ctx, typ, n)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// waitFor waits until cond, state read from the fakes, holds or waitLimit
// passes (see testwait.Until; prefer a fake's Wait method where it has one).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.Until(t, waitLimit, what, cond)
}

// waitMessages waits until the bridge has sent call at least n messages for
// which pred holds (nil: any message) and returns every message received
// so far, in order. It wakes on the fake's own notification
// (Call.WaitMessage, which shows each message to pred once, in order), so
// a test asserting on messages waits for those messages, not for bytes.
func waitMessages(t *testing.T, call *twiliotest.Call, n int, pred func(twiliotest.Message) bool) []twiliotest.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	seen := 0
	if n > 0 {
		if _, err := call.WaitMessage(ctx, func(m twiliotest.Message) bool {
			if pred == nil || pred(m) {
				seen++
			}
			return seen >= n
		}); err != nil {
			t.Fatalf("waiting for %d messages at Twilio (%d seen): %v", n, seen, err)
		}
	}
	return call.Messages()
}

// isMark selects the mark messages for waitMessages.
func isMark(m twiliotest.Message) bool { return m.Event == "mark" }

// waitEnded waits for the session to end and returns it.
func (h *harness) waitEnded(callSID string) *session.Session {
	h.t.Helper()
	var s *session.Session
	waitFor(h.t, "session "+callSID+" to end", func() bool {
		s = h.sessions.get(callSID)
		return s != nil && s.State == session.Ended
	})
	return s
}

// waitLog waits for a log line with msg at level or above.
func (h *harness) waitLog(level zapcore.Level, msg string) observer.LoggedEntry {
	h.t.Helper()
	var e observer.LoggedEntry
	waitFor(h.t, "log line "+msg, func() bool {
		for _, l := range h.logs.All() {
			if l.Level >= level && strings.Contains(l.Message, msg) {
				e = l
				return true
			}
		}
		return false
	})
	return e
}

// hasEvent reports whether the session's timeline has an event of typ.
func hasEvent(s *session.Session, typ string) (session.Event, bool) {
	for _, e := range s.Timeline {
		if e.Type == typ {
			return e, true
		}
	}
	return session.Event{}, false
}

// counter reads a counter of the registry (name with labels rendered as
// name{k="v"}), or -1.
func (h *harness) counter(name, label, value string) float64 {
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					match = true
				}
			}
			if !match {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}
