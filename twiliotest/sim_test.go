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

func TestSimPlaceCallAnswers(t *testing.T) {
	tests := map[string]struct {
		status       int
		doc          string
		wantRejected string
		wantErr      func(error) bool
	}{
		"reject busy":     {200, `<Response><Reject reason="busy"/></Response>`, "busy", nil},
		"reject default":  {200, `<?xml version="1.0"?><Response><Reject/></Response>`, "rejected", nil},
		"hangup is error": {200, hangupDoc, "", func(err error) bool { return strings.Contains(err.Error(), "want <Connect> or <Reject>") }},
		"not TwiML":       {200, `{"no":"xml"}`, "", func(err error) bool { return strings.Contains(err.Error(), "parse TwiML") }},
		"403": {403, "bad signature", "", func(err error) bool {
			var we *WebhookError
			return errors.As(err, &we) && we.Status == 403 && we.URL == simPublic+"/twilio/voice" && we.Body == "bad signature"
		}},
		"ws stream URL": {200, strings.Replace(connectDoc("t"), "wss://", "ws://", 1), "", func(err error) bool {
			return strings.Contains(err.Error(), "not wss://")
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			b := newSimBridge(t)
			b.voice = func(url.Values) (int, string) { return tc.status, tc.doc }
			sim := newSim(t, b)
			c, err := sim.PlaceCall(ctxT(t), CallParams{
				CallSID: "CA0001", From: "sip:+15551234@vivi.sip.twilio.com",
				To: "sip:1001@vivi.sip.twilio.com;transport=tls", SourceIP: "198.51.100.7",
				Extra: url.Values{"SipHeader_X-Tenant": {"acme"}},
			})
			if tc.wantErr != nil {
				if err == nil || !tc.wantErr(err) {
					t.Fatalf("PlaceCall error = %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("PlaceCall: %v", err)
			}
			waitCallDone(t, c)
			if c.Rejected() != tc.wantRejected || c.Outcome() != OutcomeRejected || c.Stream() != nil || len(c.Streams()) != 0 {
				t.Errorf("Rejected %q, Outcome %q, streams %d", c.Rejected(), c.Outcome(), len(c.Streams()))
			}
			if _, err := c.WaitStream(ctxT(t), 1); !errors.Is(err, ErrCallEnded) {
				t.Errorf("WaitStream on a rejected call = %v", err)
			}
			want := []string{"webhook -> Reject " + tc.wantRejected, "call ended: rejected"}
			if got := eventsOf(c); !slices.Equal(got, want) {
				t.Errorf("events %q, want %q", got, want)
			}
			p := b.waitPost(t, "/twilio/voice", 1)
			checkForm(t, "voice webhook", p.form, standard("CA0001", "ringing", map[string]string{
				"SipCallId": "?", "SipDomain": "vivi.sip.twilio.com", "SipDomainSid": "?",
				"SipSourceIp": "198.51.100.7", "SipHeader_X-Tenant": "acme",
			}))
			if !strings.HasPrefix(p.form.Get("SipDomainSid"), "SD") {
				t.Errorf("SipDomainSid = %q", p.form.Get("SipDomainSid"))
			}
			if got := b.order(); !slices.Equal(got, []string{"voice"}) {
				t.Errorf("posts %q, want only the voice webhook", got)
			}
		})
	}
}

func TestSimConnectedCallAndCallerHangup(t *testing.T) {
	b := newSimBridge(t)
	sim := newSim(t, b)
	c := place(t, sim)
	bc := b.accept(t)
	start := startOf(t, bc)
	if start["callSid"] != c.CallSID() || start["accountSid"] != testAccount {
		t.Errorf("start = %v", start)
	}
	if got := start["customParameters"].(map[string]any)["token"]; got != "tok-1" {
		t.Errorf("customParameters.token = %v, want tok-1", got)
	}
	s, err := c.WaitStream(ctxT(t), 1)
	if err != nil || s != c.Stream() || s.StreamSID() != start["streamSid"] {
		t.Fatalf("WaitStream = %v, %v; Stream %v", s, err, c.Stream())
	}
	started := b.waitPost(t, "/twilio/stream-status", 1)
	checkForm(t, "stream-started", started.form, map[string]string{
		"AccountSid": testAccount, "CallSid": c.CallSID(), "StreamSid": s.StreamSID(),
		"StreamName": s.StreamSID(), "StreamEvent": "stream-started", "Timestamp": "?",
	})
	if _, err := time.Parse(time.RFC3339, started.form.Get("Timestamp")); err != nil {
		t.Errorf("stream Timestamp is not ISO 8601: %v", err)
	}

	c.Hangup(ctxT(t))
	waitCallDone(t, c)
	if m, _ := bc.nextEvent(t); m["event"] != "stop" {
		t.Errorf("after media the bridge got %v, want stop", m)
	}
	status := b.waitPost(t, "/twilio/call-status", 1)
	checkForm(t, "call-status", status.form, standard(c.CallSID(), "completed", map[string]string{
		"CallDuration": "?", "SipResponseCode": "200", "Timestamp": "?",
		"CallbackSource": "call-progress-events", "SequenceNumber": "0",
	}))
	if _, err := time.Parse(time.RFC1123Z, status.form.Get("Timestamp")); err != nil {
		t.Errorf("call Timestamp is not RFC 2822: %v", err)
	}
	if got, want := b.order(), []string{"voice", "stream-status stream-started", "stream-status stream-stopped", "call-status"}; !slices.Equal(got, want) {
		t.Errorf("posts %q, want %q", got, want)
	}
	wantEvents := []string{"webhook -> Connect", "stream " + s.StreamSID() + " opened", "stream-status stream-started",
		"hangup", "stream " + s.StreamSID() + " stopped (hangup)", "stream-status stream-stopped", "call-status completed", "call ended: completed"}
	if got := eventsOf(c); !slices.Equal(got, wantEvents) {
		t.Errorf("events\n%q\nwant\n%q", got, wantEvents)
	}
	if c.Outcome() != OutcomeCompleted {
		t.Errorf("Outcome = %q", c.Outcome())
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.wsSigOK) != 1 || !b.wsSigOK[0] {
		t.Errorf("handshake signatures %v", b.wsSigOK)
	}
}

const referTwiML = `<Response><Refer action="` + simPublic + `/twilio/refer-status"><Sip>sip:2001@sbc.example.com:5061;transport=tls</Sip></Refer></Response>`

func TestSimReferUpdate(t *testing.T) {
	tests := map[string]struct {
		outcome     *ReferOutcome // nil: the default
		wantForm    map[string]string
		wantResume  bool
		wantOutcome string
	}{
		"in-progress (default)": {nil, map[string]string{"ReferCallStatus": "in-progress", "ReferSipResponseCode": "202", "NotifySipResponseCode": "200"}, false, OutcomeTransferred},
		"busy":                  {&ReferOutcome{"busy", "202", "486"}, map[string]string{"ReferCallStatus": "busy", "ReferSipResponseCode": "202", "NotifySipResponseCode": "486"}, true, OutcomeCompleted},
		"failed":                {&ReferOutcome{"failed", "405", ""}, map[string]string{"ReferCallStatus": "failed", "ReferSipResponseCode": "405"}, true, OutcomeCompleted},
		"no NOTIFY":             {&ReferOutcome{"", "202", "200"}, map[string]string{"ReferSipResponseCode": "202"}, true, OutcomeCompleted},
		"canceled":              {&ReferOutcome{"canceled", "202", "180"}, map[string]string{"ReferCallStatus": "canceled", "ReferSipResponseCode": "202", "NotifySipResponseCode": "180"}, false, OutcomeCompleted},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			b := newSimBridge(t)
			b.referStatus = func(form url.Values) string {
				if form.Get("ReferCallStatus") == "in-progress" {
					return hangupDoc
				}
				return connectDoc("tok-2")
			}
			sim := newSim(t, b)
			var mu sync.Mutex
			var referred []string
			if tc.outcome != nil {
				sim.SetReferOutcome(func(callSID, referTo string) ReferOutcome {
					mu.Lock()
					defer mu.Unlock()
					referred = append(referred, callSID+" "+referTo)
					return *tc.outcome
				})
			}
			c := place(t, sim)
			bc := b.accept(t)
			startOf(t, bc)

			rc := twilioClient(t, sim.REST().URL(), testAccount, testToken)
			call, err := rc.Api.UpdateCall(c.CallSID(), (&openapi.UpdateCallParams{}).SetTwiml(referTwiML))
			if err != nil || *call.Status != "in-progress" {
				t.Fatalf("UpdateCall = %v, %v", call, err)
			}
			if m, _ := bc.nextEvent(t); m["event"] != "stop" {
				t.Errorf("the stream got %v, want stop", m)
			}
			bc.waitEnd(t)
			p := b.waitPost(t, "/twilio/refer-status", 1)
			checkForm(t, "refer-status", p.form, standard(c.CallSID(), "in-progress", tc.wantForm))
			if tc.outcome != nil {
				mu.Lock()
				if want := c.CallSID() + " sip:2001@sbc.example.com:5061;transport=tls"; !slices.Equal(referred, []string{want}) {
					t.Errorf("refer outcome asked for %q, want %q", referred, want)
				}
				mu.Unlock()
			}
			first := c.Streams()[0].StreamSID()
			if tc.wantResume {
				s2, err := c.WaitStream(ctxT(t), 2)
				if err != nil {
					t.Fatalf("WaitStream(2): %v; events %q", err, eventsOf(c))
				}
				bc2 := b.accept(t)
				start := startOf(t, bc2)
				if start["customParameters"].(map[string]any)["token"] != "tok-2" || start["streamSid"] != s2.StreamSID() || c.Stream() != s2 {
					t.Errorf("second stream start = %v", start)
				}
				if s2.StreamSID() == first || start["callSid"] != c.CallSID() {
					t.Errorf("second stream %s of call %v", s2.StreamSID(), start["callSid"])
				}
				c.Hangup(ctxT(t))
			}
			waitCallDone(t, c)
			if c.Outcome() != tc.wantOutcome {
				t.Errorf("Outcome = %q, want %q; events %q", c.Outcome(), tc.wantOutcome, eventsOf(c))
			}
			want := []string{"voice", "stream-status stream-started", "stream-status stream-stopped", "refer-status"}
			if tc.wantResume {
				want = append(want, "stream-status stream-started", "stream-status stream-stopped")
			}
			want = append(want, "call-status")
			if got := b.order(); !slices.Equal(got, want) {
				t.Errorf("posts %q, want %q", got, want)
			}
			ev := eventsOf(c)
			for _, w := range []string{"REST update: Refer sip:2001@sbc.example.com:5061;transport=tls", "stream " + first + " stopped (transfer)"} {
				if !slices.Contains(ev, w) {
					t.Errorf("events %q lack %q", ev, w)
				}
			}
		})
	}
}

func TestSimBridgeHangsUp(t *testing.T) {
	tests := map[string]*openapi.UpdateCallParams{
		"Status=completed": (&openapi.UpdateCallParams{}).SetStatus("completed"),
		"Twiml Hangup":     (&openapi.UpdateCallParams{}).SetTwiml(hangupDoc),
	}
	for name, params := range tests {
		t.Run(name, func(t *testing.T) {
			b := newSimBridge(t)
			sim := newSim(t, b)
			c := place(t, sim)
			bc := b.accept(t)
			startOf(t, bc)
			rc := twilioClient(t, sim.REST().URL(), testAccount, testToken)
			if _, err := rc.Api.UpdateCall(c.CallSID(), params); err != nil {
				t.Fatalf("UpdateCall: %v", err)
			}
			if m, _ := bc.nextEvent(t); m["event"] != "stop" {
				t.Errorf("the stream got %v, want stop", m)
			}
			waitCallDone(t, c)
			want := []string{"voice", "stream-status stream-started", "stream-status stream-stopped", "call-status"}
			if got := b.order(); !slices.Equal(got, want) {
				t.Errorf("posts %q, want %q", got, want)
			}
			if c.Outcome() != OutcomeCompleted {
				t.Errorf("Outcome = %q", c.Outcome())
			}
			// The call is over: Twilio refuses to redirect it.
			_, err := rc.Api.UpdateCall(c.CallSID(), (&openapi.UpdateCallParams{}).SetTwiml(hangupDoc))
			if err == nil || !strings.Contains(err.Error(), "21220") {
				t.Errorf("update of an ended call = %v, want error 21220", err)
			}
			if got, err := rc.Api.FetchCall(c.CallSID(), nil); err != nil || *got.Status != "completed" {
				t.Errorf("FetchCall = %v, %v", got, err)
			}
		})
	}
}

func TestSimBridgeClosesTheSocket(t *testing.T) {
	b := newSimBridge(t)
	var mu sync.Mutex
	ended := 0
	b.connectEnded = func(url.Values) string {
		mu.Lock()
		defer mu.Unlock()
		if ended++; ended == 1 {
			return connectDoc("tok-3")
		}
		return hangupDoc
	}
	sim := newSim(t, b)
	c := place(t, sim)
	closeFromBridge := func(bc *bridgeConn) {
		t.Helper()
		startOf(t, bc)
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye")
		if err := bc.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(waitTime)); err != nil {
			t.Fatal(err)
		}
		bc.waitEnd(t)
	}
	closeFromBridge(b.accept(t))
	s2, err := c.WaitStream(ctxT(t), 2)
	if err != nil {
		t.Fatalf("WaitStream(2): %v; events %q", err, eventsOf(c))
	}
	bc2 := b.accept(t)
	if tok := startOf(t, bc2)["customParameters"].(map[string]any)["token"]; tok != "tok-3" {
		t.Errorf("second stream token %v", tok)
	}
	// startOf consumed connected and start; close again: connect-ended answers Hangup.
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	if err := bc2.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(waitTime)); err != nil {
		t.Fatal(err)
	}
	waitCallDone(t, c)
	p := b.waitPost(t, "/twilio/connect-ended", 1)
	checkForm(t, "connect-ended", p.form, standard(c.CallSID(), "in-progress", nil))
	want := []string{"voice", "stream-status stream-started", "connect-ended", "stream-status stream-stopped",
		"stream-status stream-started", "connect-ended", "stream-status stream-stopped", "call-status"}
	if got := b.order(); !slices.Equal(got, want) {
		t.Errorf("posts %q, want %q", got, want)
	}
	if c.Outcome() != OutcomeCompleted || len(c.Streams()) != 2 || c.Stream() != s2 {
		t.Errorf("Outcome %q, %d streams", c.Outcome(), len(c.Streams()))
	}
	if ev := eventsOf(c); !slices.Contains(ev, "stream "+s2.StreamSID()+" closed by the bridge") || !slices.Contains(ev, "connect-ended -> Connect") {
		t.Errorf("events %q", ev)
	}
}
