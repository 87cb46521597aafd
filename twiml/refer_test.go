package twiml

import (
	"net/url"
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

func TestReferStatusNotTransferring(t *testing.T) {
	for _, st := range []session.State{session.Streaming, session.Ended, session.Transferred} {
		t.Run(string(st), func(t *testing.T) {
			x := newHarness(t, "https://host.example", true)
			x.streaming(t, "CA1", st)
			wantHangup(t, x.post(ReferStatusPath, referStatus("CA1", "busy", "202", "486")))
			if x.sessions.writes.Load() != 0 || x.issuer.calls.Load() != 0 {
				t.Fatal("session written or token issued")
			}
		})
	}
	t.Run("unknown call", func(t *testing.T) {
		x := newHarness(t, "https://host.example", true)
		wantHangup(t, x.post(ReferStatusPath, referStatus("CA9", "busy", "202", "486")))
	})
}
