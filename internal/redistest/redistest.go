// Package redistest starts a private redis-server on a loopback port for
// tests that must stop, restart or lose Redis, which they may never do to
// the shared server on 6379. The server keeps nothing on disk by itself (no
// RDB schedule, no AOF), so Restart brings it back empty, as a restart
// without persistence or a failover to a cold replica would; Shutdown then
// Resume is an outage of a Redis that keeps its data.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vivi/bridge/internal/testwait"
)

// readyTimeout bounds how long Start and Restart wait for the server to
// answer PING.
const readyTimeout = 10 * time.Second

// Server is one private redis-server process; make one with Start.
type Server struct {
	tb   testing.TB
	port int
	dir  string

	mu  sync.Mutex
	cmd *exec.Cmd // nil while stopped
}

// Start runs redis-server on a free loopback port and stops it when the test
// ends. The test is skipped when redis-server is not installed.
func Start(tb testing.TB) *Server {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		tb.Skip("redistest: redis-server not installed")
	}
	s := &Server{tb: tb, port: freePort(tb), dir: tb.TempDir()}
	s.start()
	tb.Cleanup(s.Stop)
	return s
}

// Addr is the server's host:port, stable across Restart.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is Addr as a redis:// URL (REDIS_URL).
func (s *Server) URL() string { return "redis://" + s.Addr() }

// Stop kills the server (SIGKILL, as a crash) and waits for it to exit;
// clients see connection errors until Restart. Stopping a stopped server
// does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Shutdown stops the server keeping its data (SHUTDOWN SAVE writes a
// snapshot), so that the next Restart or Resume brings the data back: an
// outage of a Redis that persists. It waits for the process to exit.
func (s *Server) Shutdown() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	conn, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		s.tb.Fatalf("redistest: shutdown: %v", err)
	}
	_, _ = fmt.Fprint(conn, "SHUTDOWN SAVE\r\n")
	_ = s.cmd.Wait() // the server closes the connection as it exits
	conn.Close()
	s.cmd = nil
}

// Resume starts a server stopped by Shutdown again with its data, on the
// same port.
func (s *Server) Resume() {
	s.tb.Helper()
	s.start()
}

// Restart stops the server if it runs and starts it again, empty (any
// snapshot of Shutdown is removed), on the same port, returning once it
// answers PING.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	if err := os.Remove(filepath.Join(s.dir, "dump.rdb")); err != nil && !os.IsNotExist(err) {
		s.tb.Fatalf("redistest: restart: %v", err)
	}
	s.start()
}

func (s *Server) start() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := exec.Command("redis-server",
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--logfile", filepath.Join(s.dir, "redis.log"),
		"--loglevel", "warning",
	)
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("redistest: start redis-server: %v", err)
	}
	if err := testwait.Poll(readyTimeout, func() bool { return ping(s.Addr()) }); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		s.tb.Fatalf("redistest: redis-server on port %d did not answer PING within %v", s.port, readyTimeout)
	}
	s.cmd = cmd
}

// ping sends an inline PING and reports whether +PONG came back.
func ping(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := fmt.Fprint(conn, "PING\r\n"); err != nil {
		return false
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return err == nil && line == "+PONG\r\n"
}

// freePort asks the kernel for a free loopback port. Another process could
// take it before redis-server binds it; on loopback in a test run that is
// rare, and Start then fails clearly.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("redistest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
