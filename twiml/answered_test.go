package twiml

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// A burst of MaxCalls+5 webhooks before any stream opens gets exactly 5
// busy refusals (issue 9: MAX_CALLS counted only open streams, so every
// webhook of a burst was answered).
func TestVoiceBurstCountsAnsweredCalls(t *testing.T) {
	x := newHarness(t, "https://host.example", true)
	const n = maxCalls + 5
	var mu sync.Mutex
	got := map[string]int{}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			w := x.post(VoicePath, voiceParams(fmt.Sprintf("CA%d", i)))
			v := verb(t, w.Body.String())
			mu.Lock()
			got[v.Name+" "+v.Attrs["reason"]]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if got["Connect "] != maxCalls || got["Reject busy"] != 5 || len(got) != 2 {
		t.Fatalf("answers %v, want %d Connect and 5 busy", got, maxCalls)
	}
	if l := x.answered.Len(); l != maxCalls {
		t.Fatalf("%d calls counted, want %d (no place leaked)", l, maxCalls)
	}
}

// An answered call stops counting when its stream starts here (the bridge
// counts it then) or when AnswerTimeout passes; a retry of a counted call
// connects at the limit without taking another place; a refused call
// gives its place back.
func TestAnsweredCallsStopCounting(t *testing.T) {
	x := newHarness(t, "https://host.example", true)
	ids := make([]string, maxCalls)
	for i := range maxCalls {
		sid := fmt.Sprintf("CA%d", i)
		answeredToken(t, x.post(VoicePath, voiceParams(sid)), "host.example")
		ids[i] = x.sessions.get(t, sid).Connect.ID
	}
	wantRejected(t, x.post(VoicePath, voiceParams("CAx")), Busy)

	// Twilio retries CA0's webhook: the same call, no new place.
	answeredToken(t, x.post(VoicePath, voiceParams("CA0")), "host.example")
	if l := x.answered.Len(); l != maxCalls {
		t.Fatalf("after a retry %d counted", l)
	}

	// CA0's stream starts on this pod: the bridge counts it from now on.
	x.answered.Started(ids[0])
	x.calls.active = func() int { return 1 }
	wantRejected(t, x.post(VoicePath, voiceParams("CAx")), Busy)
	x.calls.active = func() int { return 0 } // CA0 hung up
	answeredToken(t, x.post(VoicePath, voiceParams("CA3")), "host.example")
	wantRejected(t, x.post(VoicePath, voiceParams("CAy")), Busy)

	// The others' streams went to other pods: at the deadline they stop counting.
	x.now = x.now.Add(AnswerTimeout - time.Millisecond)
	wantRejected(t, x.post(VoicePath, voiceParams("CAy")), Busy)
	x.now = x.now.Add(time.Millisecond)
	answeredToken(t, x.post(VoicePath, voiceParams("CAy")), "host.example")
	if l := x.answered.Len(); l != 1 {
		t.Fatalf("%d counted after the deadline, want 1", l)
	}

	// A call refused after the limit check (routing) gives its place back.
	p := voiceParams("CAz")
	p.Set("To", "sip:2002@x")
	wantRejected(t, x.post(VoicePath, p), Rejected)
	if l := x.answered.Len(); l != 1 {
		t.Fatalf("%d counted after a refusal, want 1", l)
	}
	for _, e := range x.logs.All() {
		if m := e.ContextMap(); m["reason"] == "busy" && (m["answered_calls"] == nil || m["max_calls"] == nil) {
			t.Fatalf("busy logged without the counts: %v", m)
		}
	}
}
