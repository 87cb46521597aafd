package twiliotest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"
)

// Audio framing of the caller's side, as Twilio sends it (twilio.md §1.3).
const (
	// FrameBytes is the size of one caller media frame: 20 ms of 8 kHz μ-law.
	FrameBytes = 160
	// Silence is the μ-law byte for silence, sent when the caller is quiet.
	Silence byte = 0xFF
	// DefaultFrameInterval is how often a media frame is sent.
	DefaultFrameInterval = 20 * time.Millisecond
)

const (
	writeQueueSize   = 1024 // about 20 s of frames before a server that does not read is given up on
	writeTimeout     = 10 * time.Second
	handshakeTimeout = 10 * time.Second
	closeWait        = 2 * time.Second // after stop: how long to wait for the server's close reply
	readLimit        = 16 << 20        // outbound audio "can be of any size"
)

// ErrCallEnded is returned by the Wait methods when the stream ended before
// the condition was met.
var ErrCallEnded = errors.New("twiliotest: call ended")

// errWriteQueueFull ends a call whose server stopped reading.
var errWriteQueueFull = errors.New("twiliotest: write queue full: server is not reading")

// CallConfig configures a simulated Twilio media stream.
type CallConfig struct {
	// URL is the websocket URL to dial, e.g. ws://127.0.0.1:8080/twilio/stream.
	URL string
	// SignURL is the wss:// URL Twilio would sign, e.g.
	// wss://bridge.example.com/twilio/stream. Empty sends no signature header.
	SignURL string
	// AuthToken signs the handshake (X-Twilio-Signature over SignURL, no params).
	AuthToken string
	// AccountSID and CallSID default to random AC... and CA... SIDs.
	AccountSID, CallSID string
	// StreamSID defaults to "MZ" and 32 random hex digits.
	StreamSID string
	// Parameters are sent as start.customParameters (the <Parameter>s).
	Parameters map[string]string
	// FrameInterval is how often a 160-byte media frame is sent (default
	// 20 ms). Frame n (media.chunk "n", from 1) is due n×FrameInterval after
	// the start and carries that offset in ms as media.timestamp; late ticks
	// catch up so the stream keeps real time.
	FrameInterval time.Duration
	// DiscardAudio keeps counts, marks and clears but not the audio itself
	// (Message.Payload, ReceivedAudio, PlayedAudio and SentAudio stay
	// empty), so that a load test with many long calls does not hold it all.
	DiscardAudio bool
	// Header holds extra handshake headers.
	Header http.Header
	// Logger defaults to zap.NewNop().
	Logger *zap.Logger
}

// HandshakeError is returned by Dial when the server refused the websocket
// upgrade with an HTTP response.
type HandshakeError struct {
	// Status is the HTTP status code of the refusal.
	Status int
	// Body is the start of the response body (at most 1 KiB).
	Body string
}

// Error implements error.
func (e *HandshakeError) Error() string {
	return fmt.Sprintf("twiliotest: websocket handshake refused: HTTP %d", e.Status)
}

// Unwrap returns websocket.ErrBadHandshake.
func (e *HandshakeError) Unwrap() error { return websocket.ErrBadHandshake }

// outKind is the kind of a message queued for the writer.
type outKind int

const (
	kindConnected outKind = iota
	kindStart
	kindMedia
	kindDTMF
	kindMarkEcho
	kindStop
	kindRaw
	kindBinary
)

// outMsg is one message queued for the writer goroutine, which renders it
// and numbers it, so sequence numbers follow the order on the wire.
type outMsg struct {
	kind  outKind
	audio []byte // media: the 160 bytes of caller audio
	chunk int    // media
	ts    int64  // media: ms since the start of the stream
	name  string // dtmf digit or mark name
	raw   []byte // raw text or binary frame
}

// Call is one simulated Twilio media stream, from Dial until the socket ends.
//
// Goroutines: one reader (owns the socket's read side, applies what the
// server sends to the player), one writer (the only one writing data frames,
// fed by a bounded queue) and one media loop (sends a frame every
// FrameInterval and echoes marks when their audio has played). All three
// stop when the socket ends; Done is closed after they have returned.
type Call struct {
	cfg     CallConfig
	log     *zap.Logger
	conn    *websocket.Conn
	out     chan outMsg   // to the writer; never closed
	kick    chan struct{} // wakes the media loop when a mark arrives
	quit    chan struct{} // closed by finish: everything stops
	done    chan struct{} // closed when every goroutine has returned
	started time.Time     // when the stream started (timestamps count from here)
	wg      sync.WaitGroup

	endOnce  sync.Once
	stopping atomic.Bool // Stop was called: no more frames after stop
	stopSent atomic.Bool // the writer wrote `stop`

	errMu    sync.Mutex
	err      error
	byServer bool

	sentMu     sync.Mutex // owned by the writer
	sentFrames int
	sentAudio  []byte

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every change, for waiters
	player    player
	messages  []Message
	protoErrs []string
	echoed    []string
	echoedAt  []time.Time // when each of echoed was queued (MarkEchoes)
	speech    []byte      // caller audio not yet framed
	ended     bool        // the socket ended: the player is frozen

	chunk int // owned by the media loop
}

// Dial opens a media stream the way Twilio does on <Connect><Stream>: a
// websocket handshake signed with X-Twilio-Signature, then `connected`,
// `start` and a media frame every FrameInterval until the call ends. ctx
// bounds the handshake only (like net.Dialer.DialContext); the call lives
// until Stop, Close or the server closes the socket. A refused handshake
// returns a *HandshakeError.
func Dial(ctx context.Context, cfg CallConfig) (*Call, error) {
	cfg = withDefaults(cfg)
	header := cfg.Header.Clone()
	if header == nil {
		header = http.Header{}
	}
	if cfg.SignURL != "" {
		header.Set(SignatureHeader, SignForm(cfg.AuthToken, cfg.SignURL, nil))
	}
	dialer := websocket.Dialer{HandshakeTimeout: handshakeTimeout}
	conn, resp, err := dialer.DialContext(ctx, cfg.URL, header)
	if err != nil {
		if resp != nil && errors.Is(err, websocket.ErrBadHandshake) {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			_ = resp.Body.Close()
			return nil, &HandshakeError{Status: resp.StatusCode, Body: string(bytes.TrimSpace(body))}
		}
		return nil, fmt.Errorf("twiliotest: dial %s: %w", cfg.URL, err)
	}
	conn.SetReadLimit(readLimit)
	c := &Call{
		cfg:     cfg,
		log:     cfg.Logger.With(zap.String("call_sid", cfg.CallSID), zap.String("stream_sid", cfg.StreamSID)),
		conn:    conn,
		out:     make(chan outMsg, writeQueueSize),
		kick:    make(chan struct{}, 1),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
		changed: make(chan struct{}),
		started: time.Now(),
	}
	c.player.discard = cfg.DiscardAudio
	c.out <- outMsg{kind: kindConnected} // the queue is empty: these cannot block
	c.out <- outMsg{kind: kindStart}
	c.log.Debug("twiliotest: stream started")
	c.wg.Add(2)
	go c.writeLoop()
	go c.mediaLoop()
	go c.readLoop()
	return c, nil
}

func withDefaults(cfg CallConfig) CallConfig {
	if cfg.AccountSID == "" {
		cfg.AccountSID = NewAccountSID()
	}
	if cfg.CallSID == "" {
		cfg.CallSID = NewCallSID()
	}
	if cfg.StreamSID == "" {
		cfg.StreamSID = NewStreamSID()
	}
	if cfg.FrameInterval <= 0 {
		cfg.FrameInterval = DefaultFrameInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return cfg
}

// AccountSID returns the account SID the stream reports.
func (c *Call) AccountSID() string { return c.cfg.AccountSID }

// CallSID returns the call SID the stream reports.
func (c *Call) CallSID() string { return c.cfg.CallSID }

// StreamSID returns the stream SID the stream reports.
func (c *Call) StreamSID() string { return c.cfg.StreamSID }

// Say queues caller audio (μ-law) to be sent in 160-byte media frames after
// any audio queued before; the last frame is padded with silence.
func (c *Call) Say(audio []byte) {
	if len(audio) == 0 {
		return
	}
	padded := len(audio) + (FrameBytes-len(audio)%FrameBytes)%FrameBytes
	c.mu.Lock()
	defer c.mu.Unlock()
	c.speech = append(c.speech, audio...)
	for range padded - len(audio) {
		c.speech = append(c.speech, Silence)
	}
	c.notifyLocked()
}

// Digit sends a dtmf event for the digit d, as a caller pressing a key.
func (c *Call) Digit(d string) { c.enqueue(outMsg{kind: kindDTMF, name: d}) }

// SendRaw sends b as a text frame, as is (for malformed-message tests).
func (c *Call) SendRaw(b []byte) { c.enqueue(outMsg{kind: kindRaw, raw: bytes.Clone(b)}) }

// SendBinary sends b as a binary frame (Twilio never does).
func (c *Call) SendBinary(b []byte) { c.enqueue(outMsg{kind: kindBinary, raw: bytes.Clone(b)}) }

// Stop ends the call the way Twilio does when the caller hangs up or the call
// is redirected: no more media, a `stop` message, then a normal close. It
// does not wait; use Done. Calling it again, or after the end, does nothing.
func (c *Call) Stop() {
	if !c.stopping.CompareAndSwap(false, true) {
		return
	}
	c.enqueue(outMsg{kind: kindStop})
}

// Close drops the connection without `stop` or a close frame, like a
// network failure. It does not wait; use Done.
func (c *Call) Close() { c.finish(nil, false) }

// Done is closed when the socket has ended (either side) and every goroutine
// of the call has returned.
func (c *Call) Done() <-chan struct{} { return c.done }

// Err returns why the call ended: nil while it runs, after Stop or Close,
// and when the server closed the socket normally (close code 1000, 1001 or
// none); otherwise the read or write error.
func (c *Call) Err() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

// ClosedByServer reports whether the server (not Stop or Close) ended the
// socket.
func (c *Call) ClosedByServer() bool {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.byServer
}

// enqueue hands m to the writer without blocking. A full queue means the
// server stopped reading: the call ends with an error. Nothing but the stop
// itself is queued once Stop was called.
func (c *Call) enqueue(m outMsg) bool {
	if m.kind != kindStop && c.stopping.Load() {
		return false
	}
	select {
	case <-c.quit:
		return false
	default:
	}
	select {
	case c.out <- m:
		return true
	default:
		c.finish(errWriteQueueFull, false)
		return false
	}
}

// finish ends the call once: records why, stops every goroutine and closes
// the socket so that a blocked read returns. It never takes c.mu, so it may
// be called with c.mu held.
func (c *Call) finish(err error, byServer bool) {
	c.endOnce.Do(func() {
		c.errMu.Lock()
		c.err, c.byServer = err, byServer
		c.errMu.Unlock()
		close(c.quit)
		_ = c.conn.Close()
		if err != nil {
			c.log.Debug("twiliotest: stream ended", zap.Error(err))
		} else {
			c.log.Debug("twiliotest: stream ended", zap.Bool("by_server", byServer))
		}
	})
}

// notifyLocked wakes every waiter. c.mu must be held.
func (c *Call) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}
