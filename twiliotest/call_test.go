package twiliotest

import (
	"bytes"
	"encoding/base64"
	"errors"
	"regexp"
	"strconv"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/twilio/twilio-go/client"
)

const (
	testToken   = "token123"
	testAccount = "ACtest"
	testSignURL = "wss://bridge.example.com/twilio/stream"
)

func TestDialSendsConnectedStartAndMediaAsDocumented(t *testing.T) {
	b := newFakeBridge(t, 0)
	c, bc := dial(t, b, CallConfig{
		SignURL: testSignURL, AuthToken: testToken,
		AccountSID: testAccount, CallSID: "CA0123", StreamSID: "MZ0123",
		Parameters: map[string]string{"token": "tok.en"},
	})

	sig := bc.header.Get("X-Twilio-Signature")
	rv := client.NewRequestValidator(testToken)
	if !rv.Validate(testSignURL, map[string]string{}, sig) {
		t.Errorf("handshake signature %q does not validate over %s", sig, testSignURL)
	}
	other := client.NewRequestValidator("other")
	if other.Validate(testSignURL, map[string]string{}, sig) {
		t.Error("signature validates with the wrong token")
	}

	m, _ := bc.next(t)
	if got := keys(t, m); got != "event,protocol,version" {
		t.Errorf("connected keys = %s", got)
	}
	if m["event"] != "connected" || m["protocol"] != "Call" || m["version"] != "1.0.0" {
		t.Errorf("connected = %v", m)
	}

	m, _ = bc.next(t)
	if got := keys(t, m); got != "event,sequenceNumber,start,streamSid" {
		t.Errorf("start keys = %s", got)
	}
	if m["event"] != "start" || m["sequenceNumber"] != "1" || m["streamSid"] != "MZ0123" {
		t.Errorf("start = %v", m)
	}
	start := m["start"].(map[string]any)
	if got := keys(t, start); got != "accountSid,callSid,customParameters,mediaFormat,streamSid,tracks" {
		t.Errorf("start.start keys = %s", got)
	}
	if start["accountSid"] != testAccount || start["callSid"] != "CA0123" || start["streamSid"] != "MZ0123" {
		t.Errorf("start.start = %v", start)
	}
	if tr, ok := start["tracks"].([]any); !ok || len(tr) != 1 || tr[0] != "inbound" {
		t.Errorf("tracks = %#v", start["tracks"])
	}
	mf := start["mediaFormat"].(map[string]any)
	if mf["encoding"] != "audio/x-mulaw" || mf["sampleRate"] != float64(8000) || mf["channels"] != float64(1) {
		t.Errorf("mediaFormat = %#v (sampleRate and channels must be JSON numbers)", mf)
	}
	if cp := start["customParameters"].(map[string]any); len(cp) != 1 || cp["token"] != "tok.en" {
		t.Errorf("customParameters = %v", cp)
	}

	for i := 1; i <= 3; i++ {
		m, _ = bc.next(t)
		if got := keys(t, m); got != "event,media,sequenceNumber,streamSid" {
			t.Fatalf("media keys = %s", got)
		}
		if m["event"] != "media" || m["streamSid"] != "MZ0123" || m["sequenceNumber"] != strconv.Itoa(i+1) {
			t.Errorf("media %d = %v", i, m)
		}
		media := m["media"].(map[string]any)
		if got := keys(t, media); got != "chunk,payload,timestamp,track" {
			t.Errorf("media.media keys = %s", got)
		}
		if media["track"] != "inbound" || media["chunk"] != strconv.Itoa(i) ||
			media["timestamp"] != strconv.Itoa(20*i) {
			t.Errorf("media %d body = %v (chunk and timestamp must be strings)", i, media)
		}
		payload, err := base64.StdEncoding.DecodeString(media["payload"].(string))
		if err != nil || !bytes.Equal(payload, bytes.Repeat([]byte{Silence}, FrameBytes)) {
			t.Errorf("media %d payload = %x, %v; want 160 bytes of silence", i, payload, err)
		}
	}
	if c.StreamSID() != "MZ0123" || c.CallSID() != "CA0123" || c.AccountSID() != testAccount {
		t.Errorf("SIDs = %s %s %s", c.StreamSID(), c.CallSID(), c.AccountSID())
	}
}

func TestDialDefaultsAndNoSignature(t *testing.T) {
	b := newFakeBridge(t, 0)
	c, bc := dial(t, b, CallConfig{})
	if _, ok := bc.header["X-Twilio-Signature"]; ok {
		t.Error("signature header sent without SignURL")
	}
	for name, sid := range map[string]string{"AC": c.AccountSID(), "CA": c.CallSID(), "MZ": c.StreamSID()} {
		if !sidPattern(name).MatchString(sid) {
			t.Errorf("default SID %q does not match %s + 32 hex", sid, name)
		}
	}
	bc.next(t)
	m, _ := bc.next(t)
	if cp, ok := m["start"].(map[string]any)["customParameters"].(map[string]any); !ok || len(cp) != 0 {
		t.Errorf("customParameters = %#v, want {}", m["start"])
	}
}

func TestDialRefusedReturnsHandshakeError(t *testing.T) {
	b := newFakeBridge(t, 403)
	_, err := Dial(ctxT(t), CallConfig{URL: b.wsURL()})
	var he *HandshakeError
	if !errors.As(err, &he) || he.Status != 403 {
		t.Fatalf("Dial error = %v, want *HandshakeError{Status: 403}", err)
	}
	if !errors.Is(err, websocket.ErrBadHandshake) {
		t.Error("HandshakeError does not wrap websocket.ErrBadHandshake")
	}
}

// sidPattern matches a Twilio SID with the given prefix.
func sidPattern(prefix string) *regexp.Regexp {
	return regexp.MustCompile("^" + prefix + "[0-9a-f]{32}$")
}
