package analysis_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/vivi/bridge/analysis"
	"github.com/vivi/bridge/analysis/chattest"
	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/session"
)

const testKey = "sk-test-0123456789abcdef"

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func newFake(t *testing.T) *chattest.Server {
	t.Helper()
	s := chattest.New()
	t.Cleanup(s.Close)
	return s
}

func newAnalyzer(t *testing.T, cfg analysis.Config) *analysis.Analyzer {
	t.Helper()
	if cfg.APIKey == "" {
		cfg.APIKey = testKey
	}
	if cfg.Model == "" {
		cfg.Model = "gpt-4o-mini"
	}
	a, err := analysis.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

// endedCall is a call the caller hung up after a short conversation with
// a tool call.
func endedCall() *session.Session {
	s := session.New("CA0001", "acme", "front", t0)
	s.State = session.Streaming
	s.AddTurn(t0.Add(time.Second), session.RoleAgent, "Hello, ACME, how can I help?")
	s.AddTurn(t0.Add(3*time.Second), session.RoleCaller, "I would like to book a table for four.")
	s.AddToolTurn(t0.Add(4*time.Second), session.ToolCall{CallID: "c1", Name: "check_availability", Arguments: `{"people":4}`, Output: `{"ok":true}`})
	s.AddTurn(t0.Add(5*time.Second), session.RoleAgent, "Booked for tonight at eight.")
	s.End("caller_hangup", t0.Add(65*time.Second))
	return s
}

func settings() channel.AgentAnalysis {
	return channel.AgentAnalysis{
		Instructions: "A booking made is resolved.",
		Fields: []channel.AnalysisField{
			{Name: "department", Description: "the department asked for", Type: "string", Enum: []string{"sales", "support"}},
			{Name: "party_size", Type: "integer"},
			{Name: "spend", Type: "number"},
			{Name: "callback_requested", Type: "boolean"},
		},
	}
}

// dialTo is a client whose every connection goes to addr, whatever the
// URL's host (to call the fake as an Azure host).
func dialTo(addr string) *http.Client {
	var d net.Dialer
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
	}}
}
