package channel

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"time"
)

// DefaultDNSTimeout bounds one origin host resolution.
const DefaultDNSTimeout = 3 * time.Second

// Resolver turns a channel's origin host into its IPv4 origin IPs.
// The zero value uses net.DefaultResolver and DefaultDNSTimeout.
type Resolver struct {
	// R is the DNS resolver; nil means net.DefaultResolver.
	R *net.Resolver
	// Timeout bounds one lookup; zero means DefaultDNSTimeout.
	Timeout time.Duration
}

// LookupIPv4 returns the IPv4 addresses of host, sorted and deduplicated.
// An IPv4 literal is its own list and needs no DNS. A host with no IPv4
// address (NXDOMAIN, AAAA only, a server that does not answer within the
// timeout) is a *ValidationError with code dns_resolution_failed.
func (r *Resolver) LookupIPv4(ctx context.Context, host string) ([]string, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		if !ip.Is4() {
			return nil, invalid(CodeInvalidOriginHost, "originHost", "%q: IPv6 is not supported", host)
		}
		return []string{ip.String()}, nil
	}
	res, timeout := net.DefaultResolver, DefaultDNSTimeout
	if r != nil && r.R != nil {
		res = r.R
	}
	if r != nil && r.Timeout > 0 {
		timeout = r.Timeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// A rooted name is never completed with the search domains of
	// resolv.conf: the host is an FQDN by validation.
	name := host
	if name != "" && name[len(name)-1] != '.' {
		name += "."
	}
	addrs, err := res.LookupNetIP(ctx, "ip4", name)
	if err != nil {
		return nil, lookupError(ctx, host, timeout, err)
	}
	ips := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if a = a.Unmap(); a.Is4() {
			ips = append(ips, a)
		}
	}
	if len(ips) == 0 {
		return nil, invalid(CodeDNSResolutionFailed, "originHost", "%s has no IPv4 address", host)
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	ips = slices.Compact(ips)
	out := make([]string, len(ips))
	for i, a := range ips {
		out[i] = a.String()
	}
	return out, nil
}

func lookupError(ctx context.Context, host string, timeout time.Duration, err error) *ValidationError {
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return invalid(CodeDNSResolutionFailed, "originHost", "%s has no IPv4 address (no such host)", host)
	case ctx.Err() != nil || (dnsErr != nil && dnsErr.IsTimeout):
		return invalid(CodeDNSResolutionFailed, "originHost", "resolving %s timed out after %s", host, timeout)
	default:
		return invalid(CodeDNSResolutionFailed, "originHost", "resolving %s: %v", host, err)
	}
}
