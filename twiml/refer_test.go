package twiml

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"testing"

	"github.com/vivi/bridge/session"
)

func referStatus(callSID, status, referCode, notifyCode string) url.Values {
	p := url.Values{"AccountSid": {"ACtest"}, "CallSid": {callSID}, "CallStatus": {"in-progress"}}
	if status != "" {
		p.Set("ReferCallStatus", status)
	}
	if referCode != "" {
		p.Set("ReferSipResponseCode", referCode)
	}
	if notifyCode != "" {
		p.Set("NotifySipResponseCode", notifyCode)
	}
	return p
}

// transferring stores a session transferring to the front desk.
func (x *harness) transferring(t *testing.T, callSID string) {
	t.Helper()
	s := session.New(callSID, testChannel, testAgent, x.now)
	s.State, s.StreamSID = session.Transferring, "MZ1"
	s.AddTransfer(session.Transfer{Destination: "Front Desk", URI: "sip:2001@sbc.example.com:5061;transport=tls", Via: "tool", At: x.now})
	x.sessions.put(s)
}

func TestReferStatusTransferred(t *testing.T) {
	x := newHarness(t, "https://host.example", true)
	x.transferring(t, "CA1")
	wantHangup(t, x.post(ReferStatusPath, referStatus("CA1", "in-progress", "202", "200")))
	s := x.sessions.get(t, "CA1")
	tr := s.LastTransfer()
	if s.State != session.Transferred || tr.Status != "in-progress" || tr.ReferSIPCode != "202" || tr.NotifySIPCode != "200" || tr.CompletedAt == nil {
		t.Fatalf("session %s, transfer %+v", s.State, tr)
	}
}

func TestReferStatusFailureResumes(t *testing.T) {
	tests := map[string]struct {
		params     url.Values
		wantStatus string
		wantDetail string
	}{
		"busy":      {referStatus("CA1", "busy", "202", "486"), "busy", "busy (REFER 202, NOTIFY 486)"},
		"failed":    {referStatus("CA1", "failed", "405", ""), "failed", "failed (REFER 405)"},
		"no notify": {referStatus("CA1", "", "202", ""), "no-notify", "no-notify (REFER 202)"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			x := newHarness(t, "https://host.example", true)
			x.transferring(t, "CA1")
			token := answeredToken(t, x.post(ReferStatusPath, tc.params), "host.example")
			if c, err := x.tokens.Verify(token, "CA1", x.now); err != nil || c.ChannelID != testChannel || c.AgentID != testAgent {
				t.Fatalf("token %+v %v", c, err)
			}
			s := x.sessions.get(t, "CA1")
			tr := s.LastTransfer()
			if s.State != session.Transferring || tr.Status != tc.wantStatus {
				t.Fatalf("session %s, transfer %+v", s.State, tr)
			}
			last := s.Timeline[len(s.Timeline)-1]
			if last.Type != session.EventTransferFailed || last.Detail != tc.wantDetail {
				t.Fatalf("last event %+v", last)
			}
		})
	}
}

func TestReferStatusCallerHungUp(t *testing.T) {
	x := newHarness(t, "https://host.example", true)
	x.transferring(t, "CA1")
	wantHangup(t, x.post(ReferStatusPath, referStatus("CA1", "canceled", "202", "180")))
	if s := x.sessions.get(t, "CA1"); s.State != session.Ended || s.EndReason != "caller_hangup_during_transfer" {
		t.Fatalf("session %s %q", s.State, s.EndReason)
	}
}

// A refer outcome for a call with no transfer in flight (a replay, or a late
// duplicate) must not end the call: the answer is an empty <Response/>
// (issue 9; it was <Hangup/>), nothing is written and no token is issued.
func TestReferStatusNotTransferring(t *testing.T) {
	for _, st := range []session.State{session.Ringing, session.Streaming, session.Ended, session.Transferred} {
		for _, status := range []string{"busy", "in-progress", "canceled"} {
			t.Run(string(st)+"/"+status, func(t *testing.T) {
				x := newHarness(t, "https://host.example", true)
				x.streaming(t, "CA1", st)
				before := x.sessions.get(t, "CA1")
				wantEmpty(t, x.post(ReferStatusPath, referStatus("CA1", status, "202", "486")))
				if x.sessions.writes.Load() != 0 || x.issuer.calls.Load() != 0 {
					t.Fatal("session written or token issued")
				}
				if after := x.sessions.get(t, "CA1"); !reflect.DeepEqual(before, after) {
					t.Fatalf("session changed:\n%+v\n%+v", before, after)
				}
				if got := x.loggedReasons("CA1"); len(got) != 1 || got[0] != "not_transferring_"+string(st) {
					t.Errorf("logged %v", got)
				}
			})
		}
	}
	t.Run("unknown call", func(t *testing.T) {
		x := newHarness(t, "https://host.example", true)
		wantHangup(t, x.post(ReferStatusPath, referStatus("CA9", "busy", "202", "486")))
	})
}

// wantEmpty checks an answer is the empty document <Response/>.
func wantEmpty(t *testing.T, w *httptest.ResponseRecorder) {
	t.Helper()
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "text/xml" {
		t.Fatalf("status %d, Content-Type %q", w.Code, w.Header().Get("Content-Type"))
	}
	root := mustParse(t, w.Body.String())
	if root.Name != "Response" || len(root.Children) != 0 || root.Text != "" {
		t.Fatalf("want an empty <Response/>, got %s", w.Body)
	}
}
