package redistest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/vivi/bridge/internal/testwait"
)

// startTimeout bounds how long a helper waits for its servers to answer and
// agree (a hang becomes a clear failure; the machine may be loaded).
const startTimeout = 60 * time.Second

// Node is one redis-server process (a Cluster node, a Sentinel-monitored
// server or a sentinel) started by StartCluster or StartSentinel. It is
// killed when the test ends.
type Node struct {
	// Addr is "127.0.0.1:<port>", where the node answers.
	Addr string
	// Port is the node's client port.
	Port int

	dir    string
	cmd    *exec.Cmd
	admin  *redis.Client // a plain client of this node, for the helpers
	exited chan struct{} // closed once the process has been reaped
	err    error         // the process's exit status, set before exited closes
}

// redisBinaries fails t, saying how to install them, unless redis-server
// and redis-cli are on PATH. The Cluster and Sentinel tests never skip.
func redisBinaries(t testing.TB) {
	t.Helper()
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("redistest: %s is not on PATH (%v): the Redis Cluster and Sentinel tests start "+
				"their own servers; install Redis 7 (Debian/Ubuntu: apt-get install -y redis-server; "+
				"macOS: brew install redis)", bin, err)
		}
	}
}

// freePorts returns n distinct loopback ports that were free a moment ago
// (all held open together, so they differ).
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("redistest: free port: %v", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// startNode writes conf (redis.conf lines; port, bind, dir and logfile are
// added) into a directory of its own under root and starts redis-server on
// it with extra arguments (such as --sentinel). It waits until the node
// answers PING, and fails t with the node's log when it exits first.
func startNode(t testing.TB, root string, port int, conf []string, extra ...string) *Node {
	t.Helper()
	dir := filepath.Join(root, strconv.Itoa(port))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	lines := append([]string{
		"port " + strconv.Itoa(port),
		"bind 127.0.0.1",
		"dir " + dir,
		"logfile " + filepath.Join(dir, "redis.log"),
		"daemonize no",
		`save ""`,
		"appendonly no",
		// A replica's full sync starts at once, not after the default 5 s
		// wait for more replicas to share it.
		"repl-diskless-sync-delay 0",
	}, conf...)
	confPath := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(confPath, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	cmd := exec.Command("redis-server", append([]string{confPath}, extra...)...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("redistest: start redis-server: %v", err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	n := &Node{Addr: addr, Port: port, dir: dir, cmd: cmd, exited: make(chan struct{}),
		admin: redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})}
	go func() {
		n.err = cmd.Wait()
		close(n.exited)
	}()
	t.Cleanup(func() {
		n.Kill()
		_ = n.admin.Close()
	})
	err := testwait.Poll(startTimeout, func() bool {
		if !n.Alive() {
			return true
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return n.admin.Ping(ctx).Err() == nil
	})
	if !n.Alive() || err != nil {
		n.Kill()
		t.Fatalf("redistest: redis-server on %s did not come up (exit: %v, err: %v)\n%s\nlog:\n%s",
			n.Addr, n.err, err, stderr.String(), n.Log())
	}
	return n
}

// Alive reports whether the process still runs.
func (n *Node) Alive() bool {
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// Kill ends the process with SIGKILL (a crash: no shutdown, no last words
// to replicas) and waits until it has exited. It is idempotent.
func (n *Node) Kill() {
	if n.Alive() {
		_ = n.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-n.exited
}

// Log returns the node's log file (for failure messages).
func (n *Node) Log() string {
	b, err := os.ReadFile(filepath.Join(n.dir, "redis.log"))
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// Admin returns a plain (single-node, no retries) client of n, owned by
// the helper and closed when the test ends.
func (n *Node) Admin() *redis.Client { return n.admin }

// errNotYet marks a condition that a poll checks again.
var errNotYet = errors.New("not yet")

// pollState polls check until it returns nil, and fails t with the last
// error after timeout.
func pollState(t testing.TB, timeout time.Duration, what string, check func(ctx context.Context) error) {
	t.Helper()
	var last error
	err := testwait.Poll(timeout, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		last = check(ctx)
		return last == nil
	})
	if err != nil {
		t.Fatalf("redistest: timed out after %v waiting for %s: %v", timeout, what, last)
	}
}

// infoField returns field's value in an INFO or CLUSTER INFO reply.
func infoField(info, field string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}
