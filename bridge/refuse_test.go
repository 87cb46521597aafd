package bridge

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap/zapcore"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiliotest"
)

// keepsRelaying checks that a live call still carries caller audio.
func keepsRelaying(t *testing.T, mc *realtimetest.Conn) {
	t.Helper()
	n := len(mc.InputAudio())
	waitFor(t, "the call to keep relaying", func() bool { return len(mc.InputAudio()) >= n+800 })
}

func TestBadHandshakeSignature(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	other, otherModel := h.call(nil)
	for name, sign := range map[string]struct{ url, token string }{
		"wrong token": {testSignURL, "other"},
		"wrong url":   {"wss://evil.example.com/twilio/stream", testAuthToken},
		"unsigned":    {"", ""},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := twiliotest.Dial(context.Background(), twiliotest.CallConfig{URL: h.url, SignURL: sign.url, AuthToken: sign.token})
			var he *twiliotest.HandshakeError
			if !errors.As(err, &he) || he.Status != http.StatusForbidden {
				t.Fatalf("err = %v, want a 403 handshake refusal", err)
			}
		})
	}
	h.waitLog(zapcore.WarnLevel, "media stream refused: bad X-Twilio-Signature")
	// A trailing slash on the signed URL is accepted (Twilio's note).
	sid, tok := h.newSession(nil)
	c, err := twiliotest.Dial(context.Background(), twiliotest.CallConfig{
		URL: h.url, SignURL: testSignURL + "/", AuthToken: testAuthToken, CallSID: sid, Parameters: map[string]string{"token": tok},
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Stop()
	<-c.Done()
	keepsRelaying(t, otherModel)
	_ = other
}

func TestTokenUsedTwice(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	sid, tok := h.newSession(nil)
	first := h.dial(sid, tok)
	mc := h.nextConn()
	waitEvent(t, mc, "input_audio_buffer.append", 1)

	second := h.dial(sid, tok)
	select {
	case <-second.Done():
	case <-time.After(waitLimit):
		t.Fatal("second use of the token was not closed")
	}
	if !second.ClosedByServer() {
		t.Fatal("second stream not closed by the server")
	}
	h.waitLog(zapcore.WarnLevel, "media stream refused: stream token already used")
	keepsRelaying(t, mc)
	if s := h.sessions.get(sid); s.State != session.Streaming || s.StreamSID != first.StreamSID() {
		t.Fatalf("the refused stream changed the session: %s %s", s.State, s.StreamSID)
	}
	if v := h.counter("vivi_bridge_streams_rejected_total", "reason", rejectReused); v != 1 {
		t.Fatalf("streams_rejected_total{token_reused} = %v", v)
	}
}

func TestBadToken(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	sid, _ := h.newSession(nil)
	otherSID, otherTok := h.newSession(nil)
	_ = otherSID
	for name, tok := range map[string]string{"another call's token": otherTok, "garbage": "abc.def", "missing": ""} {
		t.Run(name, func(t *testing.T) {
			c := h.dial(sid, tok)
			select {
			case <-c.Done():
			case <-time.After(waitLimit):
				t.Fatal("stream with a bad token not closed")
			}
		})
	}
	h.waitLog(zapcore.WarnLevel, "media stream refused: stream token rejected")
	if s := h.sessions.get(sid); s.State != session.Ringing {
		t.Fatalf("session went %s", s.State)
	}
}

// TestNoStart: a stream that sends no start is refused (1008) once
// StartTimeout ends. The timer is a fakeAfter's: it fires when the test
// says, not after real time.
func TestNoStart(t *testing.T) {
	timers := newFakeAfter()
	h := newHarness(t, harnessOpts{cfg: func(c *Config) { c.After = timers.after }})
	hdr := http.Header{twiliotest.SignatureHeader: {twiliotest.SignForm(testAuthToken, testSignURL, nil)}}
	ws, _, err := websocket.DefaultDialer.Dial(h.url, hdr)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	start := timers.await(t, 10*time.Second, 1) // the default StartTimeout
	if h.logs.FilterMessage("media stream refused: no start message in time").Len() != 0 {
		t.Fatal("refused before the start timeout fired")
	}
	start.fire()
	_ = ws.SetReadDeadline(time.Now().Add(waitLimit))
	_, _, err = ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation {
		t.Fatalf("read: %v, want a close frame 1008", err)
	}
	h.waitLog(zapcore.WarnLevel, "media stream refused: no start message in time")
}

func TestOddTwilioFramesAreIgnored(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	call, mc := h.call(nil)
	other, otherModel := h.call(nil)
	waitEvent(t, mc, "input_audio_buffer.append", 1)

	call.SendRaw([]byte(`{"event":"media","media":{"payload":`))
	call.SendRaw([]byte(`{"event":"surprise","streamSid":"x"}`))
	call.SendRaw([]byte(`{"event":"media","streamSid":"x","media":{"payload":"AA\"},\"x\":\"y"}}`))
	call.SendRaw([]byte(`{"event":"media","streamSid":"x","media":{"payload":"not base64!"}}`))
	call.SendRaw([]byte(`{"event":"mark","streamSid":"x","mark":{"name":"someone-else"}}`))
	call.SendRaw([]byte(`{"event":"dtmf","streamSid":"x","dtmf":{"digit":"99"}}`))
	call.SendBinary([]byte{0xff, 0x00})

	for _, msg := range []string{
		"malformed twilio message ignored",
		"unknown twilio event ignored",
		"twilio media payload is not base64; frame dropped",
		"twilio echoed a mark that is not ours; ignored",
		"invalid dtmf digit ignored",
		"twilio sent a binary websocket frame; ignored",
	} {
		h.waitLog(zapcore.WarnLevel, msg)
	}
	keepsRelaying(t, mc)
	keepsRelaying(t, otherModel)
	// Nothing odd reached the model: every append carries base64 audio.
	for _, e := range mc.Events() {
		if e.Type == "input_audio_buffer.append" && strings.Contains(string(e.Raw), `\"`) {
			t.Fatalf("injected payload reached the model: %s", e.Raw)
		}
	}
	if s := h.sessions.get(call.CallSID()); s.State != session.Streaming {
		t.Fatalf("session %s", s.State)
	}
	_ = other
}

func TestOddModelEvents(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	call, mc := h.call(nil)
	waitEvent(t, mc, "input_audio_buffer.append", 1)

	mc.SendRaw([]byte(`{not json`))
	mc.SendRaw([]byte(`{"type":"response.output_audio.delta","item_id":"i1","delta":"not base64!"}`))
	mc.SendRaw([]byte(`{"type":"something.new","x":1}`))
	mc.SendError("invalid_request_error", "conversation_already_has_active_response", "Conversation already has an active response")
	mc.SendError("invalid_request_error", "response_cancel_not_active", "Cancellation failed: no active response found")
	mc.SendError("invalid_request_error", "", "Audio content of 9800ms is already shorter than 11579ms")
	mc.SendError("server_error", "rate_limited", "slow down")

	h.waitLog(zapcore.WarnLevel, "unreadable model event ignored")
	e := h.waitLog(zapcore.WarnLevel, "model error")
	if e.ContextMap()["code"] != "rate_limited" {
		t.Fatalf("model error logged with %v", e.ContextMap())
	}
	for _, l := range h.logs.All() {
		if l.Level >= zapcore.WarnLevel && l.Message == "model error" && l.ContextMap()["code"] != "rate_limited" {
			t.Fatalf("benign race logged as a warning: %v", l.ContextMap())
		}
	}
	waitFor(t, "model_error recorded", func() bool {
		ev, ok := hasEvent(h.sessions.get(call.CallSID()), session.EventModelError)
		return ok && strings.HasPrefix(ev.Detail, "rate_limited")
	})
	keepsRelaying(t, mc)
	if errs := call.ProtocolErrors(); len(errs) != 0 {
		t.Fatalf("protocol errors at Twilio: %v", errs)
	}
}
