package channel_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/store"
)

// Both stores are what the provisioner and the router are written against.
var (
	_ channel.Repository = (*store.Memory)(nil)
	_ channel.Repository = (*store.Redis)(nil)
	_ channel.RouteStore = (*store.Memory)(nil)
	_ channel.RouteStore = (*store.Redis)(nil)
)

const (
	testToken     = "admin-token-for-tests"
	testSIPDomain = "vivi.sip.twilio.com"
)

// baseAgent is a valid realtime agent.
func baseAgent() channel.Agent {
	return channel.Agent{
		ID:           "front",
		Name:         "Front desk agent",
		Instructions: "Be brief.",
		Greeting:     "Hello!",
		Voice:        "marin",
		Model:        "gpt-realtime",
		Realtime:     true,
		TransferDestinations: []channel.Destination{
			{Name: "Front Desk", Number: "2001", Trigger: "the caller asks for a person"},
			{Name: "Billing", Number: "2002"},
		},
		DTMF:                map[string]string{"0": "Front Desk", "9": "Billing"},
		FallbackDestination: "Front Desk",
		TurnDetection:       &channel.TurnDetection{Threshold: 0.5, SilenceMs: 500, PrefixPaddingMs: 300},
		Analysis: &channel.AgentAnalysis{
			Instructions: "A call is resolved when the caller got an appointment.",
			Fields: []channel.AnalysisField{
				{Name: "department", Description: "the department asked for", Type: "string", Enum: []string{"sales", "support"}},
				{Name: "callback_requested", Type: "boolean"},
			},
		},
	}
}

// baseChannel is a valid channel whose origin host is an IPv4 literal (no DNS).
func baseChannel() channel.Channel {
	return channel.Channel{
		ID:         "acme",
		Name:       "ACME HQ",
		OriginHost: "203.0.113.10",
		Extensions: []string{"1001", "1002"},
	}
}

// env is a provisioner and the admin API over a fresh memory store, with a
// loopback DNS server.
type env struct {
	t     *testing.T
	store *store.Memory
	dns   *dnsServer
	prov  *channel.Provisioner
	srv   *httptest.Server
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, store: store.NewMemory(store.Options{}), dns: startDNS(t)}
	e.prov = e.provisioner(e.store)
	mux := http.NewServeMux()
	channel.NewAPI(channel.APIConfig{AdminToken: testToken}, e.prov).Register(mux)
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	return e
}

func (e *env) provisioner(repo channel.Repository) *channel.Provisioner {
	e.t.Helper()
	p, err := channel.NewProvisioner(channel.ProvisionerConfig{
		Repo:      repo,
		Resolver:  &channel.Resolver{R: e.dns.resolver(), Timeout: 2 * time.Second},
		SIPDomain: testSIPDomain,
	})
	if err != nil {
		e.t.Fatalf("NewProvisioner: %v", err)
	}
	return p
}

// do sends an authorized request; body is sent as is when it is a string,
// else JSON-encoded. It returns the status and the body.
func (e *env) do(method, path string, body any) (int, []byte) {
	e.t.Helper()
	return e.doWith(method, path, body, "Bearer "+testToken)
}

func (e *env) doWith(method, path string, body any, auth string) (int, []byte) {
	e.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			e.t.Fatalf("marshal: %v", err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, e.srv.URL+path, r)
	if err != nil {
		e.t.Fatalf("request: %v", err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("read body: %v", err)
	}
	return resp.StatusCode, data
}

// apiError is the JSON of an admin API error.
type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Field   string `json:"field"`
	} `json:"error"`
}

// wantError checks that the answer is an error with status and code, and
// returns it.
func wantError(t *testing.T, status int, body []byte, wantStatus int, wantCode string) apiError {
	t.Helper()
	var e apiError
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	if status != wantStatus || e.Error.Code != wantCode || e.Error.Message == "" {
		t.Fatalf("got %d %s; want %d with code %s", status, body, wantStatus, wantCode)
	}
	return e
}

func decodeJSON[T any](t *testing.T, data []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("decode %q: %v", data, err)
	}
	return v
}
