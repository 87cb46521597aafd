package transfer

import (
	"context"
	"net/url"
	"testing"

	"go.uber.org/goleak"

	"github.com/vivi/bridge/twiliotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestTwilioAgainstRESTFake: the REST client reaches TWILIO_API_BASE_URL
// with Twilio's paths, auth and form, and leaves nothing open on errors.
func TestTwilioAgainstRESTFake(t *testing.T) {
	rest := twiliotest.NewREST(twiliotest.RESTOptions{AccountSID: "ACtest", AuthToken: "token123"})
	defer rest.Close()
	tw, err := NewTwilio(TwilioConfig{AccountSID: "ACtest", AuthToken: "token123", BaseURL: rest.URL()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := tw.Hangup(ctx, "CA1"); err != nil {
		t.Fatal(err)
	}
	doc, _ := ReferTwiML("https://b.example/twilio/refer-status", "sip:2001@pbx.example.com:5061;transport=tls")
	if err := tw.UpdateTwiML(ctx, "CA1", doc); err != nil {
		t.Fatal(err)
	}
	reqs := rest.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	for i, want := range []url.Values{{"Status": {"completed"}}, {"Twiml": {doc}}} {
		r := reqs[i]
		if r.Method != "POST" || r.Path != "/2010-04-01/Accounts/ACtest/Calls/CA1.json" || r.BasicUser != "ACtest" || r.Form.Encode() != want.Encode() {
			t.Fatalf("request %d: %s %s user %s form %v", i, r.Method, r.Path, r.BasicUser, r.Form)
		}
	}
	rest.OnCallUpdate(func(string, url.Values) (int, string) {
		return 404, `{"code":20404,"message":"The requested resource was not found","more_info":"https://www.twilio.com/docs/errors/20404","status":404}`
	})
	if err := tw.Hangup(ctx, "CA404"); err == nil {
		t.Fatal("an error answer was not an error")
	}
	bad, _ := NewTwilio(TwilioConfig{AccountSID: "ACtest", AuthToken: "wrong", BaseURL: rest.URL()})
	if err := bad.Hangup(ctx, "CA1"); err == nil {
		t.Fatal("bad credentials accepted")
	}
}
