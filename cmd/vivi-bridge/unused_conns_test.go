package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// pipeListener hands the server the ends of net.Pipe connections, so that
// a test in a synctest bubble can hold a connection open without a request.
type pipeListener struct {
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *pipeListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// TestShutdownDoesNotWaitForUnusedConnections: a connection opened ahead of
// use (as load balancers do) and never sent a request would hold
// http.Server.Shutdown for 5 s; a drained pod closes it after unusedGrace.
func TestShutdownDoesNotWaitForUnusedConnections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ln := &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
		srv := &http.Server{Handler: http.NotFoundHandler()}
		unused := newUnusedConns()
		srv.ConnState = unused.track
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		client, server := net.Pipe()
		ln.conns <- server
		synctest.Wait() // the server holds the connection in StateNew

		shut := make(chan error, 1)
		go func() {
			defer unused.closeAfter(unusedGrace)()
			shut <- srv.Shutdown(context.Background())
		}()
		time.Sleep(unusedGrace + 100*time.Millisecond) // fake time: net/http would wait 5 s
		synctest.Wait()
		select {
		case err := <-shut:
			if err != nil {
				t.Fatalf("shutdown: %v", err)
			}
		default:
			t.Fatal("Shutdown still waits for a connection that never sent a request")
		}
		if _, err := client.Read(make([]byte, 1)); err == nil {
			t.Fatal("the unused connection is still open")
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Fatalf("serve: %v", err)
		}
	})
}
