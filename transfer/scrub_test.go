package transfer

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/twilio/twilio-go/client"

	"github.com/vivi/bridge/internal/redact"
	"github.com/vivi/bridge/twiliotest"
)

// TestRESTErrorEchoingAuthorizationIsScrubbed: Twilio (or a proxy in front
// of it) answers the transfer's call update with an error body that echoes
// the request's Authorization header and the auth token, padded to 4 KB.
// Neither the session record nor any log line keeps a credential, and the
// stored text is clipped.
func TestRESTErrorEchoingAuthorizationIsScrubbed(t *testing.T) {
	const account, token = "ACscrub", "scrubtoken0123456789abcdef"
	basic := base64.StdEncoding.EncodeToString([]byte(account + ":" + token))
	rest := twiliotest.NewREST(twiliotest.RESTOptions{AccountSID: account, AuthToken: token})
	defer rest.Close()
	rest.OnCallUpdate(func(string, url.Values) (int, string) {
		msg := "Bad request. You sent Authorization: Basic " + basic + "\nX-Token: " + token + " " + strings.Repeat("x", 4000)
		return 400, fmt.Sprintf(`{"code":20001,"message":%q,"more_info":"https://www.twilio.com/docs/errors/20001","status":400}`, msg)
	})
	tw, err := NewTwilio(TwilioConfig{AccountSID: account, AuthToken: token, BaseURL: rest.URL()})
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.DebugLevel)
	svc, ms := newService(t, nil)
	svc.cfg.Calls = tw
	svc.cfg.Logger = zap.New(core)

	_, err = svc.Start(context.Background(), "CA1", "Front Desk", ViaTool)
	if !errors.Is(err, ErrREST) {
		t.Fatalf("err = %v", err)
	}
	leaks := func(what, s string) {
		t.Helper()
		for _, secret := range []string{basic, token} {
			if strings.Contains(s, secret) {
				t.Errorf("%s keeps a credential: %q", what, s)
			}
		}
	}
	leaks("returned error", err.Error())
	s := ms.m["CA1"]
	if len(s.Transfers) != 1 || s.Transfers[0].Error == "" {
		t.Fatalf("session %+v", s)
	}
	stored := s.Transfers[0].Error
	leaks("session transfer error", stored)
	if len(stored) > redact.MaxLen+32 || !strings.Contains(stored, "20001") {
		t.Errorf("stored error %d bytes, want it clipped to about %d and to keep the code: %q", len(stored), redact.MaxLen, stored)
	}
	for _, ev := range s.Timeline {
		leaks("timeline "+ev.Type, ev.Detail)
		if len(ev.Detail) > redact.MaxLen+64 {
			t.Errorf("timeline %s detail %d bytes", ev.Type, len(ev.Detail))
		}
	}
	failed := logs.FilterMessage("transfer failed to start").All()
	if len(failed) != 1 {
		t.Fatalf("%d 'transfer failed to start' lines", len(failed))
	}
	for _, e := range logs.All() {
		enc := zapcore.NewMapObjectEncoder()
		for _, f := range e.Context {
			f.AddTo(enc)
		}
		leaks("log line "+e.Message, fmt.Sprint(enc.Fields))
	}
	if f := failed[0].ContextMap(); f["call_sid"] != "CA1" || f["error"] == "" {
		t.Errorf("log fields %v", f)
	}
	// twilio-go's error is still reachable for its status and code.
	var te *client.TwilioRestError
	if rerr := tw.Hangup(context.Background(), "CA2"); !errors.As(rerr, &te) || te.Code != 20001 {
		t.Errorf("Hangup error %v is not a TwilioRestError 20001", rerr)
	}
}
