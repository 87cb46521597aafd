package channel

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
)

// An eventsUrl is a place the bridge POSTs to from inside the deployment,
// so by default it must be a public https endpoint: internal addresses
// (Redis on loopback, the cloud metadata service on link-local, private
// networks) are refused at validation (literal addresses and local names)
// and again at delivery, after DNS, on the address actually dialled (a name
// may resolve elsewhere later: DNS rebinding). The operator setting
// EVENTS_ALLOW_PRIVATE turns both checks off (a receiver on the same
// network, local development, tests).

// ErrForbiddenEventsTarget is returned (wrapped) when an events delivery
// would connect to an address the policy refuses.
var ErrForbiddenEventsTarget = errors.New("events target address not allowed")

// cgnat is the shared address space of RFC 6598 (carrier-grade NAT).
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// nat64 is the well-known NAT64 prefix (RFC 6052): its last 32 bits are an
// IPv4 address.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// forbiddenEventsAddr reports whether events may not be posted to a: not a
// public unicast address. IPv4 embedded in IPv6 (mapped, compatible,
// NAT64) is judged as the IPv4 address it reaches.
func forbiddenEventsAddr(a netip.Addr) bool {
	a = a.Unmap()
	if a.Is6() {
		b := a.As16()
		if nat64.Contains(a) || (a != netip.IPv6Unspecified() && [12]byte(b[:12]) == [12]byte{}) {
			a = netip.AddrFrom4([4]byte(b[12:]))
		}
	}
	return !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsUnspecified() || a.IsMulticast() ||
		a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() ||
		cgnat.Contains(a) || (a.Is4() && (a.As4()[0] == 0 || a == netip.AddrFrom4([4]byte{255, 255, 255, 255})))
}

// checkEventsTarget applies the target policy to an eventsUrl that passed
// Normalize: unless allowPrivate, https only, and no host that is a
// forbidden address literal or a local name.
func checkEventsTarget(raw string, allowPrivate bool) *ValidationError {
	const field = "eventsUrl"
	if raw == "" || allowPrivate {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return invalid(CodeInvalidEventsURL, field, "%q is not an absolute URL", raw)
	}
	if !strings.EqualFold(u.Scheme, "https") {
		return invalid(CodeInvalidEventsURL, field, "%q must use https", raw)
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return invalid(CodeInvalidEventsURL, field,
			"%q is a local host: events go to public addresses unless EVENTS_ALLOW_PRIVATE is set", raw)
	}
	if a, err := netip.ParseAddr(host); err == nil && forbiddenEventsAddr(a) {
		return invalid(CodeInvalidEventsURL, field,
			"%q is a loopback, private, link-local or otherwise internal address: not allowed unless EVENTS_ALLOW_PRIVATE is set", raw)
	}
	return nil
}

// eventsDialControl is the net.Dialer Control hook of events delivery: it
// runs after DNS resolution, on the address about to be connected, so a
// name resolving to an internal address (now or after a rebinding) is
// refused whatever it resolved to at validation.
func eventsDialControl(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %q", ErrForbiddenEventsTarget, address)
	}
	if forbiddenEventsAddr(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrForbiddenEventsTarget, ap.Addr())
	}
	return nil
}

// newEventsClient returns the HTTP client of events delivery. Redirects are
// not followed (a 3xx is a failed delivery), so a receiver cannot send the
// POST on to an internal target; no proxy from the environment is used,
// since the dial check must see the receiver's address, not a proxy's.
func newEventsClient(allowPrivate bool, r *net.Resolver) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	d := newEventsDialer(allowPrivate)
	d.Resolver = r
	t.DialContext = d.DialContext
	return &http.Client{
		Timeout:       defaultEventTimeout,
		Transport:     t,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// newEventsDialer returns the dialer of events delivery: guarded by the
// target policy unless allowPrivate.
func newEventsDialer(allowPrivate bool) *net.Dialer {
	d := &net.Dialer{Timeout: defaultEventTimeout}
	if !allowPrivate {
		d.Control = eventsDialControl
	}
	return d
}
