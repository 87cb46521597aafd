package delivery_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// dnsServer is a real DNS server on loopback UDP that answers A and AAAA
// queries from records the test sets (and may change between calls). Names
// it does not know are NXDOMAIN.
type dnsServer struct {
	addr string

	mu   sync.Mutex
	a    map[string][]string // name without trailing dot -> IPv4
	aaaa map[string][]string
}

func startDNS(t *testing.T) *dnsServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen dns: %v", err)
	}
	s := &dnsServer{addr: pc.LocalAddr().String(), a: map[string][]string{}, aaaa: map[string][]string{}}
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

// setA replaces the A records of name (nil removes them).
func (s *dnsServer) setA(name string, ips ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ips == nil {
		delete(s.a, name)
		return
	}
	s.a[name] = ips
}

func (s *dnsServer) setAAAA(name string, ips ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.aaaa[name] = ips
}

func (s *dnsServer) serve(w dns.ResponseWriter, req *dns.Msg) {
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

// resolver returns a Go resolver that asks only this server.
func (s *dnsServer) resolver() *net.Resolver {
	return resolverAt(s.addr)
}

func resolverAt(addr string) *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", addr)
		},
	}
}
