// Package chattest is a fake of the chat completions API (OpenAI and
// Azure OpenAI paths) for tests and demos: it records every request and
// answers a valid structured result built from the request's JSON schema,
// or whatever it was scripted to.
package chattest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// maxBody bounds a request body read.
const maxBody = 4 << 20

// Usage the fake reports on every answer.
const (
	PromptTokens     = 120
	CachedTokens     = 20
	CompletionTokens = 40
)

// Request is one request the fake received.
type Request struct {
	Method string
	Path   string
	Query  string
	// Deployment is the Azure deployment of the path ("" on the OpenAI path).
	Deployment string
	Header     http.Header
	Body       openai.ChatCompletionRequest
	Raw        []byte
}

// Server is the fake. Its methods are safe for concurrent use.
type Server struct {
	srv *httptest.Server
	URL string // the OpenAI-style base URL: <server>/v1

	mu       sync.Mutex
	reqs     []Request
	failN    int
	failCode int
	refuseN  int
	finishN  int
	finish   string
	result   string
	hold     chan struct{} // nil when not holding; closed on release
	arrived  chan struct{} // signalled when a request arrives
}

// Option configures a Server.
type Option func(*Server)

// WithResult makes every answer's content result (see SetResult).
func WithResult(result string) Option { return func(s *Server) { s.result = result } }

// New starts a fake on 127.0.0.1. Close it when done.
func New(opts ...Option) *Server {
	s := &Server{arrived: make(chan struct{}, 1)}
	for _, o := range opts {
		o(s)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", s.handle)
	mux.HandleFunc("POST /openai/deployments/{deployment}/chat/completions", s.handle)
	s.srv = httptest.NewServer(mux)
	s.URL = s.srv.URL + "/v1"
	return s
}

// Close stops the server; held requests are released.
func (s *Server) Close() {
	s.mu.Lock()
	if s.hold != nil {
		close(s.hold)
		s.hold = nil
	}
	s.mu.Unlock()
	s.srv.Close()
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.srv.Listener.Addr().String() }

// Requests returns a copy of the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

// Arrived is signalled (capacity 1) whenever a request arrives, so that a
// test can wait for one without polling.
func (s *Server) Arrived() <-chan struct{} { return s.arrived }

// FailNext makes the next n requests fail with status and an API error body.
func (s *Server) FailNext(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failN, s.failCode = n, status
}

// RefuseNext makes the model refuse the next n requests (message.refusal).
func (s *Server) RefuseNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuseN = n
}

// FinishNext makes the next n answers end with finish_reason reason
// (content_filter, length) instead of stop, their content unchanged.
func (s *Server) FinishNext(n int, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.finishN, s.finish = n, reason
}

// SetResult makes the content of later answers result verbatim ("" goes
// back to results built from the request's schema).
func (s *Server) SetResult(result string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.result = result
}

// Hold makes requests block, once recorded, until release is called or
// their context ends (the client gave up).
func (s *Server) Hold() (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold == nil {
		s.hold = make(chan struct{})
	}
	ch := s.hold
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if s.hold == ch {
				close(ch)
				s.hold = nil
			}
			s.mu.Unlock()
		})
	}
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(raw) > maxBody {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "body unreadable or too large")
		return
	}
	req := Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
		Deployment: r.PathValue("deployment"), Header: r.Header.Clone(), Raw: raw}
	decodeErr := json.Unmarshal(raw, &req.Body)

	s.mu.Lock()
	s.reqs = append(s.reqs, req)
	hold := s.hold
	fail := 0
	if s.failN > 0 {
		s.failN--
		fail = s.failCode
	}
	refuse := false
	if fail == 0 && s.refuseN > 0 {
		s.refuseN--
		refuse = true
	}
	finish := openai.FinishReasonStop
	if fail == 0 && !refuse && s.finishN > 0 {
		s.finishN--
		finish = openai.FinishReason(s.finish)
	}
	result := s.result
	n := len(s.reqs)
	s.mu.Unlock()
	select {
	case s.arrived <- struct{}{}:
	default:
	}

	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
	}
	switch {
	case req.Deployment == "" && !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer "):
		apiError(w, http.StatusUnauthorized, "invalid_request_error", "no bearer token")
		return
	case req.Deployment != "" && r.Header.Get("api-key") == "":
		apiError(w, http.StatusUnauthorized, "invalid_request_error", "no api-key header")
		return
	case decodeErr != nil:
		apiError(w, http.StatusBadRequest, "invalid_request_error", "body is not a chat completion request")
		return
	case fail != 0:
		apiError(w, fail, "server_error", fmt.Sprintf("scripted failure %d", fail))
		return
	}
	msg := openai.ChatCompletionMessage{Role: openai.ChatMessageRoleAssistant}
	if refuse {
		msg.Refusal = "I'm sorry, I cannot help with that."
	} else if result != "" {
		msg.Content = result
	} else {
		msg.Content = Result(req.Body)
	}
	model := req.Body.Model
	if req.Deployment != "" {
		model = req.Deployment
	}
	resp := openai.ChatCompletionResponse{
		ID: fmt.Sprintf("chatcmpl-fake-%d", n), Object: "chat.completion",
		Created: time.Now().Unix(), Model: model,
		Choices: []openai.ChatCompletionChoice{{Index: 0, Message: msg, FinishReason: finish}},
		Usage: openai.Usage{
			PromptTokens: PromptTokens, CompletionTokens: CompletionTokens, TotalTokens: PromptTokens + CompletionTokens,
			PromptTokensDetails: &openai.PromptTokensDetails{CachedTokens: CachedTokens},
		},
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func apiError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": typ, "code": nil}})
}

// Result is the default answer content to req: every required property of
// its response_format JSON schema filled in (summary "Caller said: <first
// caller line>", outcome resolved or the enum's only value, language en,
// other strings their enum's first value or a placeholder, numbers 0,
// booleans false, arrays empty).
func Result(req openai.ChatCompletionRequest) string {
	var schema map[string]any
	if rf := req.ResponseFormat; rf != nil && rf.JSONSchema != nil && rf.JSONSchema.Schema != nil {
		if b, err := rf.JSONSchema.Schema.MarshalJSON(); err == nil {
			_ = json.Unmarshal(b, &schema)
		}
	}
	out := fill(schema, "", firstCallerLine(req))
	b, _ := json.Marshal(out)
	return string(b)
}

func firstCallerLine(req openai.ChatCompletionRequest) string {
	for _, m := range req.Messages {
		if m.Role != openai.ChatMessageRoleUser {
			continue
		}
		for line := range strings.Lines(m.Content) {
			if rest, ok := strings.CutPrefix(line, "caller: "); ok {
				return strings.TrimSpace(rest)
			}
		}
	}
	return ""
}

func fill(schema map[string]any, name, caller string) any {
	enum, _ := schema["enum"].([]any)
	switch schema["type"] {
	case "object":
		props, _ := schema["properties"].(map[string]any)
		req, _ := schema["required"].([]any)
		out := map[string]any{}
		for _, r := range req {
			key, _ := r.(string)
			p, _ := props[key].(map[string]any)
			out[key] = fill(p, key, caller)
		}
		return out
	case "array":
		return []any{}
	case "number", "integer":
		return 0
	case "boolean":
		return false
	case "string":
		switch {
		case name == "outcome" && len(enum) > 0:
			for _, v := range enum {
				if v == "resolved" {
					return v
				}
			}
			return enum[0]
		case len(enum) > 0:
			return enum[0]
		case name == "summary":
			return "Caller said: " + caller
		case name == "language":
			return "en"
		case name == "intent":
			return "general enquiry"
		}
		return ""
	}
	return nil
}
