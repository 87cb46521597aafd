package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// target is the bridge under load: a child process callsim started, or one
// already running.
type target struct {
	url       string // where it listens: http://127.0.0.1:port
	publicURL string
	pid       int // 0: not measured
	pprof     string

	cmd    *exec.Cmd
	exited chan struct{}
	tail   *tailBuffer
	logF   *os.File
	dir    string
}

// spawnConfig is the environment of a child bridge.
type spawnConfig struct {
	bin, modelURL, apiKey, restURL, accountSID, authToken, redisURL, logFile string
	sourceIP, extension                                                      string
	maxCalls                                                                 int
	pprof                                                                    bool
	extraEnv                                                                 []string
}

// spawnBridge writes a CONFIG_FILE with one realtime agent and one channel
// for sourceIP and extension, starts `bin serve` on a free loopback port
// with every outside service pointing at callsim's fakes, and waits until
// it is ready.
func spawnBridge(ctx context.Context, sc spawnConfig) (*target, error) {
	dir, err := os.MkdirTemp("", "callsim-")
	if err != nil {
		return nil, fmt.Errorf("spawn bridge: %w", err)
	}
	t := &target{dir: dir, exited: make(chan struct{}), tail: &tailBuffer{max: 16 << 10}}
	fail := func(err error) (*target, error) {
		t.stop()
		return nil, err
	}
	cfgFile := filepath.Join(dir, "vivi.yaml")
	if err := os.WriteFile(cfgFile, []byte(bridgeYAML(sc.sourceIP, sc.extension)), 0o600); err != nil {
		return fail(fmt.Errorf("spawn bridge: %w", err))
	}
	port, err := freePort()
	if err != nil {
		return fail(err)
	}
	t.url = "http://127.0.0.1:" + port
	t.publicURL = t.url
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"LISTEN_ADDR=127.0.0.1:" + port,
		"PUBLIC_URL=" + t.publicURL,
		"TWILIO_ACCOUNT_SID=" + sc.accountSID,
		"TWILIO_AUTH_TOKEN=" + sc.authToken,
		"TWILIO_API_BASE_URL=" + sc.restURL,
		"OPENAI_API_KEY=" + sc.apiKey,
		"OPENAI_REALTIME_URL=" + sc.modelURL,
		"STREAM_TOKEN_SECRET=" + randomSecret(),
		"CONFIG_FILE=" + cfgFile,
		"MAX_CALLS=" + strconv.Itoa(sc.maxCalls),
		"SHUTDOWN_GRACE=2s",
		"LOG_LEVEL=warn",
		"LOG_FORMAT=json",
		"REDIS_URL=" + sc.redisURL,
	}
	if sc.pprof {
		pp, err := freePort()
		if err != nil {
			return fail(err)
		}
		t.pprof = "127.0.0.1:" + pp
		env = append(env, "PPROF_ADDR="+t.pprof)
	}
	for _, kv := range os.Environ() { // runtime knobs pass through (GOGC, GOMAXPROCS, GODEBUG, GOMEMLIMIT)
		if strings.HasPrefix(kv, "GOGC=") || strings.HasPrefix(kv, "GOMAXPROCS=") ||
			strings.HasPrefix(kv, "GODEBUG=") || strings.HasPrefix(kv, "GOMEMLIMIT=") {
			env = append(env, kv)
		}
	}
	env = append(env, sc.extraEnv...)
	t.cmd = exec.Command(sc.bin, "serve")
	t.cmd.Env = env
	var logW io.Writer = t.tail
	if sc.logFile != "" {
		if t.logF, err = os.Create(sc.logFile); err != nil {
			return fail(fmt.Errorf("bridge log: %w", err))
		}
		logW = io.MultiWriter(t.tail, t.logF)
	}
	t.cmd.Stdout, t.cmd.Stderr = logW, logW
	if err := t.cmd.Start(); err != nil {
		return fail(fmt.Errorf("spawn bridge: %w", err))
	}
	t.pid = t.cmd.Process.Pid
	go func() {
		_ = t.cmd.Wait()
		close(t.exited)
	}()
	if err := t.waitReady(ctx, 20*time.Second); err != nil {
		return fail(err)
	}
	return t, nil
}

// bridgeYAML is the CONFIG_FILE of a spawned bridge: one realtime agent
// (the echo model needs nothing else) and one channel.
func bridgeYAML(sourceIP, extension string) string {
	return `agents:
  - id: callsim-agent
    name: callsim echo agent
    realtime: true
    greeting: Hello.
    instructions: Repeat what the caller says.
channels:
  - id: callsim
    name: callsim load
    originHost: ` + sourceIP + `
    originProtocol: TLS
    extensions: ["` + extension + `"]
    agentId: callsim-agent
`
}

func (t *target) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(t.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-t.exited:
			return fmt.Errorf("bridge exited during start-up; its last lines:\n%s", t.tail.String())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bridge not ready after %s; its last lines:\n%s", limit, t.tail.String())
		}
	}
}

// alive reports whether a spawned bridge is still running.
func (t *target) alive() bool {
	if t.exited == nil || t.cmd == nil {
		return true
	}
	select {
	case <-t.exited:
		return false
	default:
		return true
	}
}

// stop ends a spawned bridge (SIGTERM, then SIGKILL after 10 s) and removes
// its files; a bridge callsim did not start is left alone.
func (t *target) stop() {
	if t.cmd != nil && t.cmd.Process != nil {
		_ = t.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-t.exited:
		case <-time.After(10 * time.Second):
			_ = t.cmd.Process.Kill()
			<-t.exited
		}
	}
	if t.logF != nil {
		_ = t.logF.Close()
	}
	if t.dir != "" {
		_ = os.RemoveAll(t.dir)
	}
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

func randomSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (tb *tailBuffer) Write(p []byte) (int, error) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.b = append(tb.b, p...)
	if len(tb.b) > tb.max {
		tb.b = append(tb.b[:0], tb.b[len(tb.b)-tb.max:]...)
	}
	return len(p), nil
}

func (tb *tailBuffer) String() string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return string(tb.b)
}

// procSample is what /proc says of a process.
type procSample struct {
	cpu, sys time.Duration // user + system, system
	rss      int64         // bytes
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux platform Go supports.
const clockTicks = 100

// readProc reads the CPU time and resident memory of pid.
func readProc(pid int) (procSample, error) {
	var s procSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("read /proc: %w", err)
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, errors.New("read /proc: malformed stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return s, errors.New("read /proc: short stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64) // field 14: utime
	st, err2 := strconv.ParseInt(f[12], 10, 64) // field 15: stime
	if err1 != nil || err2 != nil {
		return s, errors.New("read /proc: malformed stat times")
	}
	s.cpu = time.Duration(ut+st) * time.Second / clockTicks
	s.sys = time.Duration(st) * time.Second / clockTicks
	status, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("read /proc: %w", err)
	}
	defer status.Close()
	sc := bufio.NewScanner(status)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			s.rss = kb << 10
		}
	}
	return s, nil
}

// machineCPU is the CPU time all processes used so far (from /proc/stat:
// everything but idle and iowait), or 0 when unreadable.
func machineCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest times are already counted in user
			break
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTicks
}

// selfCPU is the CPU time of this process so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// bridgeMetrics is what the bridge's /metrics says of its allocations and
// relayed frames.
type bridgeMetrics struct {
	ok         bool
	mallocs    float64
	frames     float64 // both directions
	goroutines float64
	heapInuse  float64 // bytes
	stackInuse float64 // bytes
}

// scrapeMetrics reads a few series of GET /metrics (Prometheus text format).
func scrapeMetrics(ctx context.Context, base string) bridgeMetrics {
	var m bridgeMetrics
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return m
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return m
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return m
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		switch {
		case name == "go_memstats_mallocs_total":
			m.mallocs, m.ok = v, true
		case name == "go_goroutines":
			m.goroutines = v
		case name == "go_memstats_heap_inuse_bytes":
			m.heapInuse = v
		case name == "go_memstats_stack_inuse_bytes":
			m.stackInuse = v
		case strings.HasPrefix(name, "vivi_bridge_frames_relayed_total{"):
			m.frames += v
		}
	}
	return m
}
