package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/delivery"
	"github.com/vivi/bridge/internal/redistest"
	"github.com/vivi/bridge/internal/testwait"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/store"
	"github.com/vivi/bridge/twiliotest"
)

// outageWait bounds each wait of the outage tests (a Redis restart, a
// reconnect, a store check every outageCheck): generous for -race on 2 cores.
const (
	outageWait  = 15 * time.Second
	outageCheck = 50 * time.Millisecond
)

// newOutageE2E is newE2E on a private redis-server the test may stop and
// restart; each pod gets its own Redis client (as separate processes do)
// and checks the store every outageCheck. The periodic reload of the config
// copy is an hour, so a copy kept fresh in a test was kept so by pub/sub.
func newOutageE2E(t *testing.T) (*e2e, *redistest.Server) {
	t.Helper()
	e := newE2E(t, realtimetest.Options{})
	rs := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	e.rdb = rdb // reads of the test go to the private server
	e.deps = func(pod string, d *appDeps) {
		client := redis.NewClient(&redis.Options{Addr: rs.Addr()})
		t.Cleanup(func() { _ = client.Close() })
		d.store = store.NewRedis(client, store.Options{Prefix: e.prefix, Outbox: delivery.Entries})
		d.storeCheck = outageCheck
		d.configReload = time.Hour
	}
	return e, rs
}

func httpGet(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitHealth waits until the pod's /healthz (always 200) contains want.
func waitHealth(t *testing.T, p *e2ePod, want string) string {
	t.Helper()
	var body string
	testwait.Until(t, outageWait, "/healthz of "+p.url+" to show "+want, func() bool {
		status, b := httpGet(t, p.url+"/healthz")
		if status != http.StatusOK {
			t.Fatalf("/healthz status %d: %s", status, b)
		}
		body = b
		return strings.Contains(b, want)
	})
	return body
}

func wantReady(t *testing.T, p *e2ePod) {
	t.Helper()
	if status, body := httpGet(t, p.url+"/readyz"); status != http.StatusOK {
		t.Fatalf("/readyz = %d %q during a store outage; want 200 (the pod can serve calls)", status, body)
	}
}

// TestRedisOutageCallAnsweredThenWrittenBack: with Redis down, a new call is
// answered (routed from the in-process copy, token minted), its stream is
// accepted (agent from the copy) and relays; the pod stays ready and
// /healthz says degraded. Redis then comes back empty: the live session is
// written back with what happened during the outage, CONFIG_FILE is
// re-applied, and the next call is answered from the store again.
func TestRedisOutageCallAnsweredThenWrittenBack(t *testing.T) {
	e, rs := newOutageE2E(t)
	a := e.start("pod-a") // applies CONFIG_FILE
	waitHealth(t, a, "config copy: 1 agents, 4 channels")

	rs.Stop()
	waitHealth(t, a, "store: degraded since")
	wantReady(t, a)

	call := e.place("203.0.113.10")
	stream, conn := e.streamAndModel(call, 1)
	e.wantCallerAudio(conn)
	wantReady(t, a)
	if got := a.logs.FilterMessage("store degraded: routing from the in-process config copy and buffering session writes until it answers again").Len(); got != 1 {
		t.Errorf("degraded logged %d times; want once", got)
	}

	rs.Restart() // empty: no persistence
	waitHealth(t, a, "store: ok since")
	s := e.waitSession(call.CallSID(), "the live session written back", func(s *session.Session) bool {
		return s.State == session.Streaming && s.StreamSID == stream.StreamSID() && s.PodID == "pod-a"
	})
	if s.ChannelID != "tls-pbx" || s.AgentID != "reception" {
		t.Fatalf("written back session: channel %q agent %q", s.ChannelID, s.AgentID)
	}
	testwait.Until(t, outageWait, "CONFIG_FILE re-applied to the empty store", func() bool {
		chs, err := store.NewRedis(e.rdb, store.Options{Prefix: e.prefix}).Channels(e.ctx)
		return err == nil && len(chs) == 4
	})
	// Logged once the apply returned, a moment after its write is visible.
	testwait.Until(t, outageWait, "the log of CONFIG_FILE re-applied", func() bool {
		return a.logs.FilterMessage("CONFIG_FILE re-applied after the store lost its data").Len() == 1
	})
	body := waitHealth(t, a, "store data lost: 1 times")
	if strings.Contains(body, "config lost") {
		t.Errorf("config reported lost although CONFIG_FILE was re-applied:\n%s", body)
	}
	e.wantCallerAudio(conn)

	// The caller's speech during and after the outage is in the record.
	stream.Stop()
	e.waitSession(call.CallSID(), "the call ended in the store", func(s *session.Session) bool { return s.State == session.Ended })

	second := e.place("203.0.113.10")
	_, conn2 := e.streamAndModel(second, 1)
	e.wantCallerAudio(conn2)
	e.waitSession(second.CallSID(), "the second call's record", func(s *session.Session) bool { return s.State == session.Streaming })
}

// TestRedisOutageRingingSessionBuffered: the ringing session the webhook
// could not create during the outage is written once Redis answers, and a
// retried webhook during the outage answers the same stream token.
func TestRedisOutageRingingSessionBuffered(t *testing.T) {
	e, rs := newOutageE2E(t)
	a := e.start("pod-a")
	waitHealth(t, a, "config copy: 1 agents, 4 channels")
	rs.Stop()
	waitHealth(t, a, "store: degraded since")

	sid := twiliotest.NewCallSID()
	to := "sip:1001@vivi.sip.twilio.com;transport=tls"
	status, doc, body := e.voice(sid, "203.0.113.20", to, true)
	if status != http.StatusOK || doc.Connect == nil {
		t.Fatalf("webhook during the outage: %d %s; want <Connect><Stream>", status, body)
	}
	_, _, retried := e.voice(sid, "203.0.113.20", to, true)
	if retried != body {
		t.Fatalf("retried webhook answered another document:\n%s\nvs\n%s", retried, body)
	}
	rs.Restart()
	s := e.waitSession(sid, "the buffered ringing session written", func(s *session.Session) bool { return s.State == session.Ringing })
	if s.ChannelID != "tcp-pbx" || s.SourceIP != "203.0.113.20" || s.Connect == nil {
		t.Fatalf("buffered session: %+v", s)
	}
}

// TestRedisLostConfigReportedAndRoutedFromCopy: a pod without CONFIG_FILE
// whose store comes back empty reports the lost configuration (health
// detail, error log, metric) and keeps answering calls from its copy; the
// operator applying it again ends the report.
func TestRedisLostConfigReportedAndRoutedFromCopy(t *testing.T) {
	e, rs := newOutageE2E(t)
	a := e.start("pod-a") // applies CONFIG_FILE, then goes away
	b := e.start("pod-b")
	waitHealth(t, b, "config copy: 1 agents, 4 channels")
	a.stop()
	e.route("pod-b")

	rs.Restart()
	t.Cleanup(func() {
		if t.Failed() {
			for _, l := range b.logs.All() {
				if l.LoggerName == "store" {
					t.Logf("%s %s %v", l.Level, l.Message, l.ContextMap())
				}
			}
		}
	})
	body := waitHealth(t, b, "config lost: since")
	if !strings.Contains(body, "config source: store (admin API)") {
		t.Errorf("/healthz:\n%s", body)
	}
	wantReady(t, b)
	if b.logs.FilterMessage("the store lost the configuration and no CONFIG_FILE is set: calls are routed from this pod's in-process copy until it is applied again (vivi-bridge apply -f, or the admin API)").Len() != 1 {
		t.Error("the loss of the configuration was not logged once at error")
	}
	if _, m := httpGet(t, b.url+"/metrics"); !strings.Contains(m, "vivi_store_config_lost 1") || !strings.Contains(m, "vivi_store_data_lost_total 1") {
		t.Errorf("metrics do not report the loss")
	}
	status, doc, resp := e.voice(twiliotest.NewCallSID(), "203.0.113.10", "sip:1001@vivi.sip.twilio.com;transport=tls", true)
	if status != http.StatusOK || doc.Connect == nil {
		t.Fatalf("webhook with the configuration lost: %d %s; want answered from the copy", status, resp)
	}

	status, resp = adminDo(t, "PUT", b.url+"/v1/agents/reception",
		`{"id":"reception","name":"Reception","realtime":true,"instructions":"Be brief."}`)
	if status != http.StatusOK && status != http.StatusCreated {
		t.Fatalf("re-create agent: %d %s", status, resp)
	}
	status, resp = adminDo(t, "POST", b.url+"/v1/channels",
		`{"id":"tls-pbx","name":"TLS PBX","originHost":"203.0.113.10","extensions":["1001"],"agentId":"reception"}`)
	if status != http.StatusCreated {
		t.Fatalf("re-create channel: %d %s", status, resp)
	}
	waitHealth(t, b, "config copy: 1 agents, 1 channels")
	if body := waitHealth(t, b, "store: ok"); strings.Contains(body, "config lost") {
		t.Errorf("still reported lost after the operator applied configuration:\n%s", body)
	}
}

// TestConfigEditReachesOtherPodsCopy: a channel created through pod A's
// admin API reaches pod B's in-process copy through pub/sub (each pod on its
// own Redis client; the periodic reload is an hour away), so that B routes
// it even when Redis then goes down.
func TestConfigEditReachesOtherPodsCopy(t *testing.T) {
	e, rs := newOutageE2E(t)
	a := e.start("pod-a")
	b := e.start("pod-b")
	waitHealth(t, b, "config copy: 1 agents, 4 channels")
	status, body := adminDo(t, "POST", a.url+"/v1/channels",
		`{"id":"new-pbx","name":"New PBX","originHost":"198.51.100.7","extensions":["3001"],"agentId":"reception"}`)
	if status != http.StatusCreated {
		t.Fatalf("create: %d %s", status, body)
	}
	waitHealth(t, b, "config copy: 1 agents, 5 channels")
	rs.Stop()
	waitHealth(t, b, "store: degraded")
	e.route("pod-b")
	st, doc, resp := e.voice(twiliotest.NewCallSID(), "198.51.100.7", "sip:3001@vivi.sip.twilio.com;transport=tls", true)
	if st != http.StatusOK || doc.Connect == nil {
		t.Fatalf("pod B during the outage, the new channel: %d %s", st, resp)
	}
}

// TestRedisOutageWritesCaughtUp: what a live call said while Redis was down
// (a Redis that keeps its data) is in its record once Redis answers again.
func TestRedisOutageWritesCaughtUp(t *testing.T) {
	e, rs := newOutageE2E(t)
	a := e.start("pod-a")
	call := e.place("203.0.113.10")
	_, conn := e.streamAndModel(call, 1)
	e.waitSession(call.CallSID(), "streaming", func(s *session.Session) bool { return s.State == session.Streaming })

	rs.Shutdown()
	waitHealth(t, a, "store: degraded since")
	conn.SpeechStarted(0)
	conn.SpeechStopped(400)
	conn.Transcription("said during the outage")
	e.wantCallerAudio(conn)

	rs.Resume()
	waitHealth(t, a, "store: ok since")
	e.waitSession(call.CallSID(), "the caller's turn of the outage written", func(s *session.Session) bool {
		for _, turn := range s.Transcript {
			if turn.Text == "said during the outage" {
				return true
			}
		}
		return false
	})
	if body := waitHealth(t, a, "store: ok"); strings.Contains(body, "store data lost") {
		t.Errorf("a Redis that kept its data was taken for one that lost it:\n%s", body)
	}
}
