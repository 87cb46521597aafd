package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/delivery"
	"github.com/vivi/bridge/internal/testwait"
	"github.com/vivi/bridge/store"
)

// shortHTTPLimits make the public server's timeouts elapse within a test.
var shortHTTPLimits = httpLimits{
	ReadHeaderTimeout: 300 * time.Millisecond,
	ReadTimeout:       400 * time.Millisecond,
	WriteTimeout:      400 * time.Millisecond,
	IdleTimeout:       400 * time.Millisecond,
	MaxHeaderBytes:    8 << 10,
}

// startTuned runs a pod (runServer, as serve does) with its HTTP limits
// replaced, registers it behind the load balancer and returns its address.
func (e *e2e) startTuned(pod string, limits httpLimits) string {
	e.t.Helper()
	c := e.config(pod)
	c.ConfigFile = e.yaml
	c.HTTP = limits
	ln, err := listen("127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	st := store.NewRedis(e.rdb, store.Options{Prefix: e.prefix, Outbox: delivery.Entries})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runServer(ctx, c, zap.NewNop(), appDeps{store: st}, ln) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("pod %s: %v", pod, err)
		}
	})
	base := "http://" + ln.Addr().String()
	if err := waitReady(e.ctx, base); err != nil {
		e.t.Fatalf("pod %s did not become ready: %v", pod, err)
	}
	// waitReady's keep-alive connection would be counted as the bridge's.
	http.DefaultClient.CloseIdleConnections()
	e.mu.Lock()
	e.pods[pod] = &e2ePod{url: base, store: st}
	e.target = pod
	e.mu.Unlock()
	return ln.Addr().String()
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("no /proc/self/fd (this test counts open sockets through it): %v", err)
	}
	return len(ents)
}

// counts is what the process holds: goroutines and file descriptors.
type counts struct{ goroutines, fds int }

func (c counts) String() string { return fmt.Sprintf("%d goroutines, %d fds", c.goroutines, c.fds) }

func measure(t *testing.T) counts {
	return counts{runtime.NumGoroutine(), openFDs(t)}
}

// settleTo polls until the process is back to base (a small slack for the
// runtime's and the fakes' own background goroutines). Nothing signals a
// server goroutine's exit, so polling with a bounded deadline it is.
func settleTo(t *testing.T, base counts) counts {
	t.Helper()
	const slack = 3
	var now counts
	if err := testwait.Poll(5*time.Second, func() bool {
		now = measure(t)
		return now.goroutines <= base.goroutines+slack && now.fds <= base.fds+slack
	}); err != nil {
		t.Fatalf("the bridge still holds connections: %v, baseline %v", now, base)
	}
	return now
}

// waitClosedByServer reads c until the server closes it (EOF or reset) and
// fails the test when that has not happened by deadline.
func waitClosedByServer(t *testing.T, c net.Conn, r io.Reader, deadline time.Time, what string) {
	t.Helper()
	_ = c.SetReadDeadline(deadline)
	_, err := io.Copy(io.Discard, r)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("%s: the server still holds the connection after its timeouts", what)
	}
	c.Close()
}

// TestServeBoundsSlowBodiesAndIdleConnections is issue 9's "hostile and slow
// peers": bodies that never finish and 1,000 idle keep-alive connections are
// dropped by the server's timeouts, and the bridge's goroutines and file
// descriptors return to their baseline.
func TestServeBoundsSlowBodiesAndIdleConnections(t *testing.T) {
	e := newE2E(t, realtimetest.Options{})
	// Long enough that all 1,040 connections are held at the peak.
	limits := shortHTTPLimits
	limits.ReadTimeout, limits.IdleTimeout = 2*time.Second, 2*time.Second
	addr := e.startTuned("pod-slow", limits)

	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// A first keep-alive request brings up whatever the server starts lazily.
	warm := dial()
	fmt.Fprintf(warm, "GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n")
	wr := bufio.NewReader(warm)
	if resp, err := http.ReadResponse(wr, nil); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	waitClosedByServer(t, warm, wr, time.Now().Add(5*time.Second), "warm-up")
	base := settleTo(t, measure(t))

	const slow, idle = 40, 1000
	type peer struct {
		c net.Conn
		r *bufio.Reader
	}
	var slowPeers, idlePeers []peer
	for range slow {
		// The headers promise 1,000 bytes; 9 come, then nothing.
		c := dial()
		fmt.Fprintf(c, "POST /twilio/voice HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/x-www-form-urlencoded\r\n"+
			"Content-Length: 1000\r\n\r\nCallSid=C")
		slowPeers = append(slowPeers, peer{c, bufio.NewReader(c)})
	}
	for range idle {
		c := dial()
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n")
		p := peer{c, bufio.NewReader(c)}
		resp, err := http.ReadResponse(p.r, nil)
		if err != nil {
			t.Fatalf("idle peer %d: %v", len(idlePeers), err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Close {
			t.Fatal("the server closed a keep-alive connection at once")
		}
		idlePeers = append(idlePeers, p)
	}
	peak := measure(t)

	deadline := time.Now().Add(10 * time.Second)
	for i, p := range slowPeers {
		waitClosedByServer(t, p.c, p.r, deadline, fmt.Sprintf("slow body %d", i))
	}
	for i, p := range idlePeers {
		waitClosedByServer(t, p.c, p.r, deadline, fmt.Sprintf("idle keep-alive %d", i))
	}
	after := settleTo(t, base)
	t.Logf("before: %v; peak (%d slow bodies, %d idle keep-alives, both ends in this process): %v; after: %v",
		base, slow, idle, peak, after)
}

// TestServeRefusesOversizedHeaders: MaxHeaderBytes answers 431, it does not
// buffer a megabyte of headers per connection.
func TestServeRefusesOversizedHeaders(t *testing.T) {
	e := newE2E(t, realtimetest.Options{})
	addr := e.startTuned("pod-headers", shortHTTPLimits)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		// The server may close before all of it is written: the error is expected.
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: bridge\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 64<<10))
	}()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d, want 431", resp.StatusCode)
	}
}

// TestServeStreamOutlivesHTTPTimeouts: the media stream is a hijacked
// connection, so the server's read, write and idle timeouts must not end
// it. A stalled body and an idle keep-alive connection, both opened after
// the stream, being closed by the server prove that every timeout has
// elapsed; then audio still flows both ways.
func TestServeStreamOutlivesHTTPTimeouts(t *testing.T) {
	e := newE2E(t, realtimetest.Options{Echo: true})
	addr := e.startTuned("pod-long", shortHTTPLimits)
	call := e.place("203.0.113.10")
	stream, conn := e.streamAndModel(call, 1)

	var wg sync.WaitGroup
	deadline := time.Now().Add(10 * time.Second)
	for _, req := range []string{
		"POST /twilio/voice HTTP/1.1\r\nHost: bridge\r\nContent-Length: 1000\r\n\r\nCallSid=C",
		"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n",
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprint(c, req)
		wg.Go(func() {
			_ = c.SetReadDeadline(deadline)
			_, err := io.Copy(io.Discard, c)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Errorf("%q: not closed by the server", req)
			}
			c.Close()
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	select {
	case <-stream.Done():
		t.Fatalf("the stream ended with the HTTP timeouts: %v", stream.Err())
	default:
	}
	e.wantCallerAudio(conn)
	got := len(stream.ReceivedAudio())
	if err := waitFor(func() bool { return len(stream.ReceivedAudio()) > got+1600 }); err != nil {
		t.Fatal("the model's audio stopped reaching Twilio after the HTTP timeouts")
	}
}
