package channel

import (
	"errors"
	"net/netip"
	"net/url"
	"strings"
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

// ForbiddenEventsAddr reports whether events may not be posted to a: not a
// public unicast address (the delivery's dialer checks every address it
// connects to with it). IPv4 embedded in IPv6 (mapped, compatible,
// NAT64) is judged as the IPv4 address it reaches.
func ForbiddenEventsAddr(a netip.Addr) bool {
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

// CheckEventsTarget applies the target policy of checkEventsTarget at
// delivery time (a channel stored before the policy, or under another
// setting, is held to it too); nil when the target is allowed.
func CheckEventsTarget(raw string, allowPrivate bool) error {
	if v := checkEventsTarget(raw, allowPrivate); v != nil {
		return v
	}
	return nil
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
	if a, err := netip.ParseAddr(host); err == nil && ForbiddenEventsAddr(a) {
		return invalid(CodeInvalidEventsURL, field,
			"%q is a loopback, private, link-local or otherwise internal address: not allowed unless EVENTS_ALLOW_PRIVATE is set", raw)
	}
	return nil
}
