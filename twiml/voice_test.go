package twiml

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiml/twimltest"
)

// answeredToken checks an answer is the <Connect><Stream> for the harness's
// public host and returns its stream token.
func answeredToken(t *testing.T, w *httptest.ResponseRecorder, host string) string {
	t.Helper()
	token, _ := answered(t, w, host)
	return token
}

// answered checks an answer is the <Connect><Stream> for the harness's
// public host and returns its stream token and the path (with the query) of
// its <Connect action>, where Twilio posts when the stream ends. The action
// names the connect generation: the token's id.
func answered(t *testing.T, w *httptest.ResponseRecorder, host string) (token, action string) {
	t.Helper()
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "text/xml" {
		t.Fatalf("status %d, Content-Type %q, body %s", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
	connect := verb(t, w.Body.String())
	if connect.Name != "Connect" || len(connect.Children) != 1 {
		t.Fatalf("want <Connect><Stream>, got %s", w.Body)
	}
	stream := connect.Children[0]
	want := map[string]string{
		"action":         "https://" + host + "/twilio/connect-ended",
		"url":            "wss://" + host + "/twilio/stream",
		"statusCallback": "https://" + host + "/twilio/stream-status",
	}
	au, err := url.Parse(connect.Attrs["action"])
	if err != nil {
		t.Fatalf("action %q: %v", connect.Attrs["action"], err)
	}
	gen := au.Query().Get(ConnectParam)
	if len(au.Query()) != 1 || gen == "" {
		t.Errorf("action %q: want exactly the %s parameter", au, ConnectParam)
	}
	action = au.RequestURI()
	au.RawQuery = ""
	got := map[string]string{
		"action": au.String(), "url": stream.Attrs["url"], "statusCallback": stream.Attrs["statusCallback"],
	}
	for k := range want {
		if got[k] != want[k] {
			t.Errorf("%s = %q, want %q", k, got[k], want[k])
		}
	}
	if stream.Name != "Stream" || len(stream.Children) != 1 || stream.Children[0].Attrs["name"] != "token" {
		t.Fatalf("want one token <Parameter>, got %s", dump(stream))
	}
	token = stream.Children[0].Attrs["value"]
	if p, _, ok := strings.Cut(token, "."); ok {
		if b, err := base64.RawURLEncoding.DecodeString(p); err == nil {
			var c session.Claims
			if json.Unmarshal(b, &c) == nil && c.ID != gen {
				t.Errorf("action names generation %q, token is %q", gen, c.ID)
			}
		}
	}
	return token, action
}

func TestVoiceAnswersWithStream(t *testing.T) {
	for name, publicURL := range map[string]string{"no slash": "https://host.example", "trailing slash": "https://host.example/"} {
		t.Run(name, func(t *testing.T) {
			x := newHarness(t, publicURL, true)
			var routed [2]string
			route := x.router.route
			x.router.route = func(ctx context.Context, ip, ext string) (Route, error) {
				routed = [2]string{ip, ext}
				return route(ctx, ip, ext)
			}
			r := twimltest.SignedRequest(testAuthToken, publicURL, VoicePath, voiceParams("CA1"))
			r.RemoteAddr = "198.51.100.1:443" // Twilio's proxy, never the source
			token := answeredToken(t, x.serve(r), "host.example")

			if routed != [2]string{testIP, testExt} {
				t.Errorf("routed %v, want the signed SipSourceIp and the To extension", routed)
			}
			c, err := x.tokens.Verify(token, "CA1", x.now)
			if err != nil || c.ChannelID != testChannel || c.AgentID != testAgent {
				t.Fatalf("Verify = %+v, %v", c, err)
			}
			if _, err := x.tokens.Verify(token, "CA2", x.now); !errors.Is(err, session.ErrTokenCallSID) {
				t.Errorf("token accepted for another call: %v", err)
			}
			if _, err := x.tokens.Verify(token, "CA1", x.now.Add(x.tokens.TTL()+time.Second)); !errors.Is(err, session.ErrTokenExpired) {
				t.Errorf("token accepted after expiry: %v", err)
			}
			sig := strings.IndexByte(token, '.') + 1
			for _, i := range []int{0, sig} {
				if _, err := x.tokens.Verify(alter(token, i), "CA1", x.now); err == nil {
					t.Errorf("token with character %d altered accepted", i)
				}
			}

			s := x.sessions.get(t, "CA1")
			if s.State != session.Ringing || s.ChannelID != testChannel || s.AgentID != testAgent ||
				s.SourceIP != testIP || s.From != "sip:+14155550100@pbx.example.com" ||
				s.To != "sip:1001@vivi.sip.twilio.com;transport=tls" || !s.CreatedAt.Equal(x.now) {
				t.Errorf("stored session %+v", s)
			}
			if got := x.loggedReasons("CA1"); len(got) != 1 || got[0] != "answered" {
				t.Errorf("logged reasons %v, want [answered]", got)
			}
			for _, e := range x.logs.All() {
				if strings.Contains(fmt.Sprint(e.ContextMap()), token) || strings.Contains(e.Message, token) {
					t.Fatalf("token logged: %v", e)
				}
				if e.ContextMap()["channel_id"] != testChannel {
					t.Errorf("answer logged without channel_id: %v", e.ContextMap())
				}
			}
		})
	}
}

func alter(s string, i int) string {
	b := []byte(s)
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

func TestVoiceRefusals(t *testing.T) {
	tests := map[string]struct {
		edit      func(url.Values)
		route     func(context.Context, string, string) (Route, error) // nil keeps the harness router
		active    int
		reject    string // the <Reject reason>
		logged    string
		routerHit bool
	}{
		"missing SipSourceIp": {edit: func(p url.Values) { p.Del("SipSourceIp") }, reject: Rejected, logged: "unknown_source_ip"},
		"garbage SipSourceIp": {edit: func(p url.Values) { p.Set("SipSourceIp", "not-an-ip") }, reject: Rejected, logged: "unknown_source_ip"},
		"IP with port":        {edit: func(p url.Values) { p.Set("SipSourceIp", "203.0.113.7:5060") }, reject: Rejected, logged: "unknown_source_ip"},
		"IPv4 out of range":   {edit: func(p url.Values) { p.Set("SipSourceIp", "203.0.113.300") }, reject: Rejected, logged: "unknown_source_ip"},
		"IPv6 with zone":      {edit: func(p url.Values) { p.Set("SipSourceIp", "fe80::1%eth0") }, reject: Rejected, logged: "unknown_source_ip"},
		"source IP not on any channel": {edit: func(p url.Values) { p.Set("SipSourceIp", "192.0.2.1") },
			reject: Rejected, logged: "unknown_source_ip", routerHit: true},
		"To missing":     {edit: func(p url.Values) { p.Del("To") }, reject: Rejected, logged: "unknown_extension"},
		"To is tel:":     {edit: func(p url.Values) { p.Set("To", "tel:+14155550100") }, reject: Rejected, logged: "unknown_extension"},
		"To is E.164":    {edit: func(p url.Values) { p.Set("To", "sip:+14155550100@x;user=phone") }, reject: Rejected, logged: "unknown_extension"},
		"To has letters": {edit: func(p url.Values) { p.Set("To", "sip:front@x") }, reject: Rejected, logged: "unknown_extension"},
		"extension unlisted": {edit: func(p url.Values) { p.Set("To", "sip:2002@x") },
			reject: Rejected, logged: "unknown_extension", routerHit: true},
		"no agent": {route: func(context.Context, string, string) (Route, error) { return Route{}, rejection("no_agent") },
			reject: Rejected, logged: "no_agent", routerHit: true},
		"agent not realtime (wrapped)": {route: func(context.Context, string, string) (Route, error) {
			return Route{}, fmt.Errorf("channel: match: %w", rejection("agent_not_realtime"))
		}, reject: Rejected, logged: "agent_not_realtime", routerHit: true},
		"at the call limit": {active: maxCalls, reject: Busy, logged: "busy"},
		"over the limit":    {active: maxCalls + 5, reject: Busy, logged: "busy"},
		"store down while routing": {route: func(context.Context, string, string) (Route, error) { return Route{}, errStoreDown },
			reject: Busy, logged: "store_unavailable", routerHit: true},
		"router returns an empty route": {route: func(context.Context, string, string) (Route, error) { return Route{ChannelID: "c"}, nil },
			reject: Busy, logged: "store_unavailable", routerHit: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			x := newHarness(t, "https://host.example", true)
			if tc.route != nil {
				x.router.route = tc.route
			}
			x.calls.active = func() int { return tc.active }
			p := voiceParams("CA1")
			if tc.edit != nil {
				tc.edit(p)
			}
			w := x.post(VoicePath, p)
			wantRejected(t, w, tc.reject)
			if x.sessions.ops.Load() != 0 || x.issuer.calls.Load() != 0 {
				t.Errorf("refused call touched the store (%d) or issued a token (%d)", x.sessions.ops.Load(), x.issuer.calls.Load())
			}
			if hit := x.router.calls.Load() > 0; hit != tc.routerHit {
				t.Errorf("router called: %v, want %v", hit, tc.routerHit)
			}
			if got := x.loggedReasons("CA1"); len(got) != 1 || got[0] != tc.logged {
				t.Errorf("logged reasons %v, want [%s]", got, tc.logged)
			}
		})
	}
}

func wantRejected(t *testing.T, w *httptest.ResponseRecorder, reason string) {
	t.Helper()
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "text/xml" {
		t.Fatalf("status %d, Content-Type %q, body %s", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
	v := verb(t, w.Body.String())
	if v.Name != "Reject" || v.Attrs["reason"] != reason || len(v.Attrs) != 1 {
		t.Fatalf("want <Reject reason=%q/>, got %s", reason, w.Body)
	}
}

func TestVoiceSessionStoreFailures(t *testing.T) {
	t.Run("create fails", func(t *testing.T) {
		x := newHarness(t, "https://host.example", true)
		x.sessions.createFn = func(*session.Session) error { return errStoreDown }
		wantRejected(t, x.post(VoicePath, voiceParams("CA1")), Busy)
		if x.sessions.count() != 0 {
			t.Fatal("session stored")
		}
		if got := x.loggedReasons("CA1"); len(got) != 1 || got[0] != "store_unavailable" {
			t.Errorf("logged %v", got)
		}
	})
	t.Run("create loses a race with a retry", func(t *testing.T) {
		x := newHarness(t, "https://host.example", true)
		x.sessions.createFn = func(s *session.Session) error {
			x.sessions.byID[s.CallSID] = copySession(s) // the concurrent retry won
			return errors.New("mem: exists")
		}
		token := answeredToken(t, x.post(VoicePath, voiceParams("CA1")), "host.example")
		if _, err := x.tokens.Verify(token, "CA1", x.now); err != nil {
			t.Fatal(err)
		}
	})
	// The look-up fails but the create is taken (cmd's store holds it while
	// Redis is down): the call is answered.
	t.Run("look-up fails, create taken", func(t *testing.T) {
		x := newHarness(t, "https://host.example", true)
		x.sessions.getFn = func(string) error { return errStoreDown }
		token := answeredToken(t, x.post(VoicePath, voiceParams("CA1")), "host.example")
		if _, err := x.tokens.Verify(token, "CA1", x.now); err != nil {
			t.Fatal(err)
		}
		if x.sessions.count() != 1 {
			t.Fatal("session not created")
		}
	})
	t.Run("look-up and create fail", func(t *testing.T) {
		x := newHarness(t, "https://host.example", true)
		x.sessions.getFn = func(string) error { return errStoreDown }
		x.sessions.createFn = func(*session.Session) error { return errStoreDown }
		wantRejected(t, x.post(VoicePath, voiceParams("CA1")), Busy)
		if got := x.loggedReasons("CA1"); len(got) != 1 || got[0] != "store_unavailable" {
			t.Errorf("logged %v", got)
		}
	})
	t.Run("token cannot be issued", func(t *testing.T) {
		x := newHarness(t, "https://host.example", true)
		x.issuer.issue = func(string, string, string, time.Time) (string, session.Claims, error) {
			return "", session.Claims{}, errors.New("entropy")
		}
		wantRejected(t, x.post(VoicePath, voiceParams("CA1")), Busy)
	})
}

// A repeated webhook for a ringing call answers the same document with the
// same token (issue 9: it minted a new one-time token each time, so a
// replay collected tokens); a true retry still connects with it. One
// session, one token issued, and the session is not rewritten.
func TestVoiceWebhookRetry(t *testing.T) {
	x := newHarness(t, "https://host.example", true)
	w := x.post(VoicePath, voiceParams("CA1"))
	first := answeredToken(t, w, "host.example")
	doc := w.Body.String()
	stored := x.sessions.get(t, "CA1")
	for i := range 3 {
		x.now = x.now.Add(3 * time.Second)
		w := x.post(VoicePath, voiceParams("CA1"))
		if answeredToken(t, w, "host.example"); w.Body.String() != doc {
			t.Fatalf("retry %d answered\n%s\nfirst answer\n%s", i, w.Body, doc)
		}
	}
	c, err := x.tokens.Verify(first, "CA1", x.now)
	if err != nil || stored.Connect == nil || *stored.Connect != c {
		t.Fatalf("token %+v %v, stored connect %+v", c, err, stored.Connect)
	}
	if n := x.issuer.calls.Load(); n != 1 {
		t.Fatalf("%d tokens issued for one ringing call", n)
	}
	if x.sessions.count() != 1 || x.sessions.creates.Load() != 1 || x.sessions.writes.Load() != 0 {
		t.Fatalf("sessions %d, creates %d, writes %d", x.sessions.count(), x.sessions.creates.Load(), x.sessions.writes.Load())
	}
	if got := x.loggedReasons("CA1"); len(got) != 4 || got[1] != "webhook_retry" || got[3] != "webhook_retry" {
		t.Errorf("logged %v", got)
	}

	// Still ringing when the token has expired: the stream never came, and
	// nothing new is minted.
	x.now = x.now.Add(2 * time.Minute)
	wantRejected(t, x.post(VoicePath, voiceParams("CA1")), Rejected)
	if x.issuer.calls.Load() != 1 {
		t.Fatal("a token was issued for an expired ringing call")
	}

	// Past ringing, a replay of the webhook is refused and changes nothing.
	x.sessions.put(&session.Session{CallSID: "CA2", ChannelID: testChannel, AgentID: testAgent, State: session.Streaming})
	wantRejected(t, x.post(VoicePath, voiceParams("CA2")), Rejected)
	if s := x.sessions.get(t, "CA2"); s.State != session.Streaming {
		t.Fatalf("state %s", s.State)
	}
}

// Concurrent deliveries of one webhook agree on one token, also for a
// ringing session stored without a connect generation (by an earlier pod).
func TestVoiceWebhookConcurrentRetries(t *testing.T) {
	for name, legacy := range map[string]bool{"new call": false, "legacy ringing session": true} {
		t.Run(name, func(t *testing.T) {
			x := newHarness(t, "https://host.example", true)
			if legacy {
				x.sessions.put(session.New("CA1", testChannel, testAgent, x.now))
			}
			const n = 8
			docs := make(chan string, n)
			var wg sync.WaitGroup
			for range n {
				wg.Go(func() {
					w := x.post(VoicePath, voiceParams("CA1"))
					answeredToken(t, w, "host.example")
					docs <- w.Body.String()
				})
			}
			wg.Wait()
			close(docs)
			seen := map[string]bool{}
			for d := range docs {
				seen[d] = true
			}
			if len(seen) != 1 || x.sessions.count() != 1 {
				t.Fatalf("%d different answers, %d sessions", len(seen), x.sessions.count())
			}
		})
	}
}

func TestVoiceSignatureRefusedBeforeAnything(t *testing.T) {
	for _, path := range []string{VoicePath, StreamStatusPath, CallStatusPath, ConnectEndedPath, ReferStatusPath} {
		for name, sign := range map[string]func(*http.Request){
			"missing": func(r *http.Request) { r.Header.Del(SignatureHeader) },
			"wrong token": func(r *http.Request) {
				r.Header.Set(SignatureHeader, twimltest.Sign("other", "https://host.example"+path, voiceParams("CA1")))
			},
			"other URL": func(r *http.Request) {
				r.Header.Set(SignatureHeader, twimltest.Sign(testAuthToken, "https://evil.example"+path, voiceParams("CA1")))
			},
			"body modified": func(r *http.Request) {
				r.Header.Set(SignatureHeader, twimltest.Sign(testAuthToken, "https://host.example"+path, voiceParams("CA9")))
			},
		} {
			t.Run(path+" "+name, func(t *testing.T) {
				x := newHarness(t, "https://host.example", true)
				x.sessions.put(&session.Session{CallSID: "CA1", State: session.Streaming})
				x.sessions.ops.Store(0)
				r := twimltest.SignedRequest(testAuthToken, x.publicURL, path, voiceParams("CA1"))
				sign(r)
				w := x.serve(r)
				if w.Code != http.StatusForbidden || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
					t.Fatalf("status %d %q, want 403 text/plain", w.Code, w.Header().Get("Content-Type"))
				}
				x.untouched(t)
				if s := x.sessions.get(t, "CA1"); s.State != session.Streaming || len(s.Timeline) != 0 {
					t.Fatalf("session changed: %+v", s)
				}
			})
		}
	}
}

func TestVoiceBadRequests(t *testing.T) {
	tests := map[string]struct {
		params url.Values
		want   int
	}{
		"missing CallSid":   {url.Values{"To": {"sip:1001@x"}, "SipSourceIp": {testIP}}, http.StatusBadRequest},
		"malformed CallSid": {url.Values{"CallSid": {"CA 1/../x"}, "SipSourceIp": {testIP}}, http.StatusBadRequest},
		"CallSid too long":  {url.Values{"CallSid": {strings.Repeat("C", 65)}}, http.StatusBadRequest},
		"body too large":    {url.Values{"CallSid": {"CA1"}, "Pad": {strings.Repeat("x", MaxBodyBytes)}}, http.StatusRequestEntityTooLarge},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			x := newHarness(t, "https://host.example", true)
			if w := x.post(VoicePath, tc.params); w.Code != tc.want {
				t.Fatalf("status %d, want %d", w.Code, tc.want)
			}
			x.untouched(t)
		})
	}
	t.Run("body not a form", func(t *testing.T) {
		x := newHarness(t, "https://host.example", true)
		r := httptest.NewRequest(http.MethodPost, VoicePath, strings.NewReader("CallSid=%zz"))
		r.Header.Set(SignatureHeader, twimltest.Sign(testAuthToken, "https://host.example"+VoicePath, nil))
		if w := x.serve(r); w.Code != http.StatusForbidden {
			t.Fatalf("status %d: an unparsable body cannot be validated, so it is refused as unsigned", w.Code)
		}
		x.untouched(t)
	})
}

func TestRegisterRoutes(t *testing.T) {
	x := newHarness(t, "https://host.example", true)
	for path, want := range map[string]int{
		"GET " + VoicePath:         http.StatusMethodNotAllowed,
		"POST " + ReferStatusPath:  http.StatusForbidden, // registered, unsigned
		"POST " + StreamPath:       http.StatusNotFound,  // the bridge's websocket
		"POST /twilio/voice/extra": http.StatusNotFound,
	} {
		method, p, _ := strings.Cut(path, " ")
		if w := x.serve(httptest.NewRequest(method, p, nil)); w.Code != want {
			t.Errorf("%s: status %d, want %d", path, w.Code, want)
		}
	}
}

// FuzzVoiceForm posts arbitrary bodies to the voice webhook with signature
// checking off: it never panics and answers a Reject or Connect document, or
// 400 (413 for a body over MaxBodyBytes).
func FuzzVoiceForm(f *testing.F) {
	f.Add([]byte(voiceParams("CA1").Encode()))
	f.Add([]byte(""))
	f.Add([]byte("CallSid=CA1"))
	f.Add([]byte("CallSid=CA1&SipSourceIp=203.0.113.7&To=sip%3A2002%40x"))
	f.Add([]byte("CallSid=CA1&SipSourceIp=%3A%3Affff%3A203.0.113.7&To=%3Csip%3A1001%40x%3E"))
	f.Add([]byte("CallSid=CA1;To=x"))
	f.Add([]byte("%zz=1&CallSid=CA1"))
	f.Add([]byte("\x00\xff<Response/>"))
	f.Fuzz(func(t *testing.T, body []byte) {
		x := newHarness(t, "https://host.example", false)
		r := httptest.NewRequest(http.MethodPost, VoicePath, strings.NewReader(string(body)))
		w := x.serve(r)
		switch w.Code {
		case http.StatusOK:
			v := verb(t, w.Body.String())
			if v.Name != "Reject" && v.Name != "Connect" {
				t.Fatalf("answered %s", w.Body)
			}
		case http.StatusBadRequest:
		case http.StatusRequestEntityTooLarge:
			if len(body) <= MaxBodyBytes {
				t.Fatalf("413 for %d bytes", len(body))
			}
		default:
			t.Fatalf("status %d for %q", w.Code, body)
		}
	})
}
