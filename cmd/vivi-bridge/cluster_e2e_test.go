package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/internal/redistest"
	"github.com/vivi/bridge/internal/testwait"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiliotest"
)

// TestClusterFailoverMidCall runs the real server with REDIS_ADDRS naming a
// three-master Redis Cluster (the store openStore builds), and SIGKILLs the
// master of the sessions' slot while a call streams: the caller's audio
// keeps reaching the model through the failover, and once the replica has
// taken over the call's later writes (its end) land in the Cluster.
func TestClusterFailoverMidCall(t *testing.T) {
	cl := redistest.StartCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	const prefix = "test:e2e-cluster:"

	model := realtimetest.NewServer(realtimetest.Options{})
	t.Cleanup(model.Close)
	ln, err := listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	podURL := "http://" + ln.Addr().String()
	tw := twiliotest.NewTwilio(twiliotest.SimConfig{BridgeURL: podURL, PublicURL: podURL, AccountSID: e2eAccount, AuthToken: e2eAuthToken})
	t.Cleanup(tw.Close)
	yaml := filepath.Join(t.TempDir(), "vivi.yaml")
	if err := os.WriteFile(yaml, []byte(e2eYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"PUBLIC_URL": podURL, "TWILIO_ACCOUNT_SID": e2eAccount, "TWILIO_AUTH_TOKEN": e2eAuthToken,
		"TWILIO_API_BASE_URL": tw.REST().URL(), "OPENAI_API_KEY": realtimetest.DefaultAPIKey,
		"OPENAI_REALTIME_URL": model.URL(), "STREAM_TOKEN_SECRET": e2eSecret, "ADMIN_TOKEN": e2eAdmin,
		"REDIS_ADDRS": strings.Join(cl.Addrs, ","), "REDIS_PREFIX": prefix, "POD_NAME": "pod-a",
		"SHUTDOWN_GRACE": "2s", "MODEL_POOL_SIZE": "0", "CONFIG_FILE": yaml,
		"OPENAI_SUMMARY_MODEL": "off", // no post-call analysis (it would ask the real API)
	}
	c, err := loadConfig(func(k string) string { return env[k] }, true)
	if err != nil {
		t.Fatal(err)
	}
	st, closeStore, err := openStore(ctx, c)
	if err != nil {
		t.Fatalf("openStore: %v", err)
	}
	awaitDialProbes(t)
	t.Cleanup(closeStore)
	core, logs := observer.New(zap.DebugLevel)
	srvCtx, stopSrv := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runServer(srvCtx, c, zap.New(core), appDeps{store: st}, ln) }()
	t.Cleanup(func() {
		stopSrv()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	if err := waitReady(ctx, podURL); err != nil {
		t.Fatalf("server not ready: %v", err)
	}

	call, err := tw.PlaceCall(ctx, twiliotest.CallParams{
		From: "sip:+14155550100@203.0.113.10", To: "sip:1001@vivi.sip.twilio.com;transport=tls", SourceIP: "203.0.113.10",
	})
	if err != nil {
		t.Fatalf("place call: %v", err)
	}
	stream, err := call.WaitStream(ctx, 1)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	conn, err := model.NextConn(ctx)
	if err != nil {
		t.Fatalf("model connection: %v", err)
	}
	sid := call.CallSID()
	sessionIs := func(what string, ok func(*session.Session) bool) *session.Session {
		t.Helper()
		var s *session.Session
		var err error
		if testwait.Poll(30*time.Second, func() bool {
			s, err = st.Session(ctx, sid)
			return err == nil && ok(s)
		}) != nil {
			for _, e := range logs.FilterLevelExact(zap.WarnLevel).All() {
				t.Logf("pod warning: %s %v", e.Message, e.ContextMap())
			}
			for _, e := range logs.FilterLevelExact(zap.ErrorLevel).All() {
				t.Logf("pod error: %s %v", e.Message, e.ContextMap())
			}
			if s != nil {
				t.Fatalf("timed out waiting for %s: last state %s, timeline %+v, err %v", what, s.State, s.Timeline, err)
			}
			t.Fatalf("timed out waiting for %s: err %v", what, err)
		}
		return s
	}
	sessionIs("the session streaming", func(s *session.Session) bool { return s.State == session.Streaming })

	sessKey := prefix + "{sess}:call:" + sid
	old, replica := cl.MasterFor(t, sessKey), cl.ReplicaFor(t, sessKey)
	old.Kill()
	killed := time.Now()
	// The call goes on while the slot has no master: audio keeps flowing.
	for range 3 {
		before := len(conn.InputAudio())
		if err := testwait.Poll(5*time.Second, func() bool { return len(conn.InputAudio()) > before+1600 }); err != nil {
			t.Fatalf("caller audio stopped reaching the model %v after the master was killed", time.Since(killed))
		}
	}
	if got := cl.WaitMasterChange(t, sessKey, old); got != replica {
		t.Fatalf("sessions' slot went to %s, want its replica %s", got.Addr, replica.Addr)
	}
	t.Logf("cluster settled %v after the kill; the call kept streaming", time.Since(killed).Round(time.Millisecond))
	speech := realtimetest.Tone(1600)
	stream.Say(speech)
	_ = testwait.Poll(5*time.Second, func() bool { return bytes.Contains(conn.InputAudio(), speech) }) // judged below
	call.Hangup(ctx)
	sessionIs("the session ended in the Cluster", func(s *session.Session) bool { return s.State == session.Ended })
	// The Ended above may be the stream-stopped webhook's write; the call's
	// own writes (model_connected among them, queued while the slot had no
	// master) are all in once its loop logs "call ended", which it does
	// after its session writer's last write returned.
	callEnded := func() bool {
		return logs.FilterMessage("call ended").FilterField(zap.String("call_sid", sid)).Len() > 0
	}
	if err := testwait.Poll(30*time.Second, callEnded); err != nil {
		t.Fatal("the pod never logged the call's end (its session writer did not finish)")
	}
	s := sessionIs("the session ended in the Cluster", func(s *session.Session) bool { return s.State == session.Ended })
	if in, sent := conn.InputAudio(), stream.SentAudio(); !bytes.HasPrefix(sent, in) || !bytes.Contains(in, speech) {
		t.Fatalf("model input (%d bytes) is not what the caller sent (%d bytes)", len(in), len(sent))
	}
	var types []string
	for _, ev := range s.Timeline {
		types = append(types, ev.Type)
	}
	for _, want := range []string{"answered", "stream_started", "model_connected", "ended"} {
		if !strings.Contains(strings.Join(types, ","), want) {
			t.Errorf("timeline %v lacks %s", types, want)
		}
	}
	if t.Failed() {
		for _, e := range logs.FilterLevelExact(zap.WarnLevel).All() {
			t.Logf("pod warning: %s %v", e.Message, e.ContextMap())
		}
	}
	t.Logf("ended %s; %d store warnings/errors logged during the failover", s.EndReason,
		logs.FilterLevelExact(zap.WarnLevel).Len()+logs.FilterLevelExact(zap.ErrorLevel).Len())
}
