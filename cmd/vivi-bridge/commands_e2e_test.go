package main

import (
	"net/http"
	"strings"
	"testing"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/store"
	"github.com/vivi/bridge/twiliotest"
)

// orphan makes the call's session name a pod that no longer runs (nobody
// listens on its topic): what the session looks like when its pod died.
func (e *e2e) orphan(sid string) {
	e.t.Helper()
	st := store.NewRedis(e.rdb, store.Options{Prefix: e.prefix})
	if _, err := st.UpdateSession(e.ctx, sid, func(s *session.Session) error { s.PodID = "pod-gone"; return nil }); err != nil {
		e.t.Fatal(err)
	}
}

func callUpdates(tw *twiliotest.Twilio, sid string) []twiliotest.RESTRequest {
	var out []twiliotest.RESTRequest
	for _, r := range tw.REST().Requests() {
		if r.Method == http.MethodPost && strings.HasSuffix(r.Path, "/Calls/"+sid+".json") {
			out = append(out, r)
		}
	}
	return out
}

// TestOperatorHangupWithDeadOwner: the session's pod does not answer; the
// hang-up goes through the Twilio REST API (Status=completed), is recorded
// on the session and answered 202; the call ends.
func TestOperatorHangupWithDeadOwner(t *testing.T) {
	e := newE2E(t, realtimetest.Options{})
	e.start("pod-a")
	b := e.start("pod-b")
	call := e.place("203.0.113.10")
	e.streamAndModel(call, 1)
	e.waitSession(call.CallSID(), "streaming", func(s *session.Session) bool { return s.State == session.Streaming })
	e.orphan(call.CallSID())
	if status, body := adminDo(t, "POST", b.url+"/v1/calls/"+call.CallSID()+"/hangup", ``); status != http.StatusAccepted {
		t.Fatalf("hangup: %d %s", status, body)
	}
	ups := callUpdates(e.tw, call.CallSID())
	if len(ups) != 1 || ups[0].Form.Get("Status") != "completed" {
		t.Fatalf("REST call updates: %+v", ups)
	}
	<-call.Done()
	s := e.session(call.CallSID())
	if !timelineHas(s, session.EventOperator, "hung up through the REST API") || s.State != session.Ended {
		t.Fatalf("session %s %+v", s.State, s.Timeline)
	}
}

// TestOperatorHangupDeadOwnerRESTFails: no owner and Twilio refuses the
// hang-up: 502 hangup_failed, the session untouched.
func TestOperatorHangupDeadOwnerRESTFails(t *testing.T) {
	e := newE2E(t, realtimetest.Options{})
	e.start("pod-a")
	b := e.start("pod-b")
	call := e.place("203.0.113.10")
	e.streamAndModel(call, 1)
	e.waitSession(call.CallSID(), "streaming", func(s *session.Session) bool { return s.State == session.Streaming })
	e.orphan(call.CallSID())
	e.watchUpdates(500)
	status, body := adminDo(t, "POST", b.url+"/v1/calls/"+call.CallSID()+"/hangup", ``)
	if status != http.StatusBadGateway || !strings.Contains(body, `"hangup_failed"`) {
		t.Fatalf("hangup: %d %s", status, body)
	}
	if s := e.session(call.CallSID()); s.State != session.Streaming || timelineHas(s, session.EventOperator, "") {
		t.Fatalf("session changed: %s %+v", s.State, s.Timeline)
	}
}

// TestOperatorTransferWithDeadOwner: no pod answers for the call: 503
// no_owner, and nothing is done (no REST update, the session untouched).
func TestOperatorTransferWithDeadOwner(t *testing.T) {
	e := newE2E(t, realtimetest.Options{})
	e.start("pod-a")
	b := e.start("pod-b")
	call := e.place("203.0.113.20")
	e.streamAndModel(call, 1)
	e.waitSession(call.CallSID(), "streaming", func(s *session.Session) bool { return s.State == session.Streaming })
	e.orphan(call.CallSID())
	status, body := adminDo(t, "POST", b.url+"/v1/calls/"+call.CallSID()+"/transfer", `{"destination":"Billing"}`)
	if status != http.StatusServiceUnavailable || !strings.Contains(body, `"no_owner"`) {
		t.Fatalf("transfer: %d %s", status, body)
	}
	if ups := callUpdates(e.tw, call.CallSID()); len(ups) != 0 {
		t.Fatalf("REST updates: %+v", ups)
	}
	if s := e.session(call.CallSID()); s.State != session.Streaming || len(s.Transfers) != 0 {
		t.Fatalf("session changed: %s %+v", s.State, s.Transfers)
	}
}
