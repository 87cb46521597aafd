package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/vivi/bridge/bridge/realtime"
	"github.com/vivi/bridge/usage"
)

// StreamPath is where Twilio opens Media Streams.
const StreamPath = "/twilio/stream"

// Config configures a Server. Zero durations and counts take the defaults
// named on each field.
type Config struct {
	// PodID names this pod in the session record (Session.PodID).
	PodID string
	// RealtimeURL is the model endpoint without query; default
	// wss://api.openai.com/v1/realtime. ?model= is appended.
	RealtimeURL string
	// RealtimeModel is the model of agents that name none; default gpt-realtime.
	RealtimeModel string
	// APIKey is the realtime model key (OPENAI_API_KEY).
	APIKey string
	// RealtimeDialer dials the model; nil means a default dialer.
	RealtimeDialer *websocket.Dialer
	// BaseContext is the parent of every call's context (not the HTTP
	// request's, so that draining is our decision); nil means Background.
	// Cancelling it ends every call with reason shutdown.
	BaseContext context.Context
	// Now is the clock of timestamps and barge-in arithmetic; default time.Now.
	Now func() time.Time
	// After is the timer source of the start timeout, the goodbye and
	// transfer announcement waits (HangupWait) and the operator request
	// hand-over; default time.After. Tests inject one they fire themselves,
	// so that "after the timeout" needs no real time. (Since Go 1.23 an
	// unstopped timer is collected once unreferenced, so the call loop
	// needs no Stop.)
	After func(time.Duration) <-chan time.Time

	// StartTimeout bounds the wait for Twilio's connected and start; 10 s.
	StartTimeout time.Duration
	// SetupTimeout bounds the token claim, session and agent look-ups; 10 s.
	SetupTimeout time.Duration
	// DialTimeout bounds one model dial (handshake included); 10 s.
	DialTimeout time.Duration
	// HoldAudio is how much caller audio is held while the model is not
	// ready; beyond it the oldest is dropped; 10 s.
	HoldAudio time.Duration
	// WriteTimeout is the deadline of every websocket write; 5 s.
	WriteTimeout time.Duration
	// TwilioIdleTimeout ends a call when Twilio sends nothing for that long
	// (it sends media every 20 ms); 30 s.
	TwilioIdleTimeout time.Duration
	// PingInterval is how often the model socket is pinged; 20 s. The model
	// socket is dropped after 3 intervals without any message or pong.
	PingInterval time.Duration
	// HangupWait bounds the wait for the goodbye to finish playing after
	// the model's response is done, before end_call hangs up; 15 s.
	HangupWait time.Duration
	// MaxRedials is how many drops of a ready model session a call survives
	// within any RedialWindow (each re-dialled at once); one more gives up
	// on the model (the fallback). A rate, not a lifetime count; 5.
	// Rotations before expiry and expiries are not drops.
	MaxRedials int
	// RedialWindow is the window of MaxRedials; 10 min.
	RedialWindow time.Duration
	// ModelReadyTimeout bounds one dial until the session is ready (the
	// handshake, session.created and session.updated); a dial that is not
	// ready in time is dropped and counted as failed, and failed dials are
	// re-dialled with a jittered backoff from 200 ms to 3 s; 5 s.
	ModelReadyTimeout time.Duration
	// ModelWait bounds the time a call goes without a ready model session
	// (at the start, or after a drop) before it gives up on the model: a
	// transfer to the agent's fallback destination, or an apology and the
	// end of the call; 5 s.
	ModelWait time.Duration
	// StoreTimeout bounds each session write and each call-control or
	// transfer request; 10 s.
	StoreTimeout time.Duration
	// ProbeWindow bounds how long ProbeStream waits for an inbound Twilio
	// frame before it answers not live; 300 ms (Twilio sends media every
	// 20 ms on a live stream).
	ProbeWindow time.Duration
	// TranscriptionModel transcribes the caller; default gpt-4o-mini-transcribe.
	TranscriptionModel string

	// LeaseTTL is how long a call's ownership lease runs unless renewed;
	// 15 s. LeaseRenew is how often the owner renews it; 5 s (lease.go).
	LeaseTTL   time.Duration
	LeaseRenew time.Duration
	// MigrateQuietWait bounds the wait for a quiet moment (no agent audio
	// playing, caller not speaking, no response under way) before a
	// draining pod migrates a call anyway, at the next frame; 10 s.
	MigrateQuietWait time.Duration

	// ModelPoolSize is how many connections of RealtimeModel the pod keeps
	// open for calls to take (MODEL_POOL_SIZE); 0 means no pool, every call
	// dials once accepted. A take is refilled in the background.
	ModelPoolSize int
	// ModelPoolMaxAge retires a pooled connection that waited that long;
	// 40 s, and never more than 2 PingIntervals (nothing pings a pooled
	// connection, and its read deadline is 3 intervals).
	ModelPoolMaxAge time.Duration

	// Prices prices the calls' model usage (session.Usage); nil means
	// usage.Default().
	Prices usage.Prices
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.RealtimeURL == "" {
		c.RealtimeURL = "wss://api.openai.com/v1/realtime"
	}
	if c.RealtimeModel == "" {
		c.RealtimeModel = "gpt-realtime"
	}
	if c.BaseContext == nil {
		c.BaseContext = context.Background()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.After == nil {
		c.After = time.After
	}
	if c.TranscriptionModel == "" {
		c.TranscriptionModel = "gpt-4o-mini-transcribe"
	}
	if c.MaxRedials <= 0 {
		c.MaxRedials = 5
	}
	def(&c.RedialWindow, 10*time.Minute)
	def(&c.ModelReadyTimeout, 5*time.Second)
	def(&c.ModelWait, 5*time.Second)
	def(&c.StartTimeout, 10*time.Second)
	def(&c.SetupTimeout, 10*time.Second)
	def(&c.DialTimeout, 10*time.Second)
	def(&c.HoldAudio, 10*time.Second)
	def(&c.WriteTimeout, 5*time.Second)
	def(&c.TwilioIdleTimeout, 30*time.Second)
	def(&c.PingInterval, 20*time.Second)
	def(&c.HangupWait, 15*time.Second)
	def(&c.StoreTimeout, 10*time.Second)
	def(&c.ProbeWindow, 300*time.Millisecond)
	def(&c.LeaseTTL, 15*time.Second)
	def(&c.LeaseRenew, 5*time.Second)
	def(&c.MigrateQuietWait, 10*time.Second)
	def(&c.ModelPoolMaxAge, 40*time.Second)
	c.ModelPoolMaxAge = min(c.ModelPoolMaxAge, 2*c.PingInterval)
	c.ModelPoolSize = max(c.ModelPoolSize, 0)
	if c.Prices == nil {
		c.Prices = usage.Default()
	}
	return c
}

// Deps are the Server's collaborators. Sessions, Tokens, Claims, Handshake
// and Agents are required; Calls and Transfers may be nil (end_call then only
// closes the stream; transfers are refused with a log line).
type Deps struct {
	Sessions  Sessions
	Tokens    Tokens
	Claims    TokenClaimer
	Handshake HandshakeValidator
	Agents    Agents
	Calls     CallControl
	Transfers Transferer
	// Migrator moves live calls to another pod when the server drains;
	// nil: a draining server lets its calls run until Shutdown's deadline.
	Migrator Migrator
	// Usage counts the tokens and estimated cost of the calls' models
	// (vivi_model_tokens_total, vivi_model_cost_usd_total); nil: not counted.
	Usage      *usage.Tokens
	Logger     *zap.Logger           // nil: no logs
	Registerer prometheus.Registerer // nil: metrics are kept but not exported
}

// Server accepts Twilio Media Streams on GET /twilio/stream and relays each
// call to the realtime model.
type Server struct {
	cfg      Config
	deps     Deps
	log      *zap.Logger
	metrics  *metrics
	wmetrics *writerMetrics
	pool     bufPool
	models   *modelPool // nil when Config.ModelPoolSize is 0
	upgrader websocket.Upgrader
	active   atomic.Int64

	mu       sync.Mutex // guards draining, forced, closed, calls, open, openChanged and wg.Add
	draining bool
	forced   bool // the drain deadline passed: calls are ended at once
	closed   bool // Shutdown is over: streams are refused, wg.Add is never called again
	calls    map[*call]struct{}
	open     int            // stream handlers running
	changed  chan struct{}  // closed and replaced when open drops
	wg       sync.WaitGroup // one per open stream handler
}

// NewServer returns a Server.
func NewServer(cfg Config, deps Deps) (*Server, error) {
	switch {
	case deps.Sessions == nil:
		return nil, errors.New("bridge: Sessions is required")
	case deps.Tokens == nil:
		return nil, errors.New("bridge: Tokens is required")
	case deps.Claims == nil:
		return nil, errors.New("bridge: Claims is required")
	case deps.Handshake == nil:
		return nil, errors.New("bridge: Handshake is required")
	case deps.Agents == nil:
		return nil, errors.New("bridge: Agents is required")
	}
	if deps.Logger == nil {
		deps.Logger = zap.NewNop()
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, err
	}
	wm, err := newWriterMetrics(deps.Registerer)
	if err != nil {
		return nil, fmt.Errorf("bridge: register metrics (one Server per registry): %w", err)
	}
	s := &Server{
		cfg:      cfg.withDefaults(),
		deps:     deps,
		log:      deps.Logger.Named("bridge"),
		metrics:  m,
		calls:    map[*call]struct{}{},
		wmetrics: wm,
		changed:  make(chan struct{}),
	}
	s.upgrader = websocket.Upgrader{
		ReadBufferSize:  4096,
		WriteBufferSize: 4096,
		WriteBufferPool: &sync.Pool{},
		// Twilio sends no Origin; the handshake signature is the check.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	if deps.Transfers == nil {
		s.log.Info("transfers not enabled: transfer requests will be refused")
	}
	if n := s.cfg.ModelPoolSize; n > 0 {
		s.models = newModelPool(n, s.cfg.ModelPoolMaxAge, func(ctx context.Context) (*realtime.Conn, error) {
			return s.dialModel(ctx, s.cfg.RealtimeModel)
		}, m, s.log)
		s.models.now = s.cfg.Now
		s.models.start()
	}
	return s, nil
}

// dialModel opens one model connection, bounded by DialTimeout.
func (s *Server) dialModel(ctx context.Context, model string) (*realtime.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	return realtime.Dial(ctx, realtime.Config{
		URL: s.cfg.RealtimeURL, APIKey: s.cfg.APIKey, Model: model,
		Dialer: s.cfg.RealtimeDialer, WriteTimeout: s.cfg.WriteTimeout,
		IdleTimeout: 3 * s.cfg.PingInterval,
	})
}

// Register adds the stream endpoint to mux.
func (s *Server) Register(mux *http.ServeMux) { mux.Handle("GET "+StreamPath, s) }

// ActiveCalls returns the number of media streams open on this server
// (for the MAX_CALLS check).
func (s *Server) ActiveCalls() int { return int(s.active.Load()) }

// ServeHTTP validates the handshake signature, upgrades to a websocket and
// runs the call until it ends.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.deps.Handshake.ValidateStream(r) {
		s.metrics.rejected.WithLabelValues(rejectSignature).Inc()
		s.log.Warn("media stream refused: bad X-Twilio-Signature on the websocket handshake",
			zap.String("remote", r.RemoteAddr))
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		http.Error(w, "websocket upgrade required", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	if s.closed {
		// Shutdown has returned: the process is exiting. (A draining
		// server still accepts streams: they are migrated like any call.)
		s.mu.Unlock()
		s.metrics.rejected.WithLabelValues(rejectDraining).Inc()
		s.log.Warn("media stream refused: server stopped", zap.String("remote", r.RemoteAddr))
		http.Error(w, "stopped", http.StatusServiceUnavailable)
		return
	}
	s.open++
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	defer s.streamClosed()

	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.log.Info("media stream upgrade failed", zap.String("remote", r.RemoteAddr), zap.Error(err))
		return // Upgrade has answered the request
	}
	c := newCall(s, ws, r.RemoteAddr)
	s.mu.Lock()
	s.calls[c] = struct{}{}
	if s.forced {
		c.stop()
	}
	if s.draining {
		c.requestMigrate() // it arrived during the load balancer's propagation delay
	}
	s.mu.Unlock()
	s.active.Add(1)
	s.metrics.active.Inc()
	defer func() {
		s.mu.Lock()
		delete(s.calls, c)
		s.mu.Unlock()
		s.active.Add(-1)
		s.metrics.active.Dec()
	}()
	c.run()
}

// Errors of operator requests (TransferCall, HangupCall).
var (
	// ErrCallNotHere: this server holds no stream of the call.
	ErrCallNotHere = errors.New("bridge: the call's stream is not on this pod")
	// ErrCallNotLive: the call is here but not live (setting up or ending).
	ErrCallNotLive = errors.New("bridge: the call is not live")
	// ErrCallBusy: the call loop did not take the request in time.
	ErrCallBusy = errors.New("bridge: the call did not take the request in time")
)

// TransferCall asks the call with callSID, when this server holds its
// stream, to transfer to the agent's destination called name once the
// agent's current speech has played (an operator's request). nil means the
// call loop took the request; otherwise ErrCallNotHere, ErrCallNotLive or
// ErrCallBusy, and nothing was done.
func (s *Server) TransferCall(callSID, name string) error {
	return s.deliver(callSID, func(c *call) { c.operatorTransfer(name) })
}

// HangupCall ends the call with callSID at once, when this server holds its
// stream (an operator's request). Errors as TransferCall's.
func (s *Server) HangupCall(callSID string) error {
	return s.deliver(callSID, (*call).operatorHangup)
}

// ProbeStream reports whether this server holds a really live media stream
// of the call with callSID (and streamSID, when not empty): true only once
// the call loop has handled a Twilio frame read after the probe arrived,
// within Config.ProbeWindow. A stream that closes, a call that ends or is
// not live yet, another stream, or a quiet window answer false. The error
// is ErrCallNotHere when no stream of the call is here, or ctx's when ctx
// ends first (the answer is then false).
func (s *Server) ProbeStream(ctx context.Context, callSID, streamSID string) (bool, error) {
	target := s.find(callSID)
	if target == nil {
		return false, ErrCallNotHere
	}
	reply := make(chan bool, 1) // the loop never blocks on the answer
	probe := func() {
		if target.phase != live || (streamSID != "" && target.streamSID != streamSID) {
			reply <- false
			return
		}
		target.probes.add(reply, len(target.twIn), s.cfg.ProbeWindow, time.Now())
	}
	select {
	case target.results <- probe:
	case <-target.done:
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
	select {
	case live := <-reply:
		return live, nil
	case <-target.done: // teardown answers every pending probe before done
		select {
		case live := <-reply:
			return live, nil
		default:
			return false, nil
		}
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// find returns the call with callSID, nil when none is here.
func (s *Server) find(callSID string) *call {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.calls {
		if p := c.sid.Load(); p != nil && *p == callSID {
			return c
		}
	}
	return nil
}

// deliver runs f on the loop of the call with callSID and returns once the
// loop has run it (or found the call not live, and not run it). The call
// loop is the only owner of a call's state, so operator requests go
// through it.
func (s *Server) deliver(callSID string, f func(*call)) error {
	target := s.find(callSID)
	if target == nil {
		return ErrCallNotHere
	}
	ran := make(chan error, 1) // the loop never blocks on the answer
	select {
	case target.results <- func() {
		if target.phase != live {
			ran <- ErrCallNotLive
			return
		}
		f(target)
		ran <- nil
	}:
	case <-target.done:
		return ErrCallNotLive
	case <-s.cfg.After(deliverTimeout):
		s.log.Warn("operator request not delivered: call loop busy", zap.String("call_sid", callSID))
		return ErrCallBusy
	}
	// The loop has taken the func and runs it next; wait for its verdict.
	select {
	case err := <-ran:
		return err
	case <-target.done:
		select { // it may have run just before the loop ended
		case err := <-ran:
			return err
		default:
			return ErrCallNotLive
		}
	}
}

// deliverTimeout bounds the hand-over of an operator request to a call loop.
const deliverTimeout = 2 * time.Second

// streamClosed counts a stream handler out and wakes Shutdown.
func (s *Server) streamClosed() {
	s.mu.Lock()
	s.open--
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// Shutdown drains the server: it closes the idle pooled model connections
// and asks every call, and every stream that arrives from now on, to move to
// another pod (Deps.Migrator, call_migrate.go), and returns as soon as no
// stream is left here, nil. When ctx ends first it ends the remaining calls
// with reason shutdown (their session records written), waits for them to
// close and returns ctx's error. Streams arriving after Shutdown returned
// are refused.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	n := len(s.calls)
	for c := range s.calls {
		c.requestMigrate()
	}
	s.mu.Unlock()
	s.log.Info("draining media streams: migrating the calls", zap.Int("calls", n))
	s.models.stop()
	defer s.models.wait() // the taken connections' watchers end with their calls

	var err error
	for forced := false; ; {
		s.mu.Lock()
		n, changed := s.open, s.changed
		if n == 0 {
			s.closed = true // from here on no wg.Add: Wait is safe
		}
		s.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-changed:
			continue
		case <-ctx.Done():
		}
		if forced {
			<-changed
			continue
		}
		forced = true
		err = fmt.Errorf("bridge: shutdown: %w", ctx.Err())
		s.mu.Lock()
		s.forced = true
		for c := range s.calls {
			c.stop()
		}
		n = len(s.calls)
		s.mu.Unlock()
		s.log.Warn("drain deadline reached: ending the remaining calls", zap.Int("calls", n))
	}
	s.wg.Wait()
	return err
}
