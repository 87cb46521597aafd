package channel

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

const (
	maxExtensions = 1000
	maxOriginIPs  = 256
	maxURLLen     = 2048
)

// Normalize applies defaults (protocol TLS, port 5061 for TLS else 5060),
// puts the channel in canonical form (protocol in uppercase, host in
// lowercase, origin IPs deduplicated and sorted) and validates it. It does
// not resolve the host nor look up the agent: the Provisioner does. The
// error is a *ValidationError naming the first bad field. Destination and
// EventsSecret are outputs and are not checked.
func (c *Channel) Normalize() error {
	if err := c.normalize(); err != nil {
		return err
	}
	return nil
}

func (c *Channel) normalize() *ValidationError {
	if err := checkID("id", c.ID); err != nil {
		return err
	}
	c.Name = strings.TrimSpace(c.Name)
	if err := checkText(CodeInvalidName, "name", c.Name, maxNameLen, false); err != nil {
		return err
	}
	host, err := normalizeOriginHost(c.OriginHost)
	if err != nil {
		return err
	}
	c.OriginHost = host
	if c.OriginProtocol == "" {
		c.OriginProtocol = TLS
	}
	c.OriginProtocol = Protocol(strings.ToUpper(string(c.OriginProtocol)))
	switch c.OriginProtocol {
	case TLS, TCP, UDP:
	default:
		return invalid(CodeInvalidProtocol, "originProtocol", "%q is not TLS, TCP or UDP", string(c.OriginProtocol))
	}
	if c.OriginPort == 0 {
		c.OriginPort = c.OriginProtocol.DefaultPort()
	}
	if c.OriginPort < 1 || c.OriginPort > 65535 {
		return invalid(CodeInvalidPort, "originPort", "%d is not between 1 and 65535", c.OriginPort)
	}
	if err := c.normalizeExtensions(); err != nil {
		return err
	}
	ips, err := normalizeOriginIPs("originIps", c.OriginIPs)
	if err != nil {
		return err
	}
	c.OriginIPs = ips
	if c.AgentID != "" {
		if err := checkID("agentId", c.AgentID); err != nil {
			return err
		}
	}
	if c.EventsURL != "" {
		if err := checkEventsURL(c.EventsURL); err != nil {
			return err
		}
	}
	return nil
}

func (c *Channel) normalizeExtensions() *ValidationError {
	if len(c.Extensions) == 0 {
		return invalid(CodeInvalidExtension, "extensions", "at least one extension is required")
	}
	if len(c.Extensions) > maxExtensions {
		return invalid(CodeInvalidExtension, "extensions", "more than %d extensions", maxExtensions)
	}
	seen := make(map[string]bool, len(c.Extensions))
	for i, e := range c.Extensions {
		field := fmt.Sprintf("extensions[%d]", i)
		if !ValidNumber(e) {
			return invalid(CodeInvalidExtension, field, "%q is not 1 to 20 digits", e)
		}
		if seen[e] {
			return invalid(CodeInvalidExtension, field, "%q is listed twice", e)
		}
		seen[e] = true
	}
	return nil
}

// normalizeOriginHost checks that host is an FQDN (RFC 1123 labels, at
// least two, the last not numeric) or an IPv4 literal, and returns it in
// canonical form: lowercase, without a trailing dot. IPv6, schemes, ports,
// paths and user parts are refused with a *ValidationError
// (invalid_origin_host).
func normalizeOriginHost(host string) (string, *ValidationError) {
	const field = "originHost"
	if host == "" {
		return "", invalid(CodeInvalidOriginHost, field, "is required")
	}
	if strings.Contains(host, "://") || strings.HasPrefix(strings.ToLower(host), "sip:") ||
		strings.HasPrefix(strings.ToLower(host), "sips:") {
		return "", invalid(CodeInvalidOriginHost, field, "%q must be a host name or IPv4 address, not a URI", host)
	}
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		if !ip.Is4() {
			return "", invalid(CodeInvalidOriginHost, field, "%q: IPv6 is not supported; use an IPv4 address or a host name", host)
		}
		return ip.String(), nil
	}
	if h, p, err := net.SplitHostPort(host); err == nil && h != "" && p != "" {
		return "", invalid(CodeInvalidOriginHost, field, "%q must not include a port; set originPort", host)
	}
	if strings.Contains(host, ":") {
		return "", invalid(CodeInvalidOriginHost, field, "%q: IPv6 is not supported; use an IPv4 address or a host name", host)
	}
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if len(h) > 253 {
		return "", invalid(CodeInvalidOriginHost, field, "is longer than 253 characters")
	}
	labels := strings.Split(h, ".")
	if len(labels) < 2 {
		return "", invalid(CodeInvalidOriginHost, field, "%q is not a fully qualified domain name", host)
	}
	for _, l := range labels {
		if !validLabel(l) {
			return "", invalid(CodeInvalidOriginHost, field, "%q is not a valid host name or IPv4 address", host)
		}
	}
	if _, err := strconv.Atoi(labels[len(labels)-1]); err == nil {
		return "", invalid(CodeInvalidOriginHost, field, "%q is not a valid IPv4 address", host)
	}
	return h, nil
}

func validLabel(l string) bool {
	if len(l) < 1 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		b := l[i]
		if (b < 'a' || b > 'z') && (b < '0' || b > '9') && b != '-' {
			return false
		}
	}
	return true
}

// normalizeOriginIPs checks that every entry is a unicast IPv4 address and
// returns them deduplicated and sorted; nil when ips is empty. field names
// the list in errors ("originIps", or "ips" for the origin-ips endpoint).
func normalizeOriginIPs(field string, ips []string) ([]string, *ValidationError) {
	if len(ips) == 0 {
		return nil, nil
	}
	if len(ips) > maxOriginIPs {
		return nil, invalid(CodeInvalidOriginIP, field, "more than %d addresses", maxOriginIPs)
	}
	addrs := make([]netip.Addr, 0, len(ips))
	for i, s := range ips {
		ip, err := netip.ParseAddr(s)
		if err != nil || !ip.Is4() {
			return nil, invalid(CodeInvalidOriginIP, fmt.Sprintf("%s[%d]", field, i), "%q is not an IPv4 address", s)
		}
		if ip.IsUnspecified() || ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return nil, invalid(CodeInvalidOriginIP, fmt.Sprintf("%s[%d]", field, i), "%q is not a unicast address", s)
		}
		addrs = append(addrs, ip)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out, nil
}

// checkEventsURL accepts an absolute https URL, or http for a loopback host
// (local development and tests). User info is refused: secrets belong in
// the signature, not the URL.
func checkEventsURL(raw string) *ValidationError {
	const field = "eventsUrl"
	if len(raw) > maxURLLen {
		return invalid(CodeInvalidEventsURL, field, "is longer than %d characters", maxURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Hostname() == "" || u.Opaque != "" {
		return invalid(CodeInvalidEventsURL, field, "%q is not an absolute URL", raw)
	}
	if u.User != nil {
		return invalid(CodeInvalidEventsURL, field, "must not contain user information")
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
		return nil
	case "http":
		if isLoopbackHost(u.Hostname()) {
			return nil
		}
		return invalid(CodeInvalidEventsURL, field, "%q must use https (http only for loopback hosts)", raw)
	default:
		return invalid(CodeInvalidEventsURL, field, "%q must use https", raw)
	}
}

func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.IsLoopback()
}
