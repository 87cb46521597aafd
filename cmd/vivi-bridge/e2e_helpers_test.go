package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vivi/bridge/analysis/chattest"
	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/delivery"
	"github.com/vivi/bridge/internal/testwait"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/store"
	"github.com/vivi/bridge/twiliotest"
)

// The end-to-end tests run the real server (runServer, as `vivi-bridge
// serve` does) on loopback against real Redis and the in-process fakes of
// Twilio and the model. Two servers ("pods") can share one Redis behind a
// switchable load balancer, the way Twilio would reach a deployment.

const (
	e2eAccount   = "ACe2e0000000000000000000000000000"
	e2eAuthToken = "e2eauthtoken000000000000000000000"
	e2eSecret    = "e2e-stream-token-secret-0123456789abcdef"
	e2eAdmin     = "e2e-admin-token"
)

// e2eYAML: one agent with two destinations, and three channels whose PBXs
// speak TLS, TCP and UDP.
const e2eYAML = `
agents:
  - id: reception
    name: Reception
    realtime: true
    greeting: Hello, you reached the reception.
    instructions: Be brief.
    transferDestinations:
      - {name: Front Desk, number: "2001", trigger: the caller asks for a person}
      - {name: Billing, number: "2002", trigger: invoices}
    dtmf: {"0": Front Desk}
channels:
  - id: tls-pbx
    name: TLS PBX
    originHost: 203.0.113.10
    extensions: ["1001"]
    agentId: reception
  - id: tcp-pbx
    name: TCP PBX
    originHost: 203.0.113.20
    originProtocol: TCP
    extensions: ["1001"]
    agentId: reception
  - id: udp-pbx
    name: UDP PBX
    originHost: 203.0.113.30
    originProtocol: UDP
    originPort: 5070
    extensions: ["1001"]
    agentId: reception
  - id: no-agent
    name: No agent yet
    originHost: 203.0.113.40
    extensions: ["1001"]
`

type e2e struct {
	t      *testing.T
	ctx    context.Context
	rdb    *redis.Client
	prefix string
	model  *realtimetest.Server
	chat   *chattest.Server // the chat completions API of the post-call analysis
	tw     *twiliotest.Twilio
	lb     *httptest.Server
	mu     sync.Mutex
	target string // pod the load balancer sends to
	pods   map[string]*e2ePod
	yaml   string
	// updated is notified at each REST call update seen by watchUpdates.
	updated *testwait.Notifier
	// domainSID, when set before start, is the pods' TWILIO_SIP_DOMAIN_SID.
	domainSID string
	// currentStream is the stream the REST watcher looks at.
	currentStream *twiliotest.Call
	// deps, when set before start, adjusts each pod's appDeps.
	deps func(pod string, d *appDeps)
	// grace, when set before start, is the pods' SHUTDOWN_GRACE (default 2s).
	grace string
	// maxCalls, when set before start, is the pods' MAX_CALLS (default 5).
	maxCalls string
}

func (e *e2e) setStream(c *twiliotest.Call) {
	e.mu.Lock()
	e.currentStream = c
	e.mu.Unlock()
}

type e2ePod struct {
	url   string
	store *store.Redis
	logs  *observer.ObservedLogs
	stop  func()
}

func newE2E(t *testing.T, model realtimetest.Options) *e2e {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	addr := os.Getenv("TEST_REDIS_URL")
	if addr == "" {
		addr = "redis://127.0.0.1:6379/0"
	}
	opts, err := redis.ParseURL(addr)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		t.Fatalf("Redis at %s does not answer (%v): run the tests with `make test`, which starts one", addr, err)
	}
	b := make([]byte, 6)
	rand.Read(b)
	e := &e2e{t: t, ctx: ctx, rdb: rdb, prefix: "test:e2e:" + hex.EncodeToString(b) + ":", pods: map[string]*e2ePod{}}
	t.Cleanup(func() {
		keys, _ := rdb.Keys(context.Background(), e.prefix+"*").Result()
		if len(keys) > 0 {
			rdb.Del(context.Background(), keys...)
		}
		rdb.Close()
	})
	e.model = realtimetest.NewServer(model)
	t.Cleanup(e.model.Close)
	e.chat = chattest.New()
	t.Cleanup(e.chat.Close)
	e.lb = httptest.NewServer(http.HandlerFunc(e.balance))
	t.Cleanup(e.lb.Close)
	e.tw = twiliotest.NewTwilio(twiliotest.SimConfig{BridgeURL: e.lb.URL, PublicURL: e.lb.URL, AccountSID: e2eAccount, AuthToken: e2eAuthToken})
	t.Cleanup(e.tw.Close)
	e.yaml = filepath.Join(t.TempDir(), "vivi.yaml")
	if err := os.WriteFile(e.yaml, []byte(e2eYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// balance forwards to the current target pod (websockets included).
func (e *e2e) balance(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	p := e.pods[e.target]
	e.mu.Unlock()
	if p == nil {
		http.Error(w, "no pod", http.StatusBadGateway)
		return
	}
	u, _ := url.Parse(p.url)
	httputil.NewSingleHostReverseProxy(u).ServeHTTP(w, r)
}

// route sends the next requests to pod.
func (e *e2e) route(pod string) {
	e.mu.Lock()
	e.target = pod
	e.mu.Unlock()
}

// config is the environment of a pod, as an operator would set it.
func (e *e2e) config(pod string) config {
	c, err := loadConfig(func(k string) string {
		return map[string]string{
			"PUBLIC_URL": e.lb.URL, "TWILIO_ACCOUNT_SID": e2eAccount, "TWILIO_AUTH_TOKEN": e2eAuthToken,
			"TWILIO_API_BASE_URL": e.tw.REST().URL(), "OPENAI_API_KEY": realtimetest.DefaultAPIKey,
			"OPENAI_REALTIME_URL": e.model.URL(), "OPENAI_BASE_URL": e.chat.URL, "STREAM_TOKEN_SECRET": e2eSecret, "ADMIN_TOKEN": e2eAdmin,
			"REDIS_PREFIX": e.prefix, "POD_NAME": pod, "SHUTDOWN_GRACE": cmp.Or(e.grace, "2s"), "MAX_CALLS": cmp.Or(e.maxCalls, "5"),
			"EVENTS_ALLOW_PRIVATE":  "true", // the events receiver is an httptest server on loopback
			"TWILIO_SIP_DOMAIN_SID": e.domainSID,
			"MODEL_POOL_SIZE":       "0", // streamAndModel takes the model connections in dial order
		}[k]
	}, true)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// start runs a pod; the first one applies the YAML file (CONFIG_FILE).
func (e *e2e) start(pod string) *e2ePod {
	e.t.Helper()
	c := e.config(pod)
	if len(e.pods) == 0 {
		c.ConfigFile = e.yaml
	}
	ln, err := listen("127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	core, logs := observer.New(zap.DebugLevel)
	st := store.NewRedis(e.rdb, store.Options{Prefix: e.prefix, Outbox: delivery.Entries})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	d := appDeps{store: st}
	if e.deps != nil {
		e.deps(pod, &d)
	}
	go func() { done <- runServer(ctx, c, zap.New(core), d, ln) }()
	p := &e2ePod{url: "http://" + ln.Addr().String(), store: st, logs: logs}
	p.stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("pod %s: %v", pod, err)
		}
	})
	e.t.Cleanup(p.stop)
	readyCtx, cancelReady := context.WithCancel(e.ctx)
	go func() {
		select {
		case err := <-done:
			done <- err // for p.stop
			cancelReady()
		case <-readyCtx.Done():
		}
	}()
	err = waitReady(readyCtx, p.url)
	cancelReady()
	if err != nil {
		e.t.Fatalf("pod %s did not become ready: %v", pod, err)
	}
	e.mu.Lock()
	e.pods[pod] = p
	if e.target == "" {
		e.target = pod
	}
	e.mu.Unlock()
	return p
}

// session reads a call's session from Redis.
func (e *e2e) session(sid string) *session.Session {
	e.t.Helper()
	s, err := store.NewRedis(e.rdb, store.Options{Prefix: e.prefix}).Session(e.ctx, sid)
	if err != nil {
		e.t.Fatalf("session %s: %v", sid, err)
	}
	return s
}

// waitSession polls the session until ok holds.
func (e *e2e) waitSession(sid string, what string, ok func(*session.Session) bool) *session.Session {
	e.t.Helper()
	for {
		s, err := store.NewRedis(e.rdb, store.Options{Prefix: e.prefix}).Session(e.ctx, sid)
		if err == nil && ok(s) {
			return s
		}
		select {
		case <-e.ctx.Done():
			e.t.Fatalf("waiting for session %s: %s: last %+v (%v)", sid, what, s, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// place calls extension 1001 from the PBX at ip.
func (e *e2e) place(ip string) *twiliotest.SimCall {
	e.t.Helper()
	c, err := e.tw.PlaceCall(e.ctx, twiliotest.CallParams{
		From: "sip:+14155550100@" + ip, To: "sip:1001@vivi.sip.twilio.com;transport=tls", SourceIP: ip,
	})
	if err != nil {
		e.t.Fatalf("place call: %v", err)
	}
	return c
}

// streamAndModel waits for the call's n-th media stream and the model
// connection the bridge opens for it.
func (e *e2e) streamAndModel(call *twiliotest.SimCall, n int) (*twiliotest.Call, *realtimetest.Conn) {
	e.t.Helper()
	stream, err := call.WaitStream(e.ctx, n)
	if err != nil {
		e.t.Fatalf("stream %d: %v", n, err)
	}
	conn, err := e.model.NextConn(e.ctx)
	if err != nil {
		e.t.Fatalf("model connection: %v", err)
	}
	return stream, conn
}

// wantCallerAudio fails the test unless the caller's audio keeps reaching
// the model (another 200 ms of it within 5 s): the call goes on.
func (e *e2e) wantCallerAudio(conn *realtimetest.Conn) {
	e.t.Helper()
	before := len(conn.InputAudio())
	if err := waitFor(func() bool { return len(conn.InputAudio()) > before+1600 }); err != nil {
		e.t.Fatal("caller audio stopped reaching the model")
	}
}
