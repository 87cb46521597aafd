// Package realtimetest is an in-process fake of the OpenAI Realtime GA
// websocket server, like net/http/httptest for the model side of the bridge.
//
// It speaks the GA protocol only (see shared/reference/openai-realtime.md):
// `GET /v1/realtime?model=...` with `Authorization: Bearer <key>`, a first
// `session.created`, `session.update` validated against the GA shape, scripted
// responses with μ-law audio deltas, barge-in cancellation, truncation,
// function calls, optional server-VAD simulation and an echo mode for load
// tests. Every client event is recorded so that tests can assert on what the
// bridge sent. It is a real package (used by `vivi-bridge demo` and
// `cmd/callsim`) and never wired into `serve`.
//
// Typical use in a test:
//
//	srv := realtimetest.NewServer(realtimetest.Options{ChunkInterval: 20 * time.Millisecond})
//	t.Cleanup(srv.Close)
//	// point the bridge at srv.URL() with key realtimetest.DefaultAPIKey, start a call, then:
//	conn, err := srv.NextConn(ctx)
//	_, err = conn.WaitEvent(ctx, "response.create", 1) // the greeting is streaming now
//	conn.SpeechStarted(1200)                           // barge in
//	ev, err := conn.WaitEvent(ctx, "conversation.item.truncate", 1)
//
// Where the reference leaves an error code unconfirmed, the fake uses
// "invalid_value" (truncate past the end, unknown item) and
// "input_audio_buffer_commit_empty" (commit of an empty buffer); tests should
// match on the message or the error type, as the bridge should.
package realtimetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"
)

// Path is the endpoint path of the GA websocket. With Options.Azure the
// Azure GA path "/openai/v1/realtime" is served as well.
const Path = "/v1/realtime"

// azurePath is the Azure OpenAI GA endpoint path.
const azurePath = "/openai/v1/realtime"

// Defaults applied by NewServer to zero Options fields.
const (
	DefaultAPIKey     = "test-key"
	DefaultChunkBytes = 800 // 100 ms of μ-law at 8 kHz
	defaultGreeting   = 1600
	defaultReply      = 800
)

// Options configure a Server. The zero value is usable.
type Options struct {
	// APIKey is the bearer key every handshake must carry; default DefaultAPIKey.
	APIKey string
	// Azure also accepts the key in an `api-key` header and serves the Azure path.
	Azure bool
	// Greeting is the μ-law audio spoken as the response to the first
	// response.create of a connection; nil means Pattern(1600) (200 ms).
	Greeting []byte
	// GreetingTranscript is the greeting's output transcript; default "greeting".
	GreetingTranscript string
	// ChunkBytes is the audio size of one response.output_audio.delta; default 800 (100 ms).
	ChunkBytes int
	// ChunkInterval paces the deltas of a response; 0 sends them as fast as
	// possible, like the real service, which streams faster than real time.
	ChunkInterval time.Duration
	// Echo answers every input_audio_buffer.append at once with a
	// response.output_audio.delta carrying the same base64 audio (response
	// "resp_echo", item "item_echo") and nothing else; no VAD runs.
	Echo bool
	// VAD simulates server VAD on appended μ-law audio while the session's
	// turn_detection is server_vad: speech_started, then after the session's
	// silence_duration_ms of silence speech_stopped, committed, the input
	// transcription and (create_response) an automatic response from Reply.
	// The appended audio is read as μ-law whatever the session's input format;
	// a frame (one append) is speech when a quarter of its samples are louder
	// than about -48 dBFS (see Tone and Silence).
	VAD bool
	// Transcribe turns a committed user turn into text; default
	// "caller said <n> ms of audio". It runs on the connection's reader goroutine.
	Transcribe func(audio []byte) string
	// Reply says what the agent answers after a user turn or a tool result
	// (userText is the last transcript, user text item or function output);
	// default: Pattern(800) with transcript "reply". It runs on the
	// connection's reader goroutine and must not block for long.
	Reply func(c *Conn, userText string) Response
	// DiscardAudio keeps neither the raw input_audio_buffer.append events nor
	// their audio (Events and InputAudio omit them; WaitEvent still counts
	// them), so that long load tests do not grow without bound.
	DiscardAudio bool
	// SessionModel is the model session.created names; default the model
	// dialled (the real service may name the dated snapshot of an alias).
	SessionModel string
	// Usage is the usage object of every response.done (cancelled ones
	// included), sent as is, unless the Response has its own (Response.Usage);
	// nil sends the fake's estimate: output audio tokens at one per 50 ms
	// of audio sent, nothing else.
	Usage json.RawMessage
	// Logger receives connection-level logs (never audio or keys); default no-op.
	Logger *zap.Logger

	// Faults of the model service, for tests of the bridge's re-dials,
	// rotations and fallbacks. The zero values are a healthy service.

	// ExpiresIn is the session lifetime reported in session.created's
	// expires_at (unix seconds, rounded up); default 60 minutes, the GA cap.
	// Nothing expires the session by itself: tests call Conn.Expire.
	ExpiresIn time.Duration
	// RefuseDials answers the first RefuseDials handshakes with HTTP
	// RefuseStatus (default 503) and the API's JSON error body.
	RefuseDials  int
	RefuseStatus int
	// NoUpgrade accepts the TCP connection and reads the handshake but never
	// answers it (until the client gives up or the server closes).
	NoUpgrade bool
	// NoSessionUpdated accepts session.update without ever answering it
	// with session.updated.
	NoSessionUpdated bool
	// FatalError, when set, is the code of an error event sent right after
	// session.created (e.g. "insufficient_quota"); the connection stays open.
	FatalError string
}

func (o Options) withDefaults() Options {
	if o.APIKey == "" {
		o.APIKey = DefaultAPIKey
	}
	if o.GreetingTranscript == "" {
		o.GreetingTranscript = "greeting"
	}
	if o.Greeting == nil {
		o.Greeting = Pattern(defaultGreeting)
	}
	if o.ChunkBytes <= 0 {
		o.ChunkBytes = DefaultChunkBytes
	}
	if o.Transcribe == nil {
		o.Transcribe = func(audio []byte) string {
			return fmt.Sprintf("caller said %d ms of audio", len(audio)/bytesPerMs)
		}
	}
	if o.Reply == nil {
		o.Reply = func(*Conn, string) Response {
			return Response{Audio: Pattern(defaultReply), Transcript: "reply"}
		}
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.ExpiresIn <= 0 {
		o.ExpiresIn = sessionDuration
	}
	if o.RefuseStatus == 0 {
		o.RefuseStatus = http.StatusServiceUnavailable
	}
	return o
}

// Server is a fake realtime model listening on 127.0.0.1 until Close.
type Server struct {
	opts     Options
	log      *zap.Logger
	http     *http.Server
	url      string
	upgrader websocket.Upgrader
	ids      atomic.Uint64 // source of event_, item_, resp_ ... ids
	dials    atomic.Int64  // handshakes received (refused ones included)

	wg sync.WaitGroup // the Serve loop, every handler and every connection

	mu     sync.Mutex // guards the fields below
	closed bool
	conns  []*Conn
	next   int           // index in conns of the next NextConn result
	wake   chan struct{} // closed when a connection is added or the server closes
}

// NewServer starts a fake realtime server on 127.0.0.1:0. Like
// httptest.NewServer it panics when it cannot listen.
func NewServer(opts Options) *Server {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("realtimetest: listen: %v", err))
	}
	opts = opts.withDefaults()
	s := &Server{
		opts: opts,
		log:  opts.Logger.Named("realtimetest"),
		url:  "ws://" + ln.Addr().String() + Path,
		upgrader: websocket.Upgrader{
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
	mux := http.NewServeMux()
	mux.HandleFunc(Path, s.handle)
	if opts.Azure {
		mux.HandleFunc(azurePath, s.handle)
	}
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Warn("serve ended", zap.Error(err))
		}
	}()
	return s
}

// Dials returns the number of handshakes received so far, refused and
// unanswered ones included.
func (s *Server) Dials() int { return int(s.dials.Load()) }

// URL returns "ws://127.0.0.1:<port>/v1/realtime"; callers append ?model=.
func (s *Server) URL() string { return s.url }

// Close stops the listener, ends every connection and waits until all of the
// server's goroutines have returned.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return
	}
	s.closed = true
	conns := append([]*Conn(nil), s.conns...)
	s.wakeLocked()
	s.mu.Unlock()

	_ = s.http.Close()
	for _, c := range conns {
		c.abort()
	}
	s.wg.Wait()
}

// NextConn returns the next accepted connection, in order of acceptance,
// waiting for it until ctx ends or the server closes.
func (s *Server) NextConn(ctx context.Context) (*Conn, error) {
	for {
		s.mu.Lock()
		if s.next < len(s.conns) {
			c := s.conns[s.next]
			s.next++
			s.mu.Unlock()
			return c, nil
		}
		if s.closed {
			s.mu.Unlock()
			return nil, errors.New("realtimetest: next conn: server closed")
		}
		if s.wake == nil {
			s.wake = make(chan struct{})
		}
		wake := s.wake
		s.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, fmt.Errorf("realtimetest: next conn: %w", ctx.Err())
		}
	}
}

// Conns returns every connection accepted so far, in order of acceptance.
func (s *Server) Conns() []*Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Conn(nil), s.conns...)
}

func (s *Server) wakeLocked() {
	if s.wake != nil {
		close(s.wake)
		s.wake = nil
	}
}

func (s *Server) newID(prefix string) string {
	return fmt.Sprintf("%s_%d", prefix, s.ids.Add(1))
}

// handle checks the handshake like the real service and runs the connection.
func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		httpError(w, http.StatusServiceUnavailable, "server_closed", "The server is shutting down.", nil)
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	if n := s.dials.Add(1); n <= int64(s.opts.RefuseDials) {
		code := "server_error"
		if s.opts.RefuseStatus == http.StatusTooManyRequests {
			code = "rate_limit_exceeded"
		}
		httpError(w, s.opts.RefuseStatus, code, "The server is temporarily unable to take the session.", nil)
		return
	}
	if s.opts.NoUpgrade {
		<-r.Context().Done() // never answered: the client times out, or Close ends it
		return
	}
	if !s.authorized(r.Header) {
		httpError(w, http.StatusUnauthorized, "invalid_api_key",
			"Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.", nil)
		return
	}
	model := r.URL.Query().Get("model")
	if model == "" {
		param := "model"
		httpError(w, http.StatusBadRequest, "missing_required_parameter",
			"Missing required parameter: 'model'.", &param)
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.log.Debug("upgrade failed", zap.Error(err)) // Upgrade already answered the request.
		return
	}
	c := newConn(s, ws, model, r.Header.Clone(), r.Header.Get("OpenAI-Beta") != "")

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ws.Close()
		return
	}
	s.conns = append(s.conns, c)
	s.wakeLocked()
	s.mu.Unlock()

	c.run()
}

func (s *Server) authorized(h http.Header) bool {
	if auth, ok := strings.CutPrefix(h.Get("Authorization"), "Bearer "); ok && auth == s.opts.APIKey {
		return true
	}
	return s.opts.Azure && h.Get("api-key") == s.opts.APIKey
}

// httpError answers a refused handshake with the API's JSON error body.
func httpError(w http.ResponseWriter, status int, code, message string, param *string) {
	body, _ := json.Marshal(map[string]any{"error": map[string]any{
		"type": "invalid_request_error", "code": code, "message": message, "param": param,
	}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
