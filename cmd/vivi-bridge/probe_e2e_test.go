package main

import (
	"encoding/xml"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiliotest"
	"github.com/vivi/bridge/twiml"
)

// connectEnded posts a signed <Connect action> callback for the session's
// current connect generation and returns the answer's status and body.
func (e *e2e) connectEnded(s *session.Session) (int, string) {
	e.t.Helper()
	if s.Connect == nil {
		e.t.Fatal("session has no connect generation")
	}
	form := url.Values{"AccountSid": {e2eAccount}, "CallSid": {s.CallSID}, "CallStatus": {"in-progress"}}
	path := twiml.ConnectEndedPath + "?" + twiml.ConnectParam + "=" + url.QueryEscape(s.Connect.ID)
	resp, err := twiliotest.PostForm(e.ctx, nil, e.lb.URL, e.lb.URL, path, e2eAuthToken, form)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// isEmptyResponse reports whether body is an empty <Response/>.
func isEmptyResponse(body string) bool {
	var doc struct {
		XMLName xml.Name `xml:"Response"`
		Inner   string   `xml:",innerxml"`
	}
	return xml.Unmarshal([]byte(body), &doc) == nil && strings.TrimSpace(doc.Inner) == ""
}

// Issue 9: four signed connect-ended posts for the current generation while
// the stream is live on pod A, landing on pod B, are stale: pod A answers
// the probe live, every post gets an empty <Response/>, the session is
// unchanged in Redis (no token, no reconnect, the stream kept), and the
// call goes on relaying audio both ways.
func TestConnectEndedWhileStreamLiveOnOtherPod(t *testing.T) {
	e := newE2E(t, realtimetest.Options{Echo: true})
	e.start("pod-a")
	podB := e.start("pod-b")
	call := e.place("203.0.113.10")
	stream, conn := e.streamAndModel(call, 1)
	before := e.waitSession(call.CallSID(), "streaming on pod-a", func(s *session.Session) bool {
		return s.State == session.Streaming && s.PodID == "pod-a" && s.StreamSID == stream.StreamSID()
	})
	e.wantCallerAudio(conn)

	e.route("pod-b")
	for i := range 4 {
		if status, body := e.connectEnded(before); status != http.StatusOK || !isEmptyResponse(body) {
			t.Fatalf("post %d: status %d: %s", i+1, status, body)
		}
	}
	after := e.session(call.CallSID())
	if !reflect.DeepEqual(before.Connect, after.Connect) || after.State != session.Streaming ||
		after.StreamSID != stream.StreamSID() || after.PodID != "pod-a" {
		t.Fatalf("session changed: before %+v\nafter %+v", before, after)
	}
	for _, ev := range after.Timeline {
		if ev.Type == twiml.EventReconnect {
			t.Fatalf("reconnect recorded: %+v", ev)
		}
	}
	stale := 0
	for _, l := range podB.logs.FilterMessage("connect ended ignored").All() {
		m := l.ContextMap()
		if l.Level == zapcore.WarnLevel && m["reason"] == "stale_callback" && m["call_sid"] == call.CallSID() && m["stream_sid"] == stream.StreamSID() {
			stale++
		}
	}
	if stale != 4 {
		t.Fatalf("%d stale_callback warnings on pod-b, want 4", stale)
	}
	// Both ways: caller audio reaches the model, the model's echo the caller.
	e.wantCallerAudio(conn)
	got := stream.ReceivedBytes()
	if err := waitFor(func() bool { return stream.ReceivedBytes() > got+1600 }); err != nil {
		t.Fatal("model audio stopped reaching the caller")
	}
	if call.Outcome() != "" {
		t.Fatalf("call ended: %s", call.Outcome())
	}
}

// The race guard: Twilio closes the websocket and fetches the <Connect
// action> at once (the simulator does so as soon as its stream closed). The
// owning pod must not answer the probe live from a stale view: the answer
// is a reconnect (or a hang-up when the pod's end of the call landed
// first), never the empty document that would drop the caller.
func TestConnectEndedAfterCloseIsNotStale(t *testing.T) {
	e := newE2E(t, realtimetest.Options{Echo: true})
	pod := e.start("pod-a")
	call := e.place("203.0.113.10")
	stream, conn := e.streamAndModel(call, 1)
	e.waitSession(call.CallSID(), "streaming", func(s *session.Session) bool {
		return s.State == session.Streaming && s.StreamSID == stream.StreamSID()
	})
	e.wantCallerAudio(conn)
	stream.Close()
	var answer string
	if err := waitFor(func() bool {
		for _, ev := range call.Events() {
			if v, ok := strings.CutPrefix(ev.What, "connect-ended -> "); ok {
				answer = v
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatalf("no connect-ended answer: %v", call.Events())
	}
	if answer != "Connect" && answer != "Hangup" {
		t.Fatalf("connect-ended answered %q: want a reconnect or a hang-up (events %v)", answer, call.Events())
	}
	if n := pod.logs.FilterField(zapcore.Field{Key: "probe", Type: zapcore.StringType, String: "live"}).Len(); n != 0 {
		t.Fatalf("%d probes of a closed stream answered live", n)
	}
	t.Logf("connect-ended answered %s", answer)
}

// The race guard, with the close still on its way: the Twilio side of the
// stream is gone (it sends nothing more) but pod A has not seen the socket
// close when connect-ended arrives on pod B. A naive "the loop is live"
// check would answer live and drop the caller; the probe waits for a fresh
// frame, gets none within its window, and the caller is reconnected.
func TestConnectEndedBeforeCloseSeenReconnects(t *testing.T) {
	e := newE2E(t, realtimetest.Options{Greeting: []byte{}}) // no audio out, so no mark echoes in
	podA := e.start("pod-a")
	e.start("pod-b")
	sid := twiliotest.NewCallSID()
	status, doc, body := e.voice(sid, "203.0.113.10", "sip:1001@vivi.sip.twilio.com;transport=tls", true)
	if status != http.StatusOK || doc.Connect == nil {
		t.Fatalf("voice: %d %s", status, body)
	}
	host := strings.TrimPrefix(e.lb.URL, "http://")
	stream, err := twiliotest.Dial(e.ctx, twiliotest.CallConfig{
		URL: "ws" + strings.TrimPrefix(podA.url, "http") + "/twilio/stream", SignURL: "wss://" + host + "/twilio/stream",
		AuthToken: e2eAuthToken, AccountSID: e2eAccount, CallSID: sid,
		Parameters:    map[string]string{"token": doc.Connect.Stream.Params[0].Value},
		FrameInterval: time.Hour, // no media after start: the far end is gone
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stream.Close(); <-stream.Done() })
	s := e.waitSession(sid, "streaming on pod-a", func(s *session.Session) bool {
		return s.State == session.Streaming && s.PodID == "pod-a" && s.StreamSID == stream.StreamSID()
	})
	e.route("pod-b")
	status, body = e.connectEnded(s)
	if status != http.StatusOK || !strings.Contains(body, "<Connect") {
		t.Fatalf("status %d: %s: want a reconnect", status, body)
	}
	after := e.session(sid)
	reconnects := 0
	for _, ev := range after.Timeline {
		if ev.Type == twiml.EventReconnect {
			reconnects++
		}
	}
	if reconnects != 1 || after.StreamSID != "" || after.Connect == nil || after.Connect.ID == s.Connect.ID {
		t.Fatalf("after the reconnect: %d reconnects, stream %q, connect %+v", reconnects, after.StreamSID, after.Connect)
	}
}
