// Package dnstest runs DNS servers on loopback for tests: one answering
// from records the test sets, one that never answers.
package dnstest

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// Server is a real DNS server on loopback UDP that answers A and AAAA
// queries from records the test sets (and may change between calls). Names
// it does not know are NXDOMAIN.
type Server struct {
	addr string

	mu   sync.Mutex
	a    map[string][]string // name without trailing dot -> IPv4
	aaaa map[string][]string
}

// Start starts a Server, stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen dns: %v", err)
	}
	s := &Server{addr: pc.LocalAddr().String(), a: map[string][]string{}, aaaa: map[string][]string{}}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serve), NotifyStartedFunc: func() { close(started) }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.ActivateAndServe()
	}()
	<-started
	t.Cleanup(func() {
		_ = srv.Shutdown()
		<-done
	})
	return s
}

// SetA replaces the A records of name (nil removes them).
func (s *Server) SetA(name string, ips ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ips == nil {
		delete(s.a, name)
		return
	}
	s.a[name] = ips
}

// SetAAAA replaces the AAAA records of name.
func (s *Server) SetAAAA(name string, ips ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.aaaa[name] = ips
}

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range req.Question {
		name := strings.ToLower(strings.TrimSuffix(q.Name, "."))
		a, okA := s.a[name]
		aaaa, okAAAA := s.aaaa[name]
		if !okA && !okAAAA {
			m.Rcode = dns.RcodeNameError
			continue
		}
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 60}
		switch q.Qtype {
		case dns.TypeA:
			hdr.Rrtype = dns.TypeA
			for _, ip := range a {
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.ParseIP(ip).To4()})
			}
		case dns.TypeAAAA:
			hdr.Rrtype = dns.TypeAAAA
			for _, ip := range aaaa {
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: net.ParseIP(ip)})
			}
		}
	}
	_ = w.WriteMsg(m)
}

// Resolver returns a Go resolver that asks only this server.
func (s *Server) Resolver() *net.Resolver {
	return ResolverAt(s.addr)
}

// ResolverAt returns a Go resolver that asks only the server at addr.
func ResolverAt(addr string) *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", addr)
		},
	}
}

// StartSilent returns the address of a UDP socket that reads queries
// and never answers.
func StartSilent(t testing.TB) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	return pc.LocalAddr().String()
}
