package main

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// unusedConns follows the connections of an http.Server that have sent no
// request yet (http.StateNew), so that a drained pod does not wait for them.
//
// http.Server.Shutdown closes idle keep-alive connections at once but treats
// a new one as busy until it is 5 s old (net/http: a request may be on its
// way), and load balancers and proxies open such connections ahead of use.
// A pod whose last call has moved would then exit only 5 s later. A client
// sends its request as soon as it has connected, so a connection that is
// still silent after unusedGrace once the drain is over is closed.
type unusedConns struct {
	mu    sync.Mutex
	conns map[net.Conn]time.Time // StateNew connections and when they opened
}

// unusedGrace is how long a connection may stay silent after the drain.
const unusedGrace = time.Second

func newUnusedConns() *unusedConns { return &unusedConns{conns: map[net.Conn]time.Time{}} }

// track is the server's ConnState hook.
func (u *unusedConns) track(c net.Conn, s http.ConnState) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if s == http.StateNew {
		u.conns[c] = time.Now()
	} else {
		delete(u.conns, c)
	}
}

// closeAfter closes, grace after now, every connection that is still
// silent then. It returns a func that cancels the pending closes.
func (u *unusedConns) closeAfter(grace time.Duration) (stop func()) {
	t := time.AfterFunc(grace, func() {
		u.mu.Lock()
		defer u.mu.Unlock()
		for c := range u.conns {
			c.Close()
			delete(u.conns, c)
		}
	})
	return func() { t.Stop() }
}
