package channel

import "strings"

// Describe sets c.Destination: where the customer's PBX must send the
// channel's calls. Host is the Twilio SIP Domain (SIP_DOMAIN), the port is
// 5061 for TLS and 5060 otherwise, and there is one SIP URI per extension,
// sip:{ext}@{sipDomain};transport={tls|tcp|udp}. An empty protocol counts as
// TLS, the default.
func (c *Channel) Describe(sipDomain string) {
	p := c.OriginProtocol
	if p == "" {
		p = TLS
	}
	transport := strings.ToLower(string(p))
	uris := make([]string, len(c.Extensions))
	for i, ext := range c.Extensions {
		uris[i] = "sip:" + ext + "@" + sipDomain + ";transport=" + transport
	}
	c.Destination = &DestinationInfo{Host: sipDomain, Port: p.DefaultPort(), Protocol: p, URIs: uris}
}
