package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/vivi/bridge/analysis/chattest"
	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/internal/redistest"
	"github.com/vivi/bridge/internal/testwait"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/store"
	"github.com/vivi/bridge/twiliotest"
)

// bridgeBin is the vivi-bridge binary TestMain built for this run.
var bridgeBin string

// buildErr is why the binary could not be built (every test then fails).
var buildErr error

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vivi-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	bridgeBin = filepath.Join(dir, "vivi-bridge")
	// -race off: the children would cost far more CPU on a shared machine,
	// and the in-process e2e tests already run the server under -race.
	out, err := exec.Command("go", "build", "-o", bridgeBin, "github.com/vivi/bridge/cmd/vivi-bridge").CombinedOutput()
	if err != nil {
		buildErr = fmt.Errorf("go build vivi-bridge: %v\n%s", err, out)
	}
	code := m.Run()
	os.RemoveAll(dir)
	// Every front, fake and proxied stream of the test process must end
	// (the children are waited for in each test's cleanup).
	if code == 0 {
		// go-redis probes a node whose dials all failed (a killed Cluster
		// master) in a goroutine that sleeps 1 s between attempts and ends
		// at its next wake-up once the client is closed.
		if err := goleak.Find(goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial")); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}

const (
	account   = "ACe2e0000000000000000000000000000"
	authToken = "e2eauthtoken000000000000000000000"
	secret    = "e2e-stream-token-secret-0123456789abcdef"
	adminTok  = "e2e-admin-token"
	callerIP  = "203.0.113.10"
)

// agentYAML is the CONFIG_FILE every pod applies at start: one realtime
// agent (with a fallback destination) and one channel.
const agentYAML = `
agents:
  - id: reception
    name: Reception
    realtime: true
    greeting: Hello, you reached the reception.
    instructions: Be brief.
    transferDestinations:
      - {name: Front Desk, number: "2001", trigger: the caller asks for a person}
    fallbackDestination: Front Desk
channels:
  - id: tls-pbx
    name: TLS PBX
    originHost: 203.0.113.10
    extensions: ["1001"]
    agentId: reception
`

// world is one scenario's deployment: a private Redis, the fakes, the front
// and the pods.
type world struct {
	t   *testing.T
	ctx context.Context
	// redis is the private redis-server (nil on a Cluster world).
	redis *redisProc
	// cluster is the Redis Cluster of a worldOptions.cluster world.
	cluster *redistest.Cluster
	// rdb is the world's own client of the pods' Redis (a cluster client on
	// a Cluster world, as the pods' openStore builds it).
	rdb    redis.UniversalClient
	prefix string
	model  *realtimetest.Server
	// chat is the chat completions API of the post-call analysis.
	chat *chattest.Server
	// modelURL is OPENAI_REALTIME_URL (default the fake model's URL).
	modelURL string
	tw       *twiliotest.Twilio
	front    *front
	yaml     string
	// env is added to every pod's environment (KEY=value), after the defaults.
	env []string

	mu   sync.Mutex
	pods map[string]*proc
}

type worldOptions struct {
	model realtimetest.Options
	// modelURL, when set, replaces the fake model's URL (e.g. a model that
	// never answers).
	modelURL string
	yaml     string   // CONFIG_FILE contents; default agentYAML
	env      []string // extra environment of every pod
	// timeout bounds the whole scenario (default 90 s).
	timeout time.Duration
	// cluster runs the pods on a three-master Redis Cluster with a replica
	// each (REDIS_ADDRS naming its nodes, no REDIS_URL) instead of the
	// single redis-server.
	cluster bool
}

// newWorld starts Redis, the fakes and the front; pods are started with
// startPod. Everything is stopped in t.Cleanup.
func newWorld(t *testing.T, o worldOptions) *world {
	t.Helper()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	if o.timeout == 0 {
		o.timeout = 90 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	t.Cleanup(cancel)
	w := &world{t: t, ctx: ctx, pods: map[string]*proc{}, env: o.env}
	if o.cluster {
		w.cluster = redistest.StartCluster(t)
		w.rdb = store.NewUniversalClient(&redis.UniversalOptions{Addrs: w.cluster.Addrs})
	} else {
		w.redis = startRedis(t)
		w.rdb = redis.NewClient(&redis.Options{Addr: w.redis.addr, MaxRetries: -1})
	}
	t.Cleanup(func() { w.rdb.Close() })
	b := make([]byte, 4)
	rand.Read(b)
	w.prefix = "e2e:" + hex.EncodeToString(b) + ":"
	w.model = realtimetest.NewServer(o.model)
	t.Cleanup(w.model.Close)
	w.chat = chattest.New()
	t.Cleanup(w.chat.Close)
	w.modelURL = w.model.URL()
	if o.modelURL != "" {
		w.modelURL = o.modelURL
	}
	w.front = newFront(t)
	w.tw = twiliotest.NewTwilio(twiliotest.SimConfig{BridgeURL: w.front.URL(), PublicURL: w.front.URL(), AccountSID: account, AuthToken: authToken})
	t.Cleanup(w.tw.Close)
	yaml := o.yaml
	if yaml == "" {
		yaml = agentYAML
	}
	w.yaml = filepath.Join(t.TempDir(), "vivi.yaml")
	if err := os.WriteFile(w.yaml, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return w
}

// podEnv is a pod's environment, as an operator's Deployment would set it.
func (w *world) podEnv(name string, extra []string) []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"LISTEN_ADDR=127.0.0.1:0", // the pod logs its address ("vivi-bridge serving")
		"PUBLIC_URL=" + w.front.URL(),
		"POD_NAME=" + name,
		w.redisEnv(),
		"REDIS_PREFIX=" + w.prefix,
		"CONFIG_FILE=" + w.yaml,
		"TWILIO_ACCOUNT_SID=" + account,
		"TWILIO_AUTH_TOKEN=" + authToken,
		"TWILIO_API_BASE_URL=" + w.tw.REST().URL(),
		"OPENAI_API_KEY=" + realtimetest.DefaultAPIKey,
		"OPENAI_REALTIME_URL=" + w.modelURL,
		"OPENAI_BASE_URL=" + w.chat.URL,
		"STREAM_TOKEN_SECRET=" + secret,
		"ADMIN_TOKEN=" + adminTok,
		"MODEL_POOL_SIZE=0", // model connections come in dial order
		"SHUTDOWN_GRACE=20s",
		"MAX_CALLS=100",
		"LOG_FORMAT=json",
		"LOG_LEVEL=info",
		"GOMAXPROCS=2",
	}
	env = append(env, w.env...)
	return append(env, extra...) // later entries win (os/exec keeps the last)
}

// redisEnv is the pods' Redis variable: REDIS_URL of the private server,
// or REDIS_ADDRS naming the Cluster's nodes (seeds of a cluster client).
func (w *world) redisEnv() string {
	if w.cluster != nil {
		return "REDIS_ADDRS=" + strings.Join(w.cluster.Addrs, ",")
	}
	return "REDIS_URL=redis://" + w.redis.addr + "/0"
}

// startPod runs `vivi-bridge serve` as POD_NAME=name, waits until it is
// ready and adds it to the front.
func (w *world) startPod(name string, extra ...string) *proc {
	w.t.Helper()
	p := startProc(w.t, w.ctx, name, bridgeBin, w.podEnv(name, extra))
	w.mu.Lock()
	w.pods[name] = p
	w.mu.Unlock()
	w.front.add(name, p.url)
	return p
}

func (w *world) pod(name string) *proc {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pods[name]
}

// place calls extension 1001 from the PBX.
func (w *world) place() *twiliotest.SimCall {
	w.t.Helper()
	c, err := w.tw.PlaceCall(w.ctx, twiliotest.CallParams{
		From: "sip:+14155550100@" + callerIP, To: "sip:1001@vivi.sip.twilio.com;transport=tls", SourceIP: callerIP,
	})
	if err != nil {
		w.t.Fatalf("place call: %v", err)
	}
	return c
}

// streamAndModel waits for the call's n-th stream and the next model
// connection.
func (w *world) streamAndModel(call *twiliotest.SimCall, n int) (*twiliotest.Call, *realtimetest.Conn) {
	w.t.Helper()
	stream, err := call.WaitStream(w.ctx, n)
	if err != nil {
		w.t.Fatalf("stream %d of %s: %v (events %v)", n, call.CallSID(), err, call.Events())
	}
	conn, err := w.model.NextConn(w.ctx)
	if err != nil {
		w.t.Fatalf("model connection: %v", err)
	}
	return stream, conn
}

func (w *world) store() *store.Redis {
	return store.NewRedis(w.rdb, store.Options{Prefix: w.prefix})
}

// waitSession polls the call's session record until ok holds (30 s).
func (w *world) waitSession(sid, what string, ok func(*session.Session) bool) *session.Session {
	w.t.Helper()
	var last *session.Session
	var lastErr error
	if err := testwait.Poll(30*time.Second, func() bool {
		last, lastErr = w.store().Session(w.ctx, sid)
		return lastErr == nil && ok(last)
	}); err != nil {
		w.t.Fatalf("session %s: %s: last %+v (%v)", sid, what, last, lastErr)
	}
	return last
}

// wantCallerAudio fails unless the caller's audio keeps reaching the model
// (another 200 ms of it within 10 s).
func (w *world) wantCallerAudio(conn *realtimetest.Conn, what string) {
	w.t.Helper()
	before := len(conn.InputAudio())
	if err := testwait.Poll(10*time.Second, func() bool { return len(conn.InputAudio()) > before+1600 }); err != nil {
		w.t.Fatalf("%s: caller audio stopped reaching the model (%d bytes)", what, len(conn.InputAudio()))
	}
}

// allCallerAudioReachedModel: every caller byte Twilio sent on the streams
// reached some model session (the sessions' inputs cover it, in order).
func (w *world) allCallerAudioReachedModel(streams []*twiliotest.Call, conns []*realtimetest.Conn) {
	w.t.Helper()
	var sent, in []byte
	for _, s := range streams {
		sent = append(sent, s.SentAudio()...)
	}
	if err := testwait.Poll(10*time.Second, func() bool {
		in = in[:0]
		for _, c := range conns {
			in = append(in, c.InputAudio()...)
		}
		return len(in) >= len(sent)
	}); err != nil {
		w.t.Fatalf("the model sessions got %d of the %d caller bytes", len(in), len(sent))
	}
	if !bytes.Equal(in[:len(sent)], sent) {
		w.t.Fatal("the model sessions' input is not the caller's audio in order")
	}
}

// session reads the call's session record.
func (w *world) session(sid string) *session.Session {
	w.t.Helper()
	s, err := w.store().Session(w.ctx, sid)
	if err != nil {
		w.t.Fatal(err)
	}
	return s
}

// admin sends an admin API request through the front.
func (w *world) admin(method, path string) (int, []byte) {
	w.t.Helper()
	req, err := http.NewRequestWithContext(w.ctx, method, w.front.URL()+path, nil)
	if err != nil {
		w.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminTok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func timelineHas(s *session.Session, typ string) bool {
	for _, ev := range s.Timeline {
		if ev.Type == typ {
			return true
		}
	}
	return false
}

// --- processes -------------------------------------------------------------

// proc is one child process: its output is kept (and printed in the test
// log when the test fails), its exit is observed.
type proc struct {
	name string
	url  string // http://addr from its "vivi-bridge serving" line
	cmd  *exec.Cmd
	out  *logBuffer

	exited chan struct{}
	exitAt time.Time
	state  *os.ProcessState
}

// startProc starts bin serve with env and waits for its "vivi-bridge
// serving" log line and a 200 from /readyz (20 s).
func startProc(t *testing.T, ctx context.Context, name, bin string, env []string) *proc {
	t.Helper()
	p := &proc{name: name, exited: make(chan struct{}), out: newLogBuffer()}
	p.cmd = exec.Command(bin, "serve")
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	dieWithParent(p.cmd)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.exitAt = time.Now()
		p.state = p.cmd.ProcessState
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.kill()
		<-p.exited
		if t.Failed() {
			t.Logf("--- %s output (%s) ---\n%s", name, p.state, p.out.tail(64<<10))
		}
	})
	select {
	case addr := <-p.out.addr:
		p.url = "http://" + addr
	case <-p.exited:
		t.Fatalf("%s exited at start (%s):\n%s", name, p.state, p.out.tail(16<<10))
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not log its address in 20 s:\n%s", name, p.out.tail(16<<10))
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	client := &http.Client{Timeout: time.Second}
	if err := testwait.Poll(20*time.Second, func() bool { return p.ready(client) }); err != nil {
		t.Fatalf("%s not ready in 20 s:\n%s", name, p.out.tail(16<<10))
	}
	return p
}

func (p *proc) ready(client *http.Client) bool {
	resp, err := client.Get(p.url + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// signal sends sig (SIGTERM, SIGKILL) and returns when it was sent.
func (p *proc) signal(sig syscall.Signal) time.Time {
	_ = p.cmd.Process.Signal(sig)
	return time.Now()
}

func (p *proc) kill() { _ = p.cmd.Process.Kill() }

// waitExit waits up to limit for the process to exit and returns its exit
// code (-1 when a signal ended it) and when it exited.
func (p *proc) waitExit(limit time.Duration) (code int, at time.Time, err error) {
	select {
	case <-p.exited:
		return p.state.ExitCode(), p.exitAt, nil
	case <-time.After(limit):
		return 0, time.Time{}, fmt.Errorf("%s still running after %v", p.name, limit)
	}
}

// logBuffer keeps a process's output (bounded) and finds its listen address.
type logBuffer struct {
	mu      sync.Mutex
	buf     []byte
	partial []byte
	addr    chan string
	found   bool
}

const maxLog = 4 << 20

func newLogBuffer() *logBuffer { return &logBuffer{addr: make(chan string, 1)} }

func (l *logBuffer) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, b...)
	if len(l.buf) > maxLog {
		l.buf = append(l.buf[:0], l.buf[len(l.buf)-maxLog/2:]...)
	}
	if !l.found {
		l.partial = append(l.partial, b...)
		for {
			i := bytes.IndexByte(l.partial, '\n')
			if i < 0 {
				break
			}
			line := l.partial[:i]
			l.partial = l.partial[i+1:]
			if addr, ok := servingAddr(line); ok {
				l.found = true
				l.partial = nil
				l.addr <- addr
				break
			}
		}
	}
	return len(b), nil
}

// servingAddr reads the address of a "vivi-bridge serving" JSON log line.
func servingAddr(line []byte) (string, bool) {
	var rec struct {
		Msg  string `json:"msg"`
		Addr string `json:"addr"`
	}
	if json.Unmarshal(line, &rec) != nil || rec.Msg != "vivi-bridge serving" || rec.Addr == "" {
		return "", false
	}
	return rec.Addr, true
}

func (l *logBuffer) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > n {
		return string(l.buf[len(l.buf)-n:])
	}
	return string(l.buf)
}

// records returns the JSON log records so far.
func (l *logBuffer) records() []map[string]any {
	l.mu.Lock()
	data := bytes.Clone(l.buf)
	l.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(data, []byte("\n")) {
		var rec map[string]any
		if json.Unmarshal(line, &rec) == nil {
			out = append(out, rec)
		}
	}
	return out
}

// --- Redis -------------------------------------------------------------------

// redisProc is a private redis-server on a free loopback port, with an
// append-only file fsynced on every write so that a SIGKILL loses nothing
// (a crash with persistence); restartEmpty models one without. Tests stop
// and restart it; 127.0.0.1:6379 is never touched.
type redisProc struct {
	t    *testing.T
	addr string
	port string
	dir  string

	mu  sync.Mutex
	cmd *exec.Cmd
	end chan struct{}
}

func startRedis(t *testing.T) *redisProc {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is not on PATH: the multi-process suite starts its own")
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	r := &redisProc{t: t, port: port, addr: "127.0.0.1:" + port, dir: t.TempDir()}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *redisProc) start() {
	r.t.Helper()
	cmd := exec.Command("redis-server", "--port", r.port, "--bind", "127.0.0.1", "--dir", r.dir,
		"--save", "", "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no",
		"--daemonize", "no", "--loglevel", "warning")
	out := newLogBuffer()
	cmd.Stdout, cmd.Stderr = out, out
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("redis-server: %v", err)
	}
	end := make(chan struct{})
	go func() { _ = cmd.Wait(); close(end) }()
	r.mu.Lock()
	r.cmd, r.end = cmd, end
	r.mu.Unlock()
	c := redis.NewClient(&redis.Options{Addr: r.addr, MaxRetries: -1})
	defer c.Close()
	if err := testwait.Poll(10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return c.Ping(ctx).Err() == nil
	}); err != nil {
		cmd.Process.Kill()
		r.t.Fatalf("redis-server on %s does not answer:\n%s", r.addr, out.tail(4096))
	}
}

// stop kills the server (SIGKILL: an outage, not a clean shutdown) and
// waits for it to exit.
func (r *redisProc) stop() {
	r.mu.Lock()
	cmd, end := r.cmd, r.end
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-end
}

// restart starts the server again on the same port with its data.
func (r *redisProc) restart() { r.start() }

// restartEmpty starts it again without its data (no persistence, or a
// failover to a cold replica).
func (r *redisProc) restartEmpty() {
	r.t.Helper()
	entries, _ := os.ReadDir(r.dir)
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(r.dir, e.Name())); err != nil {
			r.t.Fatal(err)
		}
	}
	r.start()
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port, nil
}

// errNoPod is the front's answer when no pod is ready.
var errNoPod = errors.New("no ready pod")

func isStreamPath(p string) bool {
	return strings.HasPrefix(p, "/twilio/stream") && !strings.HasPrefix(p, "/twilio/stream-")
}
