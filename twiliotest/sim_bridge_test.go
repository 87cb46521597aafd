package twiliotest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/twilio/twilio-go/client"
)

// simPublic is the PUBLIC_URL of the fake bridge: Twilio signs over it while
// requests go to the httptest server.
const simPublic = "https://bridge.example.com"

// connectDoc is the bridge's <Connect><Stream> answer with a stream token.
func connectDoc(token string) string {
	return `<?xml version="1.0" encoding="UTF-8"?><Response><Connect action="` + simPublic + `/twilio/connect-ended">` +
		`<Stream url="wss://bridge.example.com/twilio/stream" statusCallback="` + simPublic + `/twilio/stream-status">` +
		`<Parameter name="token" value="` + token + `"/></Stream></Connect></Response>`
}

const hangupDoc = `<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>`

// simPost is one form POST the fake bridge received.
type simPost struct {
	path  string
	form  url.Values
	sigOK bool // X-Twilio-Signature verified by twilio-go over PUBLIC_URL+path
}

// simBridge is a small fake of the bridge's Twilio endpoints: the voice
// webhook, the stream websocket, the callbacks and the action URLs. Its
// answers are function fields; it validates every signature with twilio-go.
type simBridge struct {
	srv     *httptest.Server
	streams chan *bridgeConn
	wg      sync.WaitGroup

	voice        func(form url.Values) (int, string)
	referStatus  func(form url.Values) string
	connectEnded func(form url.Values) string

	mu       sync.Mutex
	posts    []simPost
	wsSigOK  []bool
	wsHeader []http.Header
}

func newSimBridge(t *testing.T) *simBridge {
	t.Helper()
	b := &simBridge{
		streams:      make(chan *bridgeConn, 8),
		voice:        func(url.Values) (int, string) { return 200, connectDoc("tok-1") },
		referStatus:  func(url.Values) string { return hangupDoc },
		connectEnded: func(url.Values) string { return hangupDoc },
	}
	rv := client.NewRequestValidator(testToken)
	mux := http.NewServeMux()
	form := func(w http.ResponseWriter, r *http.Request) url.Values {
		if err := r.ParseForm(); err != nil {
			t.Errorf("fake bridge: %s: %v", r.URL.Path, err)
		}
		params := map[string]string{}
		for k := range r.PostForm {
			params[k] = r.PostForm.Get(k)
		}
		ok := rv.Validate(simPublic+r.URL.RequestURI(), params, r.Header.Get(SignatureHeader))
		b.mu.Lock()
		b.posts = append(b.posts, simPost{path: r.URL.Path, form: r.PostForm, sigOK: ok})
		b.mu.Unlock()
		return r.PostForm
	}
	twiml := func(w http.ResponseWriter, status int, doc string) {
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(doc))
	}
	mux.HandleFunc("POST /twilio/voice", func(w http.ResponseWriter, r *http.Request) {
		status, doc := b.voice(form(w, r))
		twiml(w, status, doc)
	})
	mux.HandleFunc("POST /twilio/refer-status", func(w http.ResponseWriter, r *http.Request) {
		twiml(w, 200, b.referStatus(form(w, r)))
	})
	mux.HandleFunc("POST /twilio/connect-ended", func(w http.ResponseWriter, r *http.Request) {
		twiml(w, 200, b.connectEnded(form(w, r)))
	})
	for _, p := range []string{"/twilio/stream-status", "/twilio/call-status"} {
		mux.HandleFunc("POST "+p, func(w http.ResponseWriter, r *http.Request) {
			form(w, r)
			w.WriteHeader(http.StatusNoContent)
		})
	}
	mux.HandleFunc("GET /twilio/stream", func(w http.ResponseWriter, r *http.Request) {
		sig := r.Header.Get(SignatureHeader)
		ok := rv.Validate("wss://bridge.example.com/twilio/stream", map[string]string{}, sig)
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		b.mu.Lock()
		b.wsSigOK = append(b.wsSigOK, ok)
		b.wsHeader = append(b.wsHeader, r.Header.Clone())
		b.mu.Unlock()
		bc := &bridgeConn{ws: ws, header: r.Header.Clone(), in: make(chan received, 4096)}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			defer close(bc.in)
			for {
				typ, data, err := ws.ReadMessage()
				if err != nil {
					bc.endErr = err
					_ = ws.Close()
					return
				}
				select {
				case bc.in <- received{at: time.Now(), typ: typ, data: data}:
				default:
					t.Errorf("fake bridge: inbound buffer full")
				}
			}
		}()
		b.streams <- bc
	})
	b.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		b.srv.CloseClientConnections()
		b.srv.Close()
		b.wg.Wait()
		b.checkSignatures(t)
	})
	return b
}

// newSim starts a simulator against b, closed when the test ends.
func newSim(t *testing.T, b *simBridge) *Twilio {
	t.Helper()
	sim := NewTwilio(SimConfig{BridgeURL: b.srv.URL, PublicURL: simPublic, AccountSID: testAccount, AuthToken: testToken})
	t.Cleanup(sim.Close)
	return sim
}

// place places a call for extension 1001 and ends it when the test ends.
func place(t *testing.T, sim *Twilio) *SimCall {
	t.Helper()
	c, err := sim.PlaceCall(ctxT(t), CallParams{
		From: "sip:+15551234@vivi.sip.twilio.com", To: "sip:1001@vivi.sip.twilio.com;transport=tls", SourceIP: "198.51.100.7",
	})
	if err != nil {
		t.Fatalf("PlaceCall: %v", err)
	}
	t.Cleanup(func() { c.Hangup(context.Background()) })
	return c
}

// accept returns the bridge side of the next stream.
func (b *simBridge) accept(t *testing.T) *bridgeConn {
	t.Helper()
	select {
	case bc := <-b.streams:
		return bc
	case <-time.After(waitTime):
		t.Fatal("fake bridge: no stream connected")
		return nil
	}
}

// startOf reads connected and start and returns start.
func startOf(t *testing.T, bc *bridgeConn) map[string]any {
	t.Helper()
	if m, _ := bc.nextEvent(t); m["event"] != "connected" {
		t.Fatalf("first message %v, want connected", m)
	}
	m, _ := bc.nextEvent(t)
	if m["event"] != "start" {
		t.Fatalf("second message %v, want start", m)
	}
	return m["start"].(map[string]any)
}

// waitPost waits for the n-th (from 1) POST to path and returns it.
func (b *simBridge) waitPost(t *testing.T, path string, n int) simPost {
	t.Helper()
	var got simPost
	waitFor(t, "POST "+path, func() bool {
		i := 0
		for _, p := range b.postsTo(path) {
			if i++; i == n {
				got = p
				return true
			}
		}
		return false
	})
	return got
}

func (b *simBridge) postsTo(path string) []simPost {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []simPost
	for _, p := range b.posts {
		if path == "" || p.path == path {
			out = append(out, p)
		}
	}
	return out
}

// order returns the paths of every POST, in order, with the StreamEvent or
// CallStatus that tells callbacks apart.
func (b *simBridge) order() []string {
	var out []string
	for _, p := range b.postsTo("") {
		s := strings.TrimPrefix(p.path, "/twilio/")
		if ev := p.form.Get("StreamEvent"); ev != "" {
			s += " " + ev
		}
		out = append(out, s)
	}
	return out
}

func (b *simBridge) checkSignatures(t *testing.T) {
	t.Helper()
	for _, p := range b.postsTo("") {
		if !p.sigOK {
			t.Errorf("POST %s: X-Twilio-Signature does not verify with twilio-go", p.path)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if slices.Contains(b.wsSigOK, false) {
		t.Errorf("stream handshake signatures = %v, want all verified", b.wsSigOK)
	}
}

// checkForm checks that got has exactly the names of want, with want's
// values; "?" accepts any non-empty value.
func checkForm(t *testing.T, what string, got url.Values, want map[string]string) {
	t.Helper()
	for k, v := range want {
		switch g := got.Get(k); {
		case g == "":
			t.Errorf("%s: missing %s", what, k)
		case v != "?" && g != v:
			t.Errorf("%s: %s = %q, want %q", what, k, g, v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: unexpected %s=%q", what, k, got.Get(k))
		}
	}
}

// standard returns the standard request parameters of the test call with
// extra names added.
func standard(callSID, status string, extra map[string]string) map[string]string {
	m := map[string]string{
		"AccountSid": testAccount, "ApiVersion": "2010-04-01", "CallSid": callSID, "CallStatus": status,
		"Called": "sip:1001@vivi.sip.twilio.com;transport=tls", "Caller": "sip:+15551234@vivi.sip.twilio.com",
		"Direction": "inbound", "From": "sip:+15551234@vivi.sip.twilio.com", "To": "sip:1001@vivi.sip.twilio.com;transport=tls",
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// eventsOf returns the What of every event.
func eventsOf(c *SimCall) []string {
	var out []string
	for _, e := range c.Events() {
		out = append(out, e.What)
	}
	return out
}

func waitCallDone(t *testing.T, c *SimCall) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(waitTime):
		t.Fatalf("call did not end; events %q", eventsOf(c))
	}
}
