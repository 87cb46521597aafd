package delivery_test

import (
	"net"
	"testing"

	"github.com/vivi/bridge/internal/dnstest"
)

// dnsServer is the loopback DNS server of these tests (internal/dnstest).
type dnsServer struct{ *dnstest.Server }

func startDNS(t *testing.T) *dnsServer { return &dnsServer{dnstest.Start(t)} }

func (s *dnsServer) setA(name string, ips ...string)    { s.SetA(name, ips...) }
func (s *dnsServer) setAAAA(name string, ips ...string) { s.SetAAAA(name, ips...) }
func (s *dnsServer) resolver() *net.Resolver            { return s.Resolver() }
