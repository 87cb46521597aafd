package channel_test

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/vivi/bridge/channel"
)

// secretPattern is an events secret as the bridge makes them (Standard
// Webhooks form: whsec_ and the base64 of 32 bytes).
var secretPattern = regexp.MustCompile(`^whsec_[A-Za-z0-9+/]{43}=$`)

func TestCreateChannelAPI(t *testing.T) {
	e := newEnv(t)
	e.dns.setA("pbx.acme.test", "198.51.100.2", "198.51.100.1")
	if status, body := e.do("POST", "/v1/agents", baseAgent()); status != http.StatusCreated {
		t.Fatalf("POST agent = %d %s", status, body)
	}
	in := map[string]any{
		"name":           "ACME",
		"originHost":     "PBX.acme.test",
		"originProtocol": "tcp",
		"extensions":     []string{"1001", "1002"},
		"originIps":      []string{"192.0.2.99"}, // replaced by the resolved addresses
		"agentId":        "front",
		"eventsUrl":      "https://hooks.acme.test/vivi",
	}
	status, body := e.do("POST", "/v1/channels", in)
	if status != http.StatusCreated {
		t.Fatalf("POST = %d %s", status, body)
	}
	got := decodeJSON[channel.Channel](t, body)
	if !regexp.MustCompile(`^ch_[0-9a-f]{12}$`).MatchString(got.ID) {
		t.Errorf("generated id %q", got.ID)
	}
	want := channel.Channel{
		ID: got.ID, Name: "ACME", OriginHost: "pbx.acme.test", OriginPort: 5060, OriginProtocol: channel.TCP,
		Extensions: []string{"1001", "1002"}, OriginIPs: []string{"198.51.100.1", "198.51.100.2"},
		AgentID: "front", EventsURL: "https://hooks.acme.test/vivi", EventsSecret: got.EventsSecret,
		Destination: &channel.DestinationInfo{Host: testSIPDomain, Port: 5060, Protocol: channel.TCP, URIs: []string{
			"sip:1001@vivi.sip.twilio.com;transport=tcp", "sip:1002@vivi.sip.twilio.com;transport=tcp",
		}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("created\n%+v\nwant\n%+v", got, want)
	}
	if !secretPattern.MatchString(got.EventsSecret) {
		t.Errorf("eventsSecret %q is not whsec_ and 32 bytes of base64", got.EventsSecret)
	}
	stored, _ := e.store.Channel(context.Background(), got.ID)
	if stored.EventsSecret != got.EventsSecret || stored.Destination != nil {
		t.Errorf("stored secret %q destination %v", stored.EventsSecret, stored.Destination)
	}

	// The secret is shown once: never in GET answers.
	status, body = e.do("GET", "/v1/channels/"+got.ID, nil)
	if status != http.StatusOK || strings.Contains(string(body), "eventsSecret") || strings.Contains(string(body), got.EventsSecret) {
		t.Errorf("GET = %d %s", status, body)
	}
	want.EventsSecret = ""
	if g := decodeJSON[channel.Channel](t, body); !reflect.DeepEqual(g, want) {
		t.Errorf("GET\n%+v\nwant\n%+v", g, want)
	}
	status, body = e.do("GET", "/v1/channels", nil)
	if status != http.StatusOK || strings.Contains(string(body), got.EventsSecret) || !strings.Contains(string(body), got.ID) {
		t.Errorf("GET list = %d %s", status, body)
	}
}

func TestCreateChannelAPIRefusals(t *testing.T) {
	e := newEnv(t)
	off := baseAgent()
	off.ID, off.Realtime = "off", false
	for _, a := range []channel.Agent{baseAgent(), off} {
		if status, body := e.do("POST", "/v1/agents", a); status != http.StatusCreated {
			t.Fatalf("POST agent = %d %s", status, body)
		}
	}
	e.dns.setAAAA("v6.acme.test", "2001:db8::5")
	if status, body := e.do("POST", "/v1/channels", baseChannel()); status != http.StatusCreated {
		t.Fatalf("POST channel = %d %s", status, body)
	}
	with := func(f func(*channel.Channel)) channel.Channel {
		c := baseChannel()
		c.ID = "other"
		f(&c)
		return c
	}
	tests := map[string]struct {
		in     channel.Channel
		status int
		code   string
		text   string
	}{
		"same id":            {in: baseChannel(), status: 409, code: "already_exists"},
		"overlapping pair":   {in: with(func(c *channel.Channel) { c.Extensions = []string{"1002"} }), status: 409, code: "channel_conflict", text: "203.0.113.10 extension 1002 belongs to channel acme"},
		"unknown agent":      {in: with(func(c *channel.Channel) { c.Extensions = []string{"3"}; c.AgentID = "nobody" }), status: 422, code: "unknown_agent"},
		"agent not realtime": {in: with(func(c *channel.Channel) { c.Extensions = []string{"3"}; c.AgentID = "off" }), status: 422, code: "agent_not_realtime"},
		"NXDOMAIN":           {in: with(func(c *channel.Channel) { c.OriginHost = "gone.acme.test" }), status: 422, code: "dns_resolution_failed"},
		"AAAA only":          {in: with(func(c *channel.Channel) { c.OriginHost = "v6.acme.test" }), status: 422, code: "dns_resolution_failed"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			status, body := e.do("POST", "/v1/channels", tc.in)
			got := wantError(t, status, body, tc.status, tc.code)
			if !strings.Contains(got.Error.Message, tc.text) {
				t.Errorf("message %q; want it to contain %q", got.Error.Message, tc.text)
			}
		})
	}
	if cs, _ := e.store.Channels(context.Background()); len(cs) != 1 {
		t.Errorf("refused channels were stored: %+v", cs)
	}
}

func TestPatchChannelAPI(t *testing.T) {
	e := newEnv(t)
	e.dns.setA("pbx.acme.test", "198.51.100.1")
	e.dns.setA("sbc.acme.test", "198.51.100.50")
	c := baseChannel()
	c.OriginHost = "pbx.acme.test"
	c.EventsURL = "https://hooks.acme.test/a"
	status, body := e.do("POST", "/v1/channels", c)
	if status != http.StatusCreated {
		t.Fatalf("POST = %d %s", status, body)
	}
	firstSecret := decodeJSON[channel.Channel](t, body).EventsSecret

	patch := func(p string) channel.Channel {
		t.Helper()
		status, body := e.do("PATCH", "/v1/channels/acme", p)
		if status != http.StatusOK {
			t.Fatalf("PATCH %s = %d %s", p, status, body)
		}
		return decodeJSON[channel.Channel](t, body)
	}
	storedSecret := func() string {
		s, _ := e.store.Channel(context.Background(), "acme")
		return s.EventsSecret
	}

	// DNS changes, but the host does not: originIps stay.
	e.dns.setA("pbx.acme.test", "198.51.100.2")
	got := patch(`{"name":"Renamed"}`)
	if got.Name != "Renamed" || !reflect.DeepEqual(got.OriginIPs, []string{"198.51.100.1"}) || got.EventsSecret != "" ||
		!reflect.DeepEqual(got.Extensions, []string{"1001", "1002"}) {
		t.Errorf("PATCH name = %+v", got)
	}
	if got = patch(`{"originHost":"pbx.acme.test"}`); !reflect.DeepEqual(got.OriginIPs, []string{"198.51.100.1"}) {
		t.Errorf("PATCH to the same host re-resolved: %v", got.OriginIPs)
	}
	if got = patch(`{"originHost":"SBC.acme.test"}`); !reflect.DeepEqual(got.OriginIPs, []string{"198.51.100.50"}) {
		t.Errorf("PATCH host = %v; want the new host's addresses", got.OriginIPs)
	}
	if got = patch(`{"originHost":"pbx.acme.test","originIps":["192.0.2.1"]}`); !reflect.DeepEqual(got.OriginIPs, []string{"198.51.100.2"}) {
		t.Errorf("PATCH host back = %v; want the re-resolved addresses", got.OriginIPs)
	}
	if got = patch(`{"originIps":["192.0.2.2","192.0.2.1","192.0.2.2"]}`); !reflect.DeepEqual(got.OriginIPs, []string{"192.0.2.1", "192.0.2.2"}) {
		t.Errorf("PATCH originIps = %v", got.OriginIPs)
	}

	// The default port follows the protocol; an explicit one stays.
	if got = patch(`{"originProtocol":"udp"}`); got.OriginProtocol != channel.UDP || got.OriginPort != 5060 || got.Destination.URIs[0] != "sip:1001@vivi.sip.twilio.com;transport=udp" {
		t.Errorf("PATCH protocol = %+v", got)
	}
	if got = patch(`{"originPort":5070}`); got.OriginPort != 5070 {
		t.Errorf("PATCH port = %d", got.OriginPort)
	}
	if got = patch(`{"originProtocol":"TLS"}`); got.OriginPort != 5070 {
		t.Errorf("an explicit port changed with the protocol: %d", got.OriginPort)
	}
	if got = patch(`{"originPort":null}`); got.OriginPort != 5061 {
		t.Errorf("PATCH port null = %d; want the TLS default", got.OriginPort)
	}

	// eventsUrl: the same one keeps the secret, a new one gets a new secret
	// (shown once), none drops it.
	if got = patch(`{"eventsUrl":"https://hooks.acme.test/a"}`); got.EventsSecret != "" || storedSecret() != firstSecret {
		t.Errorf("the same eventsUrl changed the secret")
	}
	got = patch(`{"eventsUrl":"https://hooks.acme.test/b","eventsSecret":"chosen","destination":{"host":"x"}}`)
	if !secretPattern.MatchString(got.EventsSecret) || got.EventsSecret == firstSecret || storedSecret() != got.EventsSecret {
		t.Errorf("new eventsUrl: secret %q (stored %q)", got.EventsSecret, storedSecret())
	}
	if got.Destination.Host != testSIPDomain {
		t.Errorf("destination was taken from the request: %+v", got.Destination)
	}
	if got = patch(`{"eventsUrl":null}`); got.EventsURL != "" || storedSecret() != "" {
		t.Errorf("removing eventsUrl kept the secret")
	}

	tests := map[string]struct {
		body   string
		status int
		code   string
	}{
		"bad extension":   {`{"extensions":["1001","x"]}`, 422, "invalid_extension"},
		"no extensions":   {`{"extensions":null}`, 422, "invalid_extension"},
		"other id":        {`{"id":"other"}`, 422, "invalid_id"},
		"unresolvable":    {`{"originHost":"gone.acme.test"}`, 422, "dns_resolution_failed"},
		"unknown agent":   {`{"agentId":"nobody"}`, 422, "unknown_agent"},
		"bad events url":  {`{"eventsUrl":"http://hooks.acme.test"}`, 422, "invalid_events_url"},
		"unknown field":   {`{"color":"red"}`, 400, "unknown_field"},
		"case of a field": {`{"OriginHost":"x.acme.test"}`, 400, "unknown_field"},
		"missing channel": {`{"name":"x"}`, 404, "not_found"},
	}
	before, _ := e.store.Channel(context.Background(), "acme")
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			path := "/v1/channels/acme"
			if tc.status == 404 {
				path = "/v1/channels/missing"
			}
			status, body := e.do("PATCH", path, tc.body)
			wantError(t, status, body, tc.status, tc.code)
		})
	}
	if after, _ := e.store.Channel(context.Background(), "acme"); !reflect.DeepEqual(before, after) {
		t.Errorf("refused PATCHes changed the channel")
	}
}

func TestPatchChannelConflict(t *testing.T) {
	e := newEnv(t)
	for i, ext := range []string{"1001", "2001"} {
		c := baseChannel()
		c.ID = []string{"first", "second"}[i]
		c.Extensions = []string{ext}
		if status, body := e.do("POST", "/v1/channels", c); status != http.StatusCreated {
			t.Fatalf("POST = %d %s", status, body)
		}
	}
	status, body := e.do("PATCH", "/v1/channels/second", `{"extensions":["2001","1001"]}`)
	got := wantError(t, status, body, http.StatusConflict, "channel_conflict")
	for _, part := range []string{"first", "203.0.113.10", "1001"} {
		if !strings.Contains(got.Error.Message, part) {
			t.Errorf("message %q does not name %s", got.Error.Message, part)
		}
	}
}

func TestOriginIPsAPI(t *testing.T) {
	e := newEnv(t)
	if status, body := e.do("POST", "/v1/channels", baseChannel()); status != http.StatusCreated {
		t.Fatalf("POST = %d %s", status, body)
	}
	status, body := e.do("PUT", "/v1/channels/acme/origin-ips", map[string]any{"ips": []string{"198.51.100.20", "198.51.100.3", "198.51.100.20"}})
	got := decodeJSON[channel.Channel](t, body)
	if status != http.StatusOK || !reflect.DeepEqual(got.OriginIPs, []string{"198.51.100.3", "198.51.100.20"}) || got.OriginHost != "203.0.113.10" {
		t.Fatalf("PUT = %d %s", status, body)
	}
	// The new IP routes (refused only for want of an agent); the old one does not.
	router := channel.NewRouter(e.store)
	if _, err := router.Route(context.Background(), "198.51.100.20", "1001"); !errors.Is(err, channel.ErrNoAgent) {
		t.Errorf("Route from a new IP = %v; want no_agent", err)
	}
	if _, err := router.Route(context.Background(), "203.0.113.10", "1001"); !errors.Is(err, channel.ErrUnknownSourceIP) {
		t.Errorf("the old IP still routes: %v", err)
	}

	tests := map[string]struct {
		path   string
		body   any
		status int
		code   string
		field  string
	}{
		"IPv6":         {"/v1/channels/acme/origin-ips", map[string]any{"ips": []string{"192.0.2.1", "2001:db8::1"}}, 422, "invalid_origin_ip", "ips[1]"},
		"garbage":      {"/v1/channels/acme/origin-ips", map[string]any{"ips": []string{"pbx.acme.test"}}, 422, "invalid_origin_ip", "ips[0]"},
		"empty":        {"/v1/channels/acme/origin-ips", map[string]any{"ips": []string{}}, 422, "invalid_origin_ip", "ips"},
		"missing list": {"/v1/channels/acme/origin-ips", map[string]any{}, 422, "invalid_origin_ip", "ips"},
		"no channel":   {"/v1/channels/nope/origin-ips", map[string]any{"ips": []string{"192.0.2.1"}}, 404, "not_found", ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			status, body := e.do("PUT", tc.path, tc.body)
			if got := wantError(t, status, body, tc.status, tc.code); got.Error.Field != tc.field {
				t.Errorf("field %q; want %q", got.Error.Field, tc.field)
			}
		})
	}
}

func TestChannelAgentAPI(t *testing.T) {
	e := newEnv(t)
	off := baseAgent()
	off.ID, off.Realtime = "off", false
	for _, a := range []channel.Agent{baseAgent(), off} {
		if status, body := e.do("POST", "/v1/agents", a); status != http.StatusCreated {
			t.Fatalf("POST agent = %d %s", status, body)
		}
	}
	if status, body := e.do("POST", "/v1/channels", baseChannel()); status != http.StatusCreated {
		t.Fatalf("POST = %d %s", status, body)
	}
	tests := map[string]struct {
		path, agentID string
		status        int
		code          string
	}{
		"not realtime":    {"/v1/channels/acme/agent", "off", 422, "agent_not_realtime"},
		"unknown agent":   {"/v1/channels/acme/agent", "nobody", 404, "not_found"},
		"empty agent":     {"/v1/channels/acme/agent", "", 422, "invalid_id"},
		"unknown channel": {"/v1/channels/nope/agent", "front", 404, "not_found"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			status, body := e.do("PUT", tc.path, map[string]string{"agentId": tc.agentID})
			wantError(t, status, body, tc.status, tc.code)
		})
	}
	status, body := e.do("PUT", "/v1/channels/acme/agent", map[string]string{"agentId": "front"})
	if got := decodeJSON[channel.Channel](t, body); status != http.StatusOK || got.AgentID != "front" {
		t.Fatalf("PUT agent = %d %s", status, body)
	}
	m, err := channel.NewRouter(e.store).Route(context.Background(), "203.0.113.10", "1002")
	if err != nil || m.Agent.ID != "front" || m.Channel.ID != "acme" {
		t.Fatalf("Route = %+v, %v", m, err)
	}
}

// TestApplyAndAPIAgree applies a YAML file into one store and makes the
// same agent and channel through the API in another: the stored values are
// the same, but for the random events secret.
func TestApplyAndAPIAgree(t *testing.T) {
	const doc = `agents:
  - id: front
    name: " Front desk "
    voice: Marin
    realtime: true
    transferDestinations:
      - {name: Front Desk, number: "2001", trigger: asks for a person}
    dtmf: {"0": Front Desk, "a": Front Desk}
    fallbackDestination: Front Desk
    turnDetection: {threshold: 0.4, silenceMs: 600}
channels:
  - id: acme
    name: ACME
    originHost: PBX.acme.test.
    originProtocol: tls
    extensions: ["1001", "1002"]
    agentId: front
    eventsUrl: https://hooks.acme.test/vivi
`
	cfg := mustParse(t, doc)

	byApply := newEnv(t)
	byApply.dns.setA("pbx.acme.test", "198.51.100.8", "198.51.100.7")
	if _, err := byApply.prov.Apply(context.Background(), cfg); err != nil {
		t.Fatalf("Apply: %v", err)
	}

	byAPI := newEnv(t)
	byAPI.dns.setA("pbx.acme.test", "198.51.100.7", "198.51.100.8")
	agent := map[string]any{
		"id": "front", "name": " Front desk ", "voice": "Marin", "realtime": true,
		"transferDestinations": []map[string]string{{"name": "Front Desk", "number": "2001", "trigger": "asks for a person"}},
		"dtmf":                 map[string]string{"0": "Front Desk", "a": "Front Desk"},
		"fallbackDestination":  "Front Desk",
		"turnDetection":        map[string]any{"threshold": 0.4, "silenceMs": 600},
	}
	if status, body := byAPI.do("POST", "/v1/agents", agent); status != http.StatusCreated {
		t.Fatalf("POST agent = %d %s", status, body)
	}
	ch := map[string]any{
		"id": "acme", "name": "ACME", "originHost": "PBX.acme.test.", "originProtocol": "tls",
		"extensions": []string{"1001", "1002"}, "agentId": "front", "eventsUrl": "https://hooks.acme.test/vivi",
	}
	if status, body := byAPI.do("POST", "/v1/channels", ch); status != http.StatusCreated {
		t.Fatalf("POST channel = %d %s", status, body)
	}

	a, b := takeSnapshot(t, byApply.store), takeSnapshot(t, byAPI.store)
	for _, s := range []*snapshot{&a, &b} {
		for i := range s.Channels {
			if !secretPattern.MatchString(s.Channels[i].EventsSecret) {
				t.Errorf("channel %s has no events secret", s.Channels[i].ID)
			}
			s.Channels[i].EventsSecret = ""
		}
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("apply and API stored different values:\napply %+v\napi   %+v", a, b)
	}
	if len(a.Agents) != 1 || len(a.Channels) != 1 || a.Agents[0].Name != "Front desk" ||
		!reflect.DeepEqual(a.Channels[0].OriginIPs, []string{"198.51.100.7", "198.51.100.8"}) {
		t.Errorf("stored %+v", a)
	}

	// The API shows both the same way, too.
	_, fromApply := byApply.do("GET", "/v1/channels/acme", nil)
	_, fromAPI := byAPI.do("GET", "/v1/channels/acme", nil)
	if string(fromApply) != string(fromAPI) {
		t.Errorf("GET differs:\n%s\n%s", fromApply, fromAPI)
	}
}
