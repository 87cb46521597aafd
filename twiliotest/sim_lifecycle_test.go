package twiliotest

import (
	"errors"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	openapi "github.com/twilio/twilio-go/rest/api/v2010"
)

func TestSimCloseEndsCalls(t *testing.T) {
	b := newSimBridge(t)
	sim := NewTwilio(SimConfig{BridgeURL: b.srv.URL, PublicURL: simPublic + "/", AccountSID: testAccount, AuthToken: testToken})
	c, err := sim.PlaceCall(ctxT(t), CallParams{To: "sip:1001@vivi.sip.twilio.com", SourceIP: "198.51.100.7"})
	if err != nil {
		t.Fatalf("PlaceCall: %v", err)
	}
	bc := b.accept(t)
	startOf(t, bc)
	sim.Close()
	sim.Close() // idempotent
	select {
	case <-c.Done():
	default:
		t.Fatal("Close returned before the call ended")
	}
	if m, _ := bc.nextEvent(t); m["event"] != "stop" {
		t.Errorf("the stream got %v, want stop", m)
	}
	if c.Outcome() != OutcomeClosed {
		t.Errorf("Outcome = %q", c.Outcome())
	}
	if got := b.order(); !slices.Equal(got, []string{"voice", "stream-status stream-started"}) {
		t.Errorf("posts %q: Close posts no callbacks", got)
	}
	if p := b.waitPost(t, "/twilio/voice", 1); p.form.Get("From") != "sip:+15555550100@vivi.sip.twilio.com" {
		t.Errorf("default From = %q", p.form.Get("From"))
	}
	if _, err := sim.PlaceCall(ctxT(t), CallParams{To: "sip:1@x", SourceIP: "1.2.3.4"}); !errors.Is(err, ErrTwilioClosed) {
		t.Errorf("PlaceCall after Close = %v", err)
	}
}

func TestSimRefusedHandshakePostsStreamError(t *testing.T) {
	b := newSimBridge(t)
	b.voice = func(url.Values) (int, string) {
		return 200, strings.Replace(connectDoc("t"), "/twilio/stream\"", "/twilio/nowhere\"", 1)
	}
	sim := newSim(t, b)
	_, err := sim.PlaceCall(ctxT(t), CallParams{To: "sip:1001@vivi.sip.twilio.com", SourceIP: "198.51.100.7"})
	var he *HandshakeError
	if !errors.As(err, &he) || he.Status != 404 {
		t.Fatalf("PlaceCall = %v, want a *HandshakeError 404", err)
	}
	p := b.waitPost(t, "/twilio/stream-status", 1)
	if p.form.Get("StreamEvent") != "stream-error" || p.form.Get("StreamError") == "" {
		t.Errorf("stream status %v", p.form)
	}
}

func TestSimConfigErrors(t *testing.T) {
	tests := map[string]SimConfig{
		"no bridge URL":   {PublicURL: simPublic},
		"relative public": {BridgeURL: "http://127.0.0.1:1", PublicURL: "bridge.example.com"},
	}
	for name, cfg := range tests {
		t.Run(name, func(t *testing.T) {
			sim := NewTwilio(cfg)
			defer sim.Close()
			if _, err := sim.PlaceCall(ctxT(t), CallParams{To: "sip:1@x", SourceIP: "1.2.3.4"}); err == nil {
				t.Error("PlaceCall succeeded with a bad config")
			}
		})
	}
}

func TestSimBridgeClosesAfterReferUpdate(t *testing.T) {
	b := newSimBridge(t)
	var mu sync.Mutex
	connectEnded := 0
	b.connectEnded = func(url.Values) string {
		mu.Lock()
		defer mu.Unlock()
		connectEnded++
		return hangupDoc
	}
	sim := newSim(t, b)
	c := place(t, sim)
	bc := b.accept(t)
	startOf(t, bc)
	rc := twilioClient(t, sim.REST().URL(), testAccount, testToken)
	if _, err := rc.Api.UpdateCall(c.CallSID(), (&openapi.UpdateCallParams{}).SetTwiml(referTwiML)); err != nil {
		t.Fatalf("UpdateCall: %v", err)
	}
	// The bridge closes the stream itself right after its REST call; the
	// stop may or may not have arrived first.
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	_ = bc.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(waitTime))
	waitCallDone(t, c)
	if c.Outcome() != OutcomeTransferred {
		t.Errorf("Outcome = %q; events %q", c.Outcome(), eventsOf(c))
	}
	mu.Lock()
	defer mu.Unlock()
	if connectEnded != 0 {
		t.Errorf("connect-ended requested %d times after a REST update replaced the <Connect>", connectEnded)
	}
}

func TestSimFailedRESTUpdateChangesNothing(t *testing.T) {
	b := newSimBridge(t)
	sim := newSim(t, b)
	c := place(t, sim)
	bc := b.accept(t)
	startOf(t, bc)
	sim.REST().OnCallUpdate(func(string, url.Values) (int, string) {
		return 500, `{"code":20500,"message":"Internal Server Error","status":500}`
	})
	rc := twilioClient(t, sim.REST().URL(), testAccount, testToken)
	if _, err := rc.Api.UpdateCall(c.CallSID(), (&openapi.UpdateCallParams{}).SetStatus("completed")); err == nil {
		t.Fatal("UpdateCall succeeded against a failing REST API")
	}
	sim.REST().OnCallUpdate(func(sid string, _ url.Values) (int, string) { return 200, `{"sid":"` + sid + `"}` })
	if _, err := rc.Api.UpdateCall(c.CallSID(), (&openapi.UpdateCallParams{}).SetStatus("completed")); err != nil {
		t.Fatalf("UpdateCall: %v", err)
	}
	waitCallDone(t, c)
	if c.Outcome() != OutcomeCompleted || slices.Contains(eventsOf(c), "stream "+c.Stream().StreamSID()+" closed by the bridge") {
		t.Errorf("Outcome %q, events %q", c.Outcome(), eventsOf(c))
	}
	if n := strings.Count(strings.Join(eventsOf(c), "\n"), "REST update: Status=completed"); n != 1 {
		t.Errorf("%d updates played, want 1 (the failed one changes nothing)", n)
	}
}
