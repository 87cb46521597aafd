package realtime

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestDialCancelledDuringHandshake: a server that reads the upgrade
// request and never answers it does not hold a cancelled dial: cancelling
// the context (no deadline) ends the dial at once. gorilla alone waits for
// the context's deadline (here none: DefaultHandshakeTimeout, 10 s).
func TestDialCancelledDuringHandshake(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	read := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
			read <- c // read, never answered
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Dial(ctx, Config{URL: "ws://" + ln.Addr().String() + "/v1/realtime", APIKey: "k", Model: "m"})
		done <- err
	}()
	var server net.Conn
	select {
	case server = <-read:
	case <-time.After(5 * time.Second):
		t.Fatal("no upgrade request")
	}
	defer server.Close()
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("dial succeeded")
		}
	case <-time.After(5 * time.Second): // well below DefaultHandshakeTimeout
		t.Fatal("a cancelled dial is still waiting for the upgrade")
	}
}
