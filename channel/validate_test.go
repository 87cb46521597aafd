package channel_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/vivi/bridge/channel"
)

// invalidCase is a change that makes a valid agent or channel invalid, and
// the error it must give. The same tables run through Normalize, the admin
// API and the YAML apply.
type invalidCase[T any] struct {
	mutate func(*T)
	code   string
	field  string
}

func agentCases() map[string]invalidCase[channel.Agent] {
	type c = invalidCase[channel.Agent]
	return map[string]c{
		"id missing":                 {func(a *channel.Agent) { a.ID = "" }, "invalid_id", "id"},
		"id uppercase":               {func(a *channel.Agent) { a.ID = "Front" }, "invalid_id", "id"},
		"id leading dash":            {func(a *channel.Agent) { a.ID = "-front" }, "invalid_id", "id"},
		"id too long":                {func(a *channel.Agent) { a.ID = strings.Repeat("a", 64) }, "invalid_id", "id"},
		"id with slash":              {func(a *channel.Agent) { a.ID = "a/b" }, "invalid_id", "id"},
		"name missing":               {func(a *channel.Agent) { a.Name = "  " }, "invalid_name", "name"},
		"name control char":          {func(a *channel.Agent) { a.Name = "a\x00b" }, "invalid_name", "name"},
		"name too long":              {func(a *channel.Agent) { a.Name = strings.Repeat("n", 201) }, "invalid_name", "name"},
		"voice unknown":              {func(a *channel.Agent) { a.Voice = "nova" }, "invalid_voice", "voice"},
		"model with space":           {func(a *channel.Agent) { a.Model = "gpt realtime" }, "invalid_model", "model"},
		"destination no name":        {func(a *channel.Agent) { a.TransferDestinations[0].Name = "" }, "invalid_destination", "transferDestinations[0].name"},
		"destination dup name":       {func(a *channel.Agent) { a.TransferDestinations[1].Name = "front desk" }, "invalid_destination", "transferDestinations[1].name"},
		"number missing":             {func(a *channel.Agent) { a.TransferDestinations[0].Number = "" }, "invalid_destination", "transferDestinations[0].number"},
		"number letters":             {func(a *channel.Agent) { a.TransferDestinations[0].Number = "20a1" }, "invalid_destination", "transferDestinations[0].number"},
		"number URI injection":       {func(a *channel.Agent) { a.TransferDestinations[1].Number = "2001@evil.example;transport=udp" }, "invalid_destination", "transferDestinations[1].number"},
		"number TwiML":               {func(a *channel.Agent) { a.TransferDestinations[0].Number = "2001</Sip>" }, "invalid_destination", "transferDestinations[0].number"},
		"number plus sign":           {func(a *channel.Agent) { a.TransferDestinations[0].Number = "+15551234567" }, "invalid_destination", "transferDestinations[0].number"},
		"number non-ASCII":           {func(a *channel.Agent) { a.TransferDestinations[0].Number = "٢٠٠١" }, "invalid_destination", "transferDestinations[0].number"},
		"number 21 digits":           {func(a *channel.Agent) { a.TransferDestinations[0].Number = strings.Repeat("1", 21) }, "invalid_destination", "transferDestinations[0].number"},
		"dtmf key two chars":         {func(a *channel.Agent) { a.DTMF["5x"] = "Billing" }, "invalid_dtmf", "dtmf.5x"},
		"dtmf key E":                 {func(a *channel.Agent) { a.DTMF["E"] = "Billing" }, "invalid_dtmf", "dtmf.E"},
		"dtmf unknown dest":          {func(a *channel.Agent) { a.DTMF["0"] = "Nobody" }, "invalid_dtmf", "dtmf.0"},
		"fallback unknown":           {func(a *channel.Agent) { a.FallbackDestination = "Nobody" }, "invalid_fallback", "fallbackDestination"},
		"threshold above 1":          {func(a *channel.Agent) { a.TurnDetection.Threshold = 1.5 }, "invalid_turn_detection", "turnDetection.threshold"},
		"threshold negative":         {func(a *channel.Agent) { a.TurnDetection.Threshold = -0.1 }, "invalid_turn_detection", "turnDetection.threshold"},
		"silence too long":           {func(a *channel.Agent) { a.TurnDetection.SilenceMs = 10001 }, "invalid_turn_detection", "turnDetection.silenceMs"},
		"prefix padding below":       {func(a *channel.Agent) { a.TurnDetection.PrefixPaddingMs = -1 }, "invalid_turn_detection", "turnDetection.prefixPaddingMs"},
		"instructions control":       {func(a *channel.Agent) { a.Instructions = "x\x07y" }, "invalid_text", "instructions"},
		"greeting control char":      {func(a *channel.Agent) { a.Greeting = "\x1b[31m" }, "invalid_text", "greeting"},
		"analysis instructions long": {func(a *channel.Agent) { a.Analysis.Instructions = strings.Repeat("i", 4001) }, "invalid_analysis", "analysis.instructions"},
		"analysis too many fields": {func(a *channel.Agent) {
			a.Analysis.Fields = nil
			for i := range 21 {
				a.Analysis.Fields = append(a.Analysis.Fields, channel.AnalysisField{Name: fmt.Sprintf("f%d", i), Type: "string"})
			}
		}, "invalid_analysis", "analysis.fields"},
		"analysis field name digit": {func(a *channel.Agent) { a.Analysis.Fields[1].Name = "1st" }, "invalid_analysis", "analysis.fields[1].name"},
		"analysis field name long":  {func(a *channel.Agent) { a.Analysis.Fields[0].Name = "a" + strings.Repeat("b", 40) }, "invalid_analysis", "analysis.fields[0].name"},
		"analysis field name dash":  {func(a *channel.Agent) { a.Analysis.Fields[0].Name = "dept-name" }, "invalid_analysis", "analysis.fields[0].name"},
		"analysis field name dup":   {func(a *channel.Agent) { a.Analysis.Fields[1].Name = "department" }, "invalid_analysis", "analysis.fields[1].name"},
		"analysis description long": {func(a *channel.Agent) { a.Analysis.Fields[0].Description = strings.Repeat("d", 301) }, "invalid_analysis", "analysis.fields[0].description"},
		"analysis type unknown":     {func(a *channel.Agent) { a.Analysis.Fields[1].Type = "date" }, "invalid_analysis", "analysis.fields[1].type"},
		"analysis enum on boolean":  {func(a *channel.Agent) { a.Analysis.Fields[1].Enum = []string{"yes"} }, "invalid_analysis", "analysis.fields[1].enum"},
		"analysis enum too many":    {func(a *channel.Agent) { a.Analysis.Fields[0].Enum = strings.Split(strings.Repeat("v,", 20)+"w", ",") }, "invalid_analysis", "analysis.fields[0].enum"},
		"analysis enum value long":  {func(a *channel.Agent) { a.Analysis.Fields[0].Enum[1] = strings.Repeat("e", 101) }, "invalid_analysis", "analysis.fields[0].enum[1]"},
		"analysis enum value twice": {func(a *channel.Agent) { a.Analysis.Fields[0].Enum[1] = "sales" }, "invalid_analysis", "analysis.fields[0].enum[1]"},
	}
}

func channelCases() map[string]invalidCase[channel.Channel] {
	type c = invalidCase[channel.Channel]
	host := func(h string) func(*channel.Channel) { return func(ch *channel.Channel) { ch.OriginHost = h } }
	ips := func(v ...string) func(*channel.Channel) { return func(ch *channel.Channel) { ch.OriginIPs = v } }
	events := func(u string) func(*channel.Channel) { return func(ch *channel.Channel) { ch.EventsURL = u } }
	return map[string]c{
		"id bad":              {func(ch *channel.Channel) { ch.ID = "ACME HQ" }, "invalid_id", "id"},
		"name control char":   {func(ch *channel.Channel) { ch.Name = "a\nb" }, "invalid_name", "name"},
		"no extensions":       {func(ch *channel.Channel) { ch.Extensions = nil }, "invalid_extension", "extensions"},
		"extension letters":   {func(ch *channel.Channel) { ch.Extensions[1] = "10a2" }, "invalid_extension", "extensions[1]"},
		"extension empty":     {func(ch *channel.Channel) { ch.Extensions[0] = "" }, "invalid_extension", "extensions[0]"},
		"extension 21 digits": {func(ch *channel.Channel) { ch.Extensions[0] = strings.Repeat("9", 21) }, "invalid_extension", "extensions[0]"},
		"extension duplicate": {func(ch *channel.Channel) { ch.Extensions[1] = "1001" }, "invalid_extension", "extensions[1]"},
		"extension params":    {func(ch *channel.Channel) { ch.Extensions[0] = "1001;transport=udp" }, "invalid_extension", "extensions[0]"},
		"protocol unknown":    {func(ch *channel.Channel) { ch.OriginProtocol = "SCTP" }, "invalid_protocol", "originProtocol"},
		"port too big":        {func(ch *channel.Channel) { ch.OriginPort = 65536 }, "invalid_port", "originPort"},
		"port negative":       {func(ch *channel.Channel) { ch.OriginPort = -1 }, "invalid_port", "originPort"},
		"host missing":        {host(""), "invalid_origin_host", "originHost"},
		"host sip URI":        {host("sip:pbx.example.com"), "invalid_origin_host", "originHost"},
		"host URL":            {host("https://pbx.example.com"), "invalid_origin_host", "originHost"},
		"host with port":      {host("pbx.example.com:5061"), "invalid_origin_host", "originHost"},
		"IP with port":        {host("203.0.113.10:5060"), "invalid_origin_host", "originHost"},
		"host IPv6":           {host("2001:db8::1"), "invalid_origin_host", "originHost"},
		"host bracketed IPv6": {host("[2001:db8::1]"), "invalid_origin_host", "originHost"},
		"host single label":   {host("pbx"), "invalid_origin_host", "originHost"},
		"host underscore":     {host("pbx_1.example.com"), "invalid_origin_host", "originHost"},
		"host leading dash":   {host("-pbx.example.com"), "invalid_origin_host", "originHost"},
		"host bad IPv4":       {host("203.0.113.999"), "invalid_origin_host", "originHost"},
		"host with path":      {host("pbx.example.com/x"), "invalid_origin_host", "originHost"},
		"host label too long": {host(strings.Repeat("a", 64) + ".example.com"), "invalid_origin_host", "originHost"},
		"host with space":     {host("pbx example.com"), "invalid_origin_host", "originHost"},
		"origin IP v6":        {ips("2001:db8::1"), "invalid_origin_ip", "originIps[0]"},
		"origin IP partial":   {ips("198.51.100.1", "198.51.100"), "invalid_origin_ip", "originIps[1]"},
		"origin IP zero":      {ips("0.0.0.0"), "invalid_origin_ip", "originIps[0]"},
		"origin IP multicast": {ips("224.0.0.1"), "invalid_origin_ip", "originIps[0]"},
		"origin IP leading 0": {ips("010.1.1.1"), "invalid_origin_ip", "originIps[0]"},
		"origin IP mapped v6": {ips("::ffff:198.51.100.1"), "invalid_origin_ip", "originIps[0]"},
		"events http":         {events("http://hooks.example.com/vivi"), "invalid_events_url", "eventsUrl"},
		"events ftp":          {events("ftp://hooks.example.com/vivi"), "invalid_events_url", "eventsUrl"},
		"events relative":     {events("/vivi/events"), "invalid_events_url", "eventsUrl"},
		"events user info":    {events("https://user:pw@hooks.example.com/"), "invalid_events_url", "eventsUrl"},
		"events not a URL":    {events("hooks example"), "invalid_events_url", "eventsUrl"},
		"agent id not a slug": {func(ch *channel.Channel) { ch.AgentID = "Front Desk" }, "invalid_id", "agentId"},
	}
}

func TestAgentNormalizeErrors(t *testing.T) {
	for name, tc := range agentCases() {
		t.Run(name, func(t *testing.T) {
			a := baseAgent()
			tc.mutate(&a)
			wantValidation(t, a.Normalize(), tc.code, tc.field)
		})
	}
}

func TestChannelNormalizeErrors(t *testing.T) {
	for name, tc := range channelCases() {
		t.Run(name, func(t *testing.T) {
			c := baseChannel()
			tc.mutate(&c)
			wantValidation(t, c.Normalize(), tc.code, tc.field)
		})
	}
}

func wantValidation(t *testing.T, err error, code, field string) {
	t.Helper()
	var v *channel.ValidationError
	if !errors.As(err, &v) {
		t.Fatalf("err = %v; want a *ValidationError %s on %s", err, code, field)
	}
	if v.Code != code || v.Field != field || v.Message == "" {
		t.Fatalf("got %s on %q (%q); want %s on %q", v.Code, v.Field, v.Message, code, field)
	}
}

func TestAgentNormalizeCanonicalForm(t *testing.T) {
	a := baseAgent()
	a.Voice = "MARIN"
	a.Name = "  Front  "
	a.DTMF = map[string]string{"a": "Billing", "#": "Front Desk"}
	if err := a.Normalize(); err != nil {
		t.Fatalf("Normalize: %v", err)
	}
	if a.Voice != "marin" || a.Name != "Front" {
		t.Errorf("voice %q name %q; want marin, Front", a.Voice, a.Name)
	}
	if want := map[string]string{"A": "Billing", "#": "Front Desk"}; !reflect.DeepEqual(a.DTMF, want) {
		t.Errorf("dtmf = %v; want %v", a.DTMF, want)
	}
	b := channel.Agent{ID: "minimal", Name: "Minimal"}
	if err := b.Normalize(); err != nil {
		t.Errorf("a minimal agent: %v", err)
	}
}

func TestChannelNormalizeDefaults(t *testing.T) {
	tests := map[string]struct {
		mutate   func(*channel.Channel)
		protocol channel.Protocol
		port     int
		host     string
		ips      []string
	}{
		"defaults TLS 5061": {
			mutate: func(*channel.Channel) {}, protocol: channel.TLS, port: 5061, host: "203.0.113.10",
		},
		"udp lowercase": {
			mutate:   func(c *channel.Channel) { c.OriginProtocol = "udp" },
			protocol: channel.UDP, port: 5060, host: "203.0.113.10",
		},
		"tcp explicit port": {
			mutate:   func(c *channel.Channel) { c.OriginProtocol = "Tcp"; c.OriginPort = 5080 },
			protocol: channel.TCP, port: 5080, host: "203.0.113.10",
		},
		"host canonical": {
			mutate:   func(c *channel.Channel) { c.OriginHost = "PBX.Example.COM." },
			protocol: channel.TLS, port: 5061, host: "pbx.example.com",
		},
		"ips dedup and numeric sort": {
			mutate:   func(c *channel.Channel) { c.OriginIPs = []string{"198.51.100.10", "198.51.100.9", "198.51.100.10"} },
			protocol: channel.TLS, port: 5061, host: "203.0.113.10", ips: []string{"198.51.100.9", "198.51.100.10"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := baseChannel()
			tc.mutate(&c)
			if err := c.Normalize(); err != nil {
				t.Fatalf("Normalize: %v", err)
			}
			if c.OriginProtocol != tc.protocol || c.OriginPort != tc.port || c.OriginHost != tc.host || !reflect.DeepEqual(c.OriginIPs, tc.ips) {
				t.Fatalf("got %s %d %s %v; want %s %d %s %v", c.OriginProtocol, c.OriginPort, c.OriginHost, c.OriginIPs,
					tc.protocol, tc.port, tc.host, tc.ips)
			}
		})
	}
}

func TestEventsURLAccepted(t *testing.T) {
	for _, u := range []string{"https://hooks.example.com/vivi?x=1", "http://127.0.0.1:8080/events", "http://localhost/e", "http://[::1]:9/e"} {
		c := baseChannel()
		c.EventsURL = u
		if err := c.Normalize(); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
}

func TestDescribe(t *testing.T) {
	tests := map[string]struct {
		protocol channel.Protocol
		port     int
		uri      string
	}{
		"TLS default": {"", 5061, "sip:1001@vivi.sip.twilio.com;transport=tls"},
		"TCP":         {channel.TCP, 5060, "sip:1001@vivi.sip.twilio.com;transport=tcp"},
		"UDP":         {channel.UDP, 5060, "sip:1001@vivi.sip.twilio.com;transport=udp"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := baseChannel()
			c.OriginProtocol = tc.protocol
			c.Describe("vivi.sip.twilio.com")
			d := c.Destination
			wantProto := tc.protocol
			if wantProto == "" {
				wantProto = channel.TLS
			}
			if d == nil || d.Host != "vivi.sip.twilio.com" || d.Port != tc.port || d.Protocol != wantProto ||
				len(d.URIs) != 2 || d.URIs[0] != tc.uri || !strings.HasPrefix(d.URIs[1], "sip:1002@") {
				t.Fatalf("destination = %+v", d)
			}
		})
	}
}
