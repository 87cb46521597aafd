package analysis_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vivi/bridge/analysis"
	"github.com/vivi/bridge/analysis/chattest"
	"github.com/vivi/bridge/session"
)

// TestAnalyzeRequest checks the one request sent for a call (model,
// messages with the facts and the transcript, a strict json_schema with the
// agent's fields) and the result and usage read from the fake's answer.
func TestAnalyzeRequest(t *testing.T) {
	fake := newFake(t)
	a := newAnalyzer(t, analysis.Config{BaseURL: fake.URL})
	out, err := a.Analyze(t.Context(), analysis.Input{Session: endedCall(), Settings: settings()})
	if err != nil {
		t.Fatalf("Analyze: %v", err)
	}
	reqs := fake.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests; want 1", len(reqs))
	}
	r := reqs[0]
	if r.Path != "/v1/chat/completions" || r.Header.Get("Authorization") != "Bearer "+testKey {
		t.Errorf("path %s, authorization %q", r.Path, r.Header.Get("Authorization"))
	}
	if r.Body.Model != "gpt-4o-mini" || len(r.Body.Messages) != 2 {
		t.Fatalf("model %q, %d messages", r.Body.Model, len(r.Body.Messages))
	}
	sys, user := r.Body.Messages[0], r.Body.Messages[1]
	if sys.Role != "system" || !strings.Contains(sys.Content, "A booking made is resolved.") {
		t.Errorf("system message %q", sys.Content)
	}
	for _, want := range []string{
		"end reason: caller_hangup", "duration: 1m5s",
		"agent: Hello, ACME, how can I help?\ncaller: I would like to book a table for four.\n" +
			`tool call: check_availability({"people":4}) -> {"ok":true}` + "\nagent: Booked for tonight at eight.\n",
	} {
		if user.Role != "user" || !strings.Contains(user.Content, want) {
			t.Errorf("user message lacks %q:\n%s", want, user.Content)
		}
	}
	rf := r.Body.ResponseFormat
	if rf == nil || rf.Type != "json_schema" || rf.JSONSchema == nil || !rf.JSONSchema.Strict || rf.JSONSchema.Name != analysis.SchemaName {
		t.Fatalf("response_format %+v", rf)
	}
	schema := schemaOf(t, r)
	if got := schema["required"]; !reflect.DeepEqual(got, []any{"summary", "intent", "outcome", "follow_ups", "language", "extra"}) {
		t.Errorf("required %v", got)
	}
	if schema["additionalProperties"] != false {
		t.Errorf("additionalProperties %v", schema["additionalProperties"])
	}
	props := schema["properties"].(map[string]any)
	if got := props["outcome"].(map[string]any)["enum"]; !reflect.DeepEqual(got, []any{"resolved", "abandoned"}) {
		t.Errorf("outcome enum %v", got)
	}
	extra := props["extra"].(map[string]any)
	want := map[string]any{
		"type": "object", "additionalProperties": false, "description": "The business's own fields.",
		"required": []any{"department", "party_size", "spend", "callback_requested"},
		"properties": map[string]any{
			"department":         map[string]any{"type": "string", "description": "the department asked for", "enum": []any{"sales", "support"}},
			"party_size":         map[string]any{"type": "integer"},
			"spend":              map[string]any{"type": "number"},
			"callback_requested": map[string]any{"type": "boolean"},
		},
	}
	if !reflect.DeepEqual(extra, want) {
		t.Errorf("extra schema %v\nwant %v", extra, want)
	}

	wantRes := session.AnalysisResult{
		Summary: "Caller said: I would like to book a table for four.", Intent: "general enquiry",
		Outcome: "resolved", FollowUps: []string{}, Language: "en", FromModel: true,
		Extra: map[string]any{"department": "sales", "party_size": int64(0), "spend": float64(0), "callback_requested": false},
	}
	if !reflect.DeepEqual(out.Result, wantRes) {
		t.Errorf("result %+v\nwant %+v", out.Result, wantRes)
	}
	wantUse := session.ModelUsage{Model: "gpt-4o-mini", Use: session.UseAnalysis, Responses: 1,
		InputTextTokens: 120, CachedTextTokens: 20, OutputTextTokens: 40}
	if out.Usage != wantUse || !out.Requested {
		t.Errorf("usage %+v requested %v", out.Usage, out.Requested)
	}
}

func schemaOf(t *testing.T, r chattest.Request) map[string]any {
	t.Helper()
	b, err := r.Body.ResponseFormat.JSONSchema.Schema.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestAnalyzeNoFields: an agent without fields gets no extra in the schema
// and none in the result.
func TestAnalyzeNoFields(t *testing.T) {
	fake := newFake(t)
	a := newAnalyzer(t, analysis.Config{BaseURL: fake.URL})
	out, err := a.Analyze(t.Context(), analysis.Input{Session: endedCall()})
	if err != nil {
		t.Fatalf("Analyze: %v", err)
	}
	schema := schemaOf(t, fake.Requests()[0])
	if _, ok := schema["properties"].(map[string]any)["extra"]; ok || slices.Contains(schema["required"].([]any), "extra") {
		t.Errorf("schema has extra: %v", schema)
	}
	if out.Result.Extra != nil {
		t.Errorf("extra %v", out.Result.Extra)
	}
}

// TestAnalyzeFacts: what the session records decides the outcome, whatever
// the model answers, and the fact is in the schema's enum.
func TestAnalyzeFacts(t *testing.T) {
	tests := map[string]struct {
		mutate      func(*session.Session)
		outcome     string
		destination string
	}{
		"transferred": {func(s *session.Session) {
			s.State = session.Transferred
			s.EndReason = "transferred"
			s.AddTransfer(session.Transfer{Destination: "Front Desk", Via: "tool", Status: "in-progress"})
		}, session.OutcomeTransferred, "Front Desk"},
		"transfer failed then hang-up": {func(s *session.Session) {
			s.AddTransfer(session.Transfer{Destination: "Billing", Via: "tool", Status: "failed", NotifySIPCode: "486"})
		}, session.OutcomeTransferFailed, "Billing"},
		"transfer not started": {func(s *session.Session) {
			s.AddTransfer(session.Transfer{Destination: "Billing", Via: "dtmf", Error: "twilio: 500"})
		}, session.OutcomeTransferFailed, "Billing"},
		"model unavailable": {func(s *session.Session) { s.EndReason = "model_unavailable" }, session.OutcomeModelFailure, ""},
		"agent hung up":     {func(s *session.Session) { s.EndReason = "agent_hangup" }, session.OutcomeAgentEnded, ""},
		"caller hung up":    {func(s *session.Session) {}, session.OutcomeAbandoned, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			fake := newFake(t)
			fake.SetResult(`{"summary":"s","intent":"i","outcome":"abandoned","follow_ups":["call back"],"language":"de-CH"}`)
			a := newAnalyzer(t, analysis.Config{BaseURL: fake.URL})
			s := endedCall()
			tc.mutate(s)
			out, err := a.Analyze(t.Context(), analysis.Input{Session: s})
			if err != nil {
				t.Fatalf("Analyze: %v", err)
			}
			r := out.Result
			if r.Outcome != tc.outcome || r.Destination != tc.destination || r.Language != "de-CH" ||
				!reflect.DeepEqual(r.FollowUps, []string{"call back"}) || !r.FromModel {
				t.Errorf("result %+v; want outcome %s destination %q", r, tc.outcome, tc.destination)
			}
			enum := schemaOf(t, fake.Requests()[0])["properties"].(map[string]any)["outcome"].(map[string]any)["enum"].([]any)
			if !slices.Contains(enum, any(tc.outcome)) {
				t.Errorf("enum %v lacks %s", enum, tc.outcome)
			}
			if user := fake.Requests()[0].Body.Messages[1].Content; tc.destination != "" && !strings.Contains(user, `transfer to "`+tc.destination+`"`) {
				t.Errorf("user message lacks the transfer:\n%s", user)
			}
		})
	}
}

// TestAnalyzeNothingSaid: a transcript without caller or agent text sends
// no request; the result is the facts (abandoned by default).
func TestAnalyzeNothingSaid(t *testing.T) {
	tests := map[string]struct {
		mutate  func(*session.Session)
		outcome string
		dest    string
	}{
		"caller hung up": {func(s *session.Session) { s.End("caller_hangup", t0.Add(5*time.Second)) }, session.OutcomeAbandoned, ""},
		"dtmf transfer, a tool turn only": {func(s *session.Session) {
			s.AddToolTurn(t0, session.ToolCall{CallID: "c", Name: "transfer_call"})
			s.AddTransfer(session.Transfer{Destination: "Front Desk", Via: "dtmf", Status: "in-progress"})
			s.State = session.Transferred
		}, session.OutcomeTransferred, "Front Desk"},
		"model unavailable": {func(s *session.Session) { s.End("model_unavailable", t0.Add(5*time.Second)) }, session.OutcomeModelFailure, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			fake := newFake(t)
			a := newAnalyzer(t, analysis.Config{BaseURL: fake.URL})
			s := session.New("CA0002", "acme", "front", t0)
			s.State = session.Streaming
			tc.mutate(s)
			out, err := a.Analyze(t.Context(), analysis.Input{Session: s, Settings: settings()})
			if err != nil {
				t.Fatalf("Analyze: %v", err)
			}
			want := session.AnalysisResult{Outcome: tc.outcome, Destination: tc.dest, FollowUps: []string{}}
			if !reflect.DeepEqual(out.Result, want) || out.Requested || out.Usage != (session.ModelUsage{}) {
				t.Errorf("output %+v; want result %+v and no request", out, want)
			}
			if b, _ := json.Marshal(out.Result); !strings.Contains(string(b), `"followUps":[]`) {
				t.Errorf("followUps not an empty list: %s", b)
			}
			if n := len(fake.Requests()); n != 0 {
				t.Errorf("%d requests; want none", n)
			}
		})
	}
}

// TestAnalyzeErrors classifies the failures: the API's status, a
// refusal, an answer that is not the schema's JSON. No message holds the
// key or the transcript.
func TestAnalyzeErrors(t *testing.T) {
	tests := map[string]struct {
		script    func(*chattest.Server)
		status    int
		retryable bool
		refusal   bool
	}{
		"500":      {func(s *chattest.Server) { s.FailNext(1, 500) }, 500, true, false},
		"503":      {func(s *chattest.Server) { s.FailNext(1, 503) }, 503, true, false},
		"429":      {func(s *chattest.Server) { s.FailNext(1, 429) }, 429, true, false},
		"408":      {func(s *chattest.Server) { s.FailNext(1, 408) }, 408, true, false},
		"409":      {func(s *chattest.Server) { s.FailNext(1, 409) }, 409, true, false},
		"400":      {func(s *chattest.Server) { s.FailNext(1, 400) }, 400, false, false},
		"401":      {func(s *chattest.Server) { s.FailNext(1, 401) }, 401, false, false},
		"404":      {func(s *chattest.Server) { s.FailNext(1, 404) }, 404, false, false},
		"refusal":  {func(s *chattest.Server) { s.RefuseNext(1) }, 0, false, true},
		"not JSON": {func(s *chattest.Server) { s.SetResult("Sure! Here is the summary: ...") }, 0, false, true},
		"no summary": {func(s *chattest.Server) {
			s.SetResult(`{"intent":"i","outcome":"resolved","follow_ups":[],"language":"en"}`)
		}, 0, false, true},
		"outcome wrong": {func(s *chattest.Server) {
			s.SetResult(`{"summary":"","intent":"","outcome":"transferred","follow_ups":[],"language":"en"}`)
		}, 0, false, true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			fake := newFake(t)
			tc.script(fake)
			a := newAnalyzer(t, analysis.Config{BaseURL: fake.URL})
			out, err := a.Analyze(t.Context(), analysis.Input{Session: endedCall(), Settings: settings()})
			var e *analysis.Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v; want an *analysis.Error", err)
			}
			if e.Status != tc.status || e.Retryable != tc.retryable || e.Refusal != tc.refusal || e.Msg == "" {
				t.Errorf("error %+v; want status %d retryable %v refusal %v", e, tc.status, tc.retryable, tc.refusal)
			}
			if msg := err.Error(); strings.Contains(msg, testKey) || strings.Contains(msg, "table for four") {
				t.Errorf("error message leaks: %s", msg)
			}
			if !out.Requested {
				t.Error("Requested is false")
			}
			if tc.refusal && out.Usage.Responses != 1 {
				t.Errorf("a refusal's usage %+v", out.Usage)
			}
		})
	}
}

// TestAnalyzeNetworkError: no server at all is retryable.
func TestAnalyzeNetworkError(t *testing.T) {
	fake := chattest.New()
	url := fake.URL
	fake.Close()
	a := newAnalyzer(t, analysis.Config{BaseURL: url})
	_, err := a.Analyze(t.Context(), analysis.Input{Session: endedCall()})
	var e *analysis.Error
	if !errors.As(err, &e) || !e.Retryable || e.Status != 0 || e.Refusal {
		t.Fatalf("err = %#v", err)
	}
}

// TestAnalyzeAzure: an Azure OpenAI host is called on the deployment's
// path with the api-key header; the deployment name keeps its dots.
func TestAnalyzeAzure(t *testing.T) {
	fake := newFake(t)
	a := newAnalyzer(t, analysis.Config{
		BaseURL: "http://vivi-test.openai.azure.com/openai/v1", Model: "gpt-4.1-mini.prod",
		HTTPClient: dialTo(fake.Addr()),
	})
	out, err := a.Analyze(t.Context(), analysis.Input{Session: endedCall()})
	if err != nil {
		t.Fatalf("Analyze: %v", err)
	}
	r := fake.Requests()[0]
	if r.Path != "/openai/deployments/gpt-4.1-mini.prod/chat/completions" || r.Query != "api-version="+analysis.AzureAPIVersion {
		t.Errorf("path %s?%s", r.Path, r.Query)
	}
	if r.Header.Get("api-key") != testKey || r.Header.Get("Authorization") != "" {
		t.Errorf("api-key %q authorization %q", r.Header.Get("api-key"), r.Header.Get("Authorization"))
	}
	if out.Usage.Model != "gpt-4.1-mini.prod" || out.Result.Outcome != "resolved" {
		t.Errorf("output %+v", out)
	}

	b := newAnalyzer(t, analysis.Config{
		BaseURL: "http://vivi-test.cognitiveservices.azure.com/?api-version=2025-01-01-preview", Model: "dep",
		HTTPClient: dialTo(fake.Addr()),
	})
	if _, err := b.Analyze(t.Context(), analysis.Input{Session: endedCall()}); err != nil {
		t.Fatalf("Analyze: %v", err)
	}
	if r := fake.Requests()[1]; r.Path != "/openai/deployments/dep/chat/completions" || r.Query != "api-version=2025-01-01-preview" {
		t.Errorf("path %s?%s", r.Path, r.Query)
	}
}

// TestAnalyzeTimeout: a model that does not answer within Timeout is a
// retryable error, and the held request sees its context end.
func TestAnalyzeTimeout(t *testing.T) {
	fake := newFake(t)
	release := fake.Hold()
	defer release()
	a := newAnalyzer(t, analysis.Config{BaseURL: fake.URL, Timeout: 50 * time.Millisecond})
	_, err := a.Analyze(t.Context(), analysis.Input{Session: endedCall()})
	var e *analysis.Error
	if !errors.As(err, &e) || !e.Retryable || !strings.Contains(e.Msg, "50ms") {
		t.Fatalf("err = %v", err)
	}
	if len(fake.Requests()) != 1 {
		t.Errorf("%d requests", len(fake.Requests()))
	}
}

// TestAnalyzeCanceled: a pod stopping mid-way (its context canceled)
// gets a retryable error.
func TestAnalyzeCanceled(t *testing.T) {
	fake := newFake(t)
	release := fake.Hold()
	defer release()
	a := newAnalyzer(t, analysis.Config{BaseURL: fake.URL})
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := a.Analyze(ctx, analysis.Input{Session: endedCall()})
		errc <- err
	}()
	<-fake.Arrived()
	cancel()
	err := <-errc
	var e *analysis.Error
	if !errors.As(err, &e) || !e.Retryable || e.Msg != "canceled" {
		t.Fatalf("err = %v", err)
	}
}

func TestNewRefuses(t *testing.T) {
	for name, cfg := range map[string]analysis.Config{
		"no key":   {BaseURL: "https://api.openai.com/v1"},
		"bad URL":  {APIKey: "k", BaseURL: "ftp://api.openai.com"},
		"no host":  {APIKey: "k", BaseURL: "https:///v1"},
		"relative": {APIKey: "k", BaseURL: "/v1"},
	} {
		if _, err := analysis.New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
}
