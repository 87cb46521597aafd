package main

import (
	"testing"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/twiliotest"
)

// MAX_CALLS (5 here) counts the calls a pod answered whose stream has not
// started as well as open streams (issue 9: a burst of webhooks was all
// answered before any stream opened). A call whose stream started on the
// pod counts once: the bridge's token claim ends its answered count.
func TestMaxCallsCountsAnsweredCalls(t *testing.T) {
	e := newE2E(t, realtimetest.Options{})
	e.start("pod-a")
	call := e.place("203.0.113.10")
	e.streamAndModel(call, 1) // live on pod-a: counted as an open stream only

	answered := 0
	for range 4 + 3 {
		status, doc, body := e.voice(twiliotest.NewCallSID(), "203.0.113.10", "sip:1001@vivi.sip.twilio.com;transport=tls", true)
		switch {
		case status == 200 && doc.Connect != nil:
			answered++
		case status == 200 && doc.Reject != nil && doc.Reject.Reason == "busy":
		default:
			t.Fatalf("status %d: %s", status, body)
		}
	}
	if answered != 4 {
		t.Fatalf("%d webhooks answered with one call streaming and MAX_CALLS=5, want 4", answered)
	}
}
