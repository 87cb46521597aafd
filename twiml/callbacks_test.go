package twiml

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/vivi/bridge/session"
)

func streamStatus(callSID, event, streamSID, streamErr string) url.Values {
	p := url.Values{"AccountSid": {"ACtest"}, "CallSid": {callSID}, "StreamSid": {streamSID},
		"StreamEvent": {event}, "Timestamp": {"2026-03-01T12:00:00Z"}}
	if streamErr != "" {
		p.Set("StreamError", streamErr)
	}
	return p
}

func callStatus(callSID, status string) url.Values {
	return url.Values{"AccountSid": {"ACtest"}, "CallSid": {callSID}, "CallStatus": {status},
		"CallbackSource": {"call-progress-events"}, "SequenceNumber": {"0"}}
}

// streaming stores a session streaming MZ1 for callSID.
func (x *harness) streaming(t *testing.T, callSID string, state session.State) {
	t.Helper()
	s := session.New(callSID, testChannel, testAgent, x.now)
	s.State, s.StreamSID = state, "MZ1"
	x.sessions.put(s)
}

func wantNoContent(t *testing.T, w *httptest.ResponseRecorder) {
	t.Helper()
	if w.Code != http.StatusNoContent {
		t.Fatalf("status %d, want 204: %s", w.Code, w.Body)
	}
}

func TestStatusCallbacksEndOnce(t *testing.T) {
	tests := map[string]struct {
		path       string
		first      url.Values
		second     url.Values
		wantReason string
	}{
		"stream stopped then error": {StreamStatusPath, streamStatus("CA1", "stream-stopped", "MZ1", ""),
			streamStatus("CA1", "stream-error", "MZ1", "boom"), "stream_stopped"},
		"stream error then stopped": {StreamStatusPath, streamStatus("CA1", "stream-error", "MZ1", "31920 handshake failed"),
			streamStatus("CA1", "stream-stopped", "MZ1", ""), "stream_error:31920 handshake failed"},
		"call completed then busy": {CallStatusPath, callStatus("CA1", "completed"), callStatus("CA1", "busy"), "call_completed"},
		"call canceled twice":      {CallStatusPath, callStatus("CA1", "canceled"), callStatus("CA1", "canceled"), "call_canceled"},
		"no-answer":                {CallStatusPath, callStatus("CA1", "no-answer"), callStatus("CA1", "failed"), "call_no-answer"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			x := newHarness(t, "https://host.example", true)
			x.streaming(t, "CA1", session.Streaming)
			wantNoContent(t, x.post(tc.path, tc.first))
			endedAt := x.now
			x.now = x.now.Add(time.Minute)
			wantNoContent(t, x.post(tc.path, tc.second))
			if n := x.sessions.writes.Load(); n != 1 {
				t.Errorf("%d session writes, want 1: the second callback changes nothing", n)
			}
			s := x.sessions.get(t, "CA1")
			if s.State != session.Ended || s.EndReason != tc.wantReason || s.EndedAt == nil || !s.EndedAt.Equal(endedAt) {
				t.Fatalf("session %s %q %v, want ended %q at %v", s.State, s.EndReason, s.EndedAt, tc.wantReason, endedAt)
			}
			if n := countEvents(s, session.EventEnded); n != 1 {
				t.Fatalf("%d end events", n)
			}
		})
	}
}

func TestStatusCallbacksLeaveSessions(t *testing.T) {
	tests := map[string]struct {
		state      session.State
		path       string
		params     url.Values
		wantState  session.State
		wantReason string
	}{
		"transfer survives stream-stopped": {session.Transferring, StreamStatusPath,
			streamStatus("CA1", "stream-stopped", "MZ1", ""), session.Transferring, ""},
		"transfer survives stream-error": {session.Transferring, StreamStatusPath,
			streamStatus("CA1", "stream-error", "MZ1", "x"), session.Transferring, ""},
		"stream-started is recorded only": {session.Streaming, StreamStatusPath,
			streamStatus("CA1", "stream-started", "MZ1", ""), session.Streaming, ""},
		"an older stream's stop": {session.Streaming, StreamStatusPath,
			streamStatus("CA1", "stream-stopped", "MZ0", ""), session.Streaming, ""},
		"unknown stream event": {session.Streaming, StreamStatusPath,
			streamStatus("CA1", "stream-paused", "MZ1", ""), session.Streaming, ""},
		"caller hangs up during transfer": {session.Transferring, CallStatusPath,
			callStatus("CA1", "completed"), session.Ended, "call_completed"},
		"transferred is left as is": {session.Transferred, CallStatusPath,
			callStatus("CA1", "completed"), session.Transferred, ""},
		"in-progress is not terminal": {session.Streaming, CallStatusPath,
			callStatus("CA1", "in-progress"), session.Streaming, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			x := newHarness(t, "https://host.example", true)
			x.streaming(t, "CA1", tc.state)
			wantNoContent(t, x.post(tc.path, tc.params))
			s := x.sessions.get(t, "CA1")
			if s.State != tc.wantState || s.EndReason != tc.wantReason {
				t.Fatalf("session %s %q, want %s %q", s.State, s.EndReason, tc.wantState, tc.wantReason)
			}
		})
	}
}

func TestStatusCallbacksUnknownAndStoreDown(t *testing.T) {
	for _, tc := range []struct {
		path   string
		params url.Values
	}{
		{StreamStatusPath, streamStatus("CA404", "stream-stopped", "MZ1", "")},
		{CallStatusPath, callStatus("CA404", "completed")},
	} {
		t.Run(tc.path, func(t *testing.T) {
			x := newHarness(t, "https://host.example", true)
			wantNoContent(t, x.post(tc.path, tc.params))
			if x.sessions.count() != 0 {
				t.Fatal("a session was created for an unknown call")
			}

			x.streaming(t, "CA404", session.Streaming)
			x.sessions.updateFn = func(string) error { return errStoreDown }
			if w := x.post(tc.path, tc.params); w.Code != http.StatusInternalServerError {
				t.Fatalf("store down: status %d, want 500", w.Code)
			}
			if got := x.loggedReasons("CA404"); len(got) == 0 || got[len(got)-1] != "store_unavailable" {
				t.Fatalf("logged %v", got)
			}
		})
	}
}

func connectEnded(callSID string) url.Values {
	return url.Values{"AccountSid": {"ACtest"}, "CallSid": {callSID}, "CallStatus": {"in-progress"}}
}

// Each reconnect is a new connect generation; Twilio posts the action of
// the <Connect> it ran, so each callback follows the previous answer.
func TestConnectEndedReconnectsUpToTheLimit(t *testing.T) {
	x := newHarness(t, "https://host.example/", true)
	x.streaming(t, "CA1", session.Streaming) // a session of an earlier version: no generation
	action := ConnectEndedPath
	for i := 1; i <= MaxReconnects; i++ {
		var token string
		token, action = answered(t, x.post(action, connectEnded("CA1")), "host.example")
		c, err := x.tokens.Verify(token, "CA1", x.now)
		if err != nil || c.ChannelID != testChannel || c.AgentID != testAgent {
			t.Fatalf("reconnect %d: token %+v, %v", i, c, err)
		}
		s := x.sessions.get(t, "CA1")
		if n := countEvents(s, EventReconnect); n != i || s.State != session.Streaming || s.StreamSID != "" {
			t.Fatalf("reconnect %d: %d reconnect events, state %s, stream %q", i, n, s.State, s.StreamSID)
		}
		if s.Connect == nil || s.Connect.ID != c.ID {
			t.Fatalf("reconnect %d: stored generation %+v, token %s", i, s.Connect, c.ID)
		}
		// The stream the reconnect replaced stops afterwards: the call goes on.
		wantNoContent(t, x.post(StreamStatusPath, streamStatus("CA1", "stream-stopped", "MZ"+strconv.Itoa(i), "")))
		if s := x.sessions.get(t, "CA1"); s.State != session.Streaming {
			t.Fatalf("reconnect %d: the replaced stream's stop ended the call (%s)", i, s.EndReason)
		}
		x.sessions.mu.Lock()
		x.sessions.byID["CA1"].StreamSID = "MZ" + strconv.Itoa(i+1) // the bridge took the new stream
		x.sessions.mu.Unlock()
	}
	wantHangup(t, x.post(action, connectEnded("CA1")))
	s := x.sessions.get(t, "CA1")
	if s.State != session.Ended || s.EndReason != "reconnect_limit" {
		t.Fatalf("after the limit: %s %q", s.State, s.EndReason)
	}
}

// liveCall answers the voice webhook for callSID and lets the bridge take
// the stream MZ1; it returns the <Connect action> path of the answer.
func (x *harness) liveCall(t *testing.T, callSID string) string {
	t.Helper()
	_, action := answered(t, x.post(VoicePath, voiceParams(callSID)), "host.example")
	x.sessions.mu.Lock()
	s := x.sessions.byID[callSID]
	s.State, s.PodID, s.StreamSID = session.Streaming, "pod-a", "MZ1"
	x.sessions.mu.Unlock()
	return action
}

// A connect-ended that contradicts what the session knows (issue 9: four
// signed posts while the stream was live minted three tokens, then ended
// the call with reconnect_limit) is stale: an empty <Response/>, no token,
// no write, the live stream kept.
func TestConnectEndedStaleLeavesLiveCall(t *testing.T) {
	withStream := func(sid string) url.Values {
		p := connectEnded("CA1")
		p.Set("StreamSid", sid)
		return p
	}
	tests := map[string]func(action string) (string, url.Values){
		"another generation": func(string) (string, url.Values) {
			return ConnectEndedPath + "?connect=0badc0ffee", connectEnded("CA1")
		},
		"another stream":       func(a string) (string, url.Values) { return a, withStream("MZ0") },
		"generation + garbage": func(a string) (string, url.Values) { return a + "x", connectEnded("CA1") },
	}
	for name, callback := range tests {
		t.Run(name, func(t *testing.T) {
			x := newHarness(t, "https://host.example", true)
			path, params := callback(x.liveCall(t, "CA1"))
			before := x.sessions.get(t, "CA1")
			for range 4 {
				wantEmpty(t, x.post(path, params))
			}
			after := x.sessions.get(t, "CA1")
			if !reflect.DeepEqual(before, after) || x.sessions.writes.Load() != 0 {
				t.Fatalf("session changed (%d writes):\n%+v\n%+v", x.sessions.writes.Load(), before, after)
			}
			if n := x.issuer.calls.Load(); n != 1 {
				t.Fatalf("%d tokens issued, want only the webhook's", n)
			}
			if got := x.loggedReasons("CA1"); len(got) != 5 || got[4] != outcomeStale {
				t.Errorf("logged %v", got)
			}
		})
	}
}

// The callback of the current generation (the stream's pod died) reconnects
// once; the same callback again is about a generation that is gone.
func TestConnectEndedRepeatedReconnectsOnce(t *testing.T) {
	x := newHarness(t, "https://host.example", true)
	action := x.liveCall(t, "CA1")
	params := connectEnded("CA1")
	params.Set("StreamSid", "MZ1") // a variation Twilio may send: the same stream
	answered(t, x.post(action, params), "host.example")
	for range 3 {
		wantEmpty(t, x.post(action, params))
	}
	s := x.sessions.get(t, "CA1")
	if s.State != session.Streaming || countEvents(s, EventReconnect) != 1 || x.issuer.calls.Load() != 2 {
		t.Fatalf("state %s, %d reconnects, %d tokens", s.State, countEvents(s, EventReconnect), x.issuer.calls.Load())
	}
}

func TestConnectEndedHangsUp(t *testing.T) {
	tests := map[string]struct {
		state     session.State // empty: no session
		wantState session.State
	}{
		"unknown call": {},
		"ended":        {session.Ended, session.Ended},
		"transferred":  {session.Transferred, session.Transferred},
		"transferring": {session.Transferring, session.Transferring},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			x := newHarness(t, "https://host.example", true)
			if tc.state != "" {
				x.streaming(t, "CA1", tc.state)
			}
			wantHangup(t, x.post(ConnectEndedPath, connectEnded("CA1")))
			if tc.state == "" {
				if x.sessions.count() != 0 {
					t.Fatal("session created")
				}
				return
			}
			s := x.sessions.get(t, "CA1")
			if x.sessions.writes.Load() != 0 {
				t.Error("session written")
			}
			if s.State != tc.wantState || countEvents(s, EventReconnect) != 0 {
				t.Fatalf("session %s, %d reconnects", s.State, countEvents(s, EventReconnect))
			}
			if x.issuer.calls.Load() != 0 {
				t.Fatal("token issued")
			}
		})
	}
	t.Run("store down", func(t *testing.T) {
		x := newHarness(t, "https://host.example", true)
		x.streaming(t, "CA1", session.Streaming)
		x.sessions.updateFn = func(string) error { return errStoreDown }
		if w := x.post(ConnectEndedPath, connectEnded("CA1")); w.Code != http.StatusInternalServerError {
			t.Fatalf("status %d, want 500", w.Code)
		}
	})
}

func wantHangup(t *testing.T, w *httptest.ResponseRecorder) {
	t.Helper()
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "text/xml" {
		t.Fatalf("status %d, Content-Type %q", w.Code, w.Header().Get("Content-Type"))
	}
	if v := verb(t, w.Body.String()); v.Name != "Hangup" {
		t.Fatalf("want <Hangup/>, got %s", w.Body)
	}
}

// A connect-ended posted to the bare path (as the documented contract shows
// it, without the generation) is not stale for that alone: with no pod to
// say the stream is live, the call reconnects as before generations existed.
func TestConnectEndedBarePathReconnects(t *testing.T) {
	x := newHarness(t, "https://host.example", true)
	x.liveCall(t, "CA1")
	answered(t, x.post(ConnectEndedPath, connectEnded("CA1")), "host.example")
	if s := x.sessions.get(t, "CA1"); countEvents(s, EventReconnect) != 1 {
		t.Fatalf("reconnects %d, want 1", countEvents(s, EventReconnect))
	}
}
