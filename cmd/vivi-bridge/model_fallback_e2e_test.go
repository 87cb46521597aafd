package main

import (
	"os"
	"strings"
	"testing"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/session"
)

// A model that refuses every dial (HTTP 503), end to end through the real
// app on real Redis: after the bridge's ModelWait (5 s, the default) the
// call is transferred to the agent's fallbackDestination through the
// normal REFER path; without one the caller hears the apology and the
// session ends with model_unavailable. Never a silent hang-up.
func TestModelUnreachableE2E(t *testing.T) {
	for _, fallback := range []bool{true, false} {
		name := "apology"
		if fallback {
			name = "fallback"
		}
		t.Run(name, func(t *testing.T) {
			e := newE2E(t, realtimetest.Options{RefuseDials: 1 << 30})
			if fallback {
				yaml := strings.Replace(e2eYAML, "    dtmf: {\"0\": Front Desk}\n",
					"    dtmf: {\"0\": Front Desk}\n    fallbackDestination: Front Desk\n", 1)
				if err := os.WriteFile(e.yaml, []byte(yaml), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			e.start("pod-a")
			updates := e.watchUpdates(200)
			call := e.place("203.0.113.10")
			if _, err := call.WaitStream(e.ctx, 1); err != nil {
				t.Fatal(err)
			}
			u := e.waitUpdates(updates, 1)[0]
			if fallback {
				_, sip := referOf(t, u.form)
				if sip != "sip:2001@203.0.113.10:5061;transport=tls" {
					t.Fatalf("fallback REFER to %q; TwiML %q", sip, u.form.Get("Twiml"))
				}
				// The transfer service and the call's writer write separately:
				// wait for both the attempt and the timeline's reason.
				s := e.waitSession(call.CallSID(), "the fallback transfer", func(s *session.Session) bool {
					return len(s.Transfers) == 1 && timelineHas(s, session.EventModelError, "model unavailable")
				})
				if s.Transfers[0].Via != "fallback" {
					t.Fatalf("session %+v", s)
				}
				return
			}
			if tw := u.form.Get("Twiml"); !strings.Contains(tw, "<Say>") || !strings.Contains(tw, "<Hangup/>") {
				t.Fatalf("apology TwiML %q", tw)
			}
			s := e.waitSession(call.CallSID(), "ended", func(s *session.Session) bool { return s.State == session.Ended })
			if s.EndReason != "model_unavailable" || !timelineHas(s, session.EventModelError, "no model session within") {
				t.Fatalf("session ended %q: %+v", s.EndReason, s.Timeline)
			}
			if e.model.Dials() < 3 {
				t.Fatalf("%d dials in ModelWait; want re-dials with backoff", e.model.Dials())
			}
		})
	}
}
