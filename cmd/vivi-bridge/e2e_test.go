package main

import (
	"bytes"
	"encoding/xml"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiliotest"
)

// twimlDoc is a parsed TwiML answer.
type twimlDoc struct {
	XMLName xml.Name `xml:"Response"`
	Reject  *struct {
		Reason string `xml:"reason,attr"`
	} `xml:"Reject"`
	Connect *struct {
		Action string `xml:"action,attr"`
		Stream struct {
			URL            string `xml:"url,attr"`
			StatusCallback string `xml:"statusCallback,attr"`
			Params         []struct {
				Name  string `xml:"name,attr"`
				Value string `xml:"value,attr"`
			} `xml:"Parameter"`
		} `xml:"Stream"`
	} `xml:"Connect"`
}

func (e *e2e) voice(sid, ip, to string, sign bool) (int, twimlDoc, string) {
	e.t.Helper()
	form := url.Values{
		"AccountSid": {e2eAccount}, "ApiVersion": {"2010-04-01"}, "CallSid": {sid}, "CallStatus": {"ringing"},
		"Direction": {"inbound"}, "From": {"sip:+14155550100@" + ip}, "To": {to}, "SipSourceIp": {ip},
		"SipDomain": {"vivi.sip.twilio.com"}, "SipCallId": {"abc@pbx"},
	}
	token := e2eAuthToken
	if !sign {
		token = "wrongtoken"
	}
	resp, err := twiliotest.PostForm(e.ctx, nil, e.lb.URL, e.lb.URL, "/twilio/voice", token, form)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var doc twimlDoc
	if resp.StatusCode == http.StatusOK {
		if err := xml.Unmarshal(body, &doc); err != nil {
			e.t.Fatalf("TwiML %s: %v", body, err)
		}
	}
	return resp.StatusCode, doc, string(body)
}

// TestServeAnswersSignedWebhook is the first issue's "done": serve with a
// channel applied from YAML answers a signed webhook with the right TwiML,
// and refuses what it must, storing nothing.
func TestServeAnswersSignedWebhook(t *testing.T) {
	e := newE2E(t, realtimetest.Options{})
	pod := e.start("pod-a")
	host := strings.TrimPrefix(e.lb.URL, "http://")
	// An agent switched out of realtime mode after its channel was set up.
	if err := pod.store.SaveAgent(e.ctx, channel.Agent{ID: "sleepy", Name: "Not realtime"}); err != nil {
		t.Fatal(err)
	}
	if err := pod.store.SaveChannel(e.ctx, channel.Channel{ID: "sleepy-pbx", Name: "n", OriginHost: "203.0.113.50",
		OriginIPs: []string{"203.0.113.50"}, Extensions: []string{"1001"}, AgentID: "sleepy"}); err != nil {
		t.Fatal(err)
	}

	sid := twiliotest.NewCallSID()
	status, doc, body := e.voice(sid, "203.0.113.10", "sip:1001@vivi.sip.twilio.com;transport=tls", true)
	if status != 200 || doc.Connect == nil {
		t.Fatalf("status %d: %s", status, body)
	}
	// The action names the connect generation (issue 9: a stale connect-ended is told apart).
	if !strings.HasPrefix(doc.Connect.Action, e.lb.URL+"/twilio/connect-ended?connect=") || doc.Connect.Stream.URL != "wss://"+host+"/twilio/stream" ||
		doc.Connect.Stream.StatusCallback != e.lb.URL+"/twilio/stream-status" || len(doc.Connect.Stream.Params) != 1 ||
		doc.Connect.Stream.Params[0].Name != "token" {
		t.Fatalf("TwiML %s", body)
	}
	tokens, err := session.NewTokens([]byte(e2eSecret), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	token := doc.Connect.Stream.Params[0].Value
	c, err := tokens.Verify(token, sid, time.Now())
	if err != nil || c.ChannelID != "tls-pbx" || c.AgentID != "reception" {
		t.Fatalf("token claims %+v, %v", c, err)
	}
	if _, err := tokens.Verify(token, twiliotest.NewCallSID(), time.Now()); err == nil {
		t.Fatal("token verifies for another call")
	}
	s := e.session(sid)
	if s.State != session.Ringing || s.ChannelID != "tls-pbx" || s.SourceIP != "203.0.113.10" || s.From != "sip:+14155550100@203.0.113.10" {
		t.Fatalf("stored session %+v", s)
	}
	if ttl := e.rdb.TTL(e.ctx, e.prefix+"{sess}:call:"+sid).Val(); ttl <= 0 {
		t.Fatalf("session key has no expiry (%v)", ttl)
	}

	for name, tc := range map[string]struct{ ip, to string }{
		"unknown_source_ip":  {"198.51.100.1", "sip:1001@vivi.sip.twilio.com"},
		"unknown_extension":  {"203.0.113.10", "sip:1999@vivi.sip.twilio.com"},
		"bad extension":      {"203.0.113.10", "sip:front@vivi.sip.twilio.com"},
		"no_agent":           {"203.0.113.40", "sip:1001@vivi.sip.twilio.com"},
		"agent_not_realtime": {"203.0.113.50", "sips:1001@vivi.sip.twilio.com"},
	} {
		t.Run(name, func(t *testing.T) {
			sid := twiliotest.NewCallSID()
			status, doc, body := e.voice(sid, tc.ip, tc.to, true)
			if status != 200 || doc.Reject == nil || doc.Reject.Reason != "rejected" {
				t.Fatalf("status %d: %s", status, body)
			}
			if n := e.rdb.Exists(e.ctx, e.prefix+"{sess}:call:"+sid).Val(); n != 0 {
				t.Fatal("a rejected call stored a session")
			}
		})
	}
	t.Run("bad signature", func(t *testing.T) {
		sid := twiliotest.NewCallSID()
		if status, _, _ := e.voice(sid, "203.0.113.10", "sip:1001@vivi.sip.twilio.com", false); status != http.StatusForbidden {
			t.Fatalf("status %d, want 403", status)
		}
		if n := e.rdb.Exists(e.ctx, e.prefix+"{sess}:call:"+sid).Val(); n != 0 {
			t.Fatal("a refused webhook stored a session")
		}
	})
}

// TestCallRelaysBothWays runs one call through the real server and real
// Redis: the greeting reaches Twilio byte-identical, a mark after each
// chunk; the caller's audio reaches the model byte-identical; the caller's
// hang-up ends the session with its reason.
func TestCallRelaysBothWays(t *testing.T) {
	greeting := realtimetest.Pattern(4000)
	e := newE2E(t, realtimetest.Options{Greeting: greeting, ChunkBytes: 400})
	e.start("pod-a")
	call := e.place("203.0.113.10")
	stream, conn := e.streamAndModel(call, 1)
	if err := stream.WaitPlayedBytes(e.ctx, len(greeting)); err != nil {
		t.Fatal(err)
	}
	if got := stream.ReceivedAudio(); !bytes.Equal(got, greeting) {
		t.Fatalf("Twilio received %d bytes, not the greeting's %d", len(got), len(greeting))
	}
	var kinds []string
	for _, m := range stream.Messages() {
		kinds = append(kinds, m.Event)
	}
	if want := strings.Repeat("media mark ", len(greeting)/400); strings.Join(kinds, " ")+" " != want {
		t.Fatalf("Twilio got %v, want media/mark pairs", kinds)
	}
	if errs := stream.ProtocolErrors(); len(errs) != 0 {
		t.Fatalf("protocol errors: %v", errs)
	}
	speech := realtimetest.Tone(1600)
	stream.Say(speech)
	e.waitSession(call.CallSID(), "streaming on pod-a", func(s *session.Session) bool {
		return s.State == session.Streaming && s.PodID == "pod-a" && s.StreamSID == stream.StreamSID()
	})
	_ = waitFor(func() bool { return bytes.Contains(conn.InputAudio(), speech) }) // judged just below
	if in, sent := conn.InputAudio(), stream.SentAudio(); !bytes.HasPrefix(sent, in) || !bytes.Contains(in, speech) {
		t.Fatalf("model input (%d bytes) is not what the caller sent (%d bytes)", len(in), len(sent))
	}
	call.Hangup(e.ctx)
	s := e.waitSession(call.CallSID(), "ended", func(s *session.Session) bool { return s.State == session.Ended })
	// The bridge (on stop) and Twilio's stream-stopped callback both end
	// the call; whichever lands first gives the reason.
	if s.EndReason != "caller_hangup" && s.EndReason != "stream_stopped" {
		t.Fatalf("end reason %q", s.EndReason)
	}
	select {
	case <-conn.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("model socket still open after the call ended")
	}
	if ttl := e.rdb.TTL(e.ctx, e.prefix+"{sess}:call:"+call.CallSID()).Val(); ttl < 100*time.Hour {
		t.Fatalf("ended session kept for %v, want SESSION_RETENTION", ttl)
	}
	var types []string
	for _, ev := range s.Timeline {
		types = append(types, ev.Type)
	}
	for _, want := range []string{"answered", "stream_started", "model_connected", "ended"} {
		if !strings.Contains(strings.Join(types, ","), want) {
			t.Fatalf("timeline %v lacks %s", types, want)
		}
	}
}
