// Package realtime is a client for the OpenAI Realtime API (GA protocol) over
// a websocket, with typed events for what the bridge uses and a hand-written
// fast path for the audio events that make up almost all of the traffic.
//
// gorilla/websocket does the handshake; after it every frame of the socket
// goes through one wsframe.Conn (data, pings, pongs, closes), which answers
// the model's pings through the same write path and deadline as the data.
// One goroutine reads (Read) and one goroutine writes (Write, WriteJSON,
// WriteFrames, Ping); Close may be called from any.
// The beta protocol (OpenAI-Beta header, flat audio formats) is never spoken.
package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/vivi/bridge/bridge/internal/wsframe"
)

// Defaults of Config.
const (
	DefaultModel            = "gpt-realtime"
	DefaultReadLimit        = 16 << 20
	DefaultWriteTimeout     = 5 * time.Second
	DefaultIdleTimeout      = 60 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
)

// ErrBinaryMessage is returned by Read for a binary frame, which the
// protocol never uses; the connection stays usable.
var ErrBinaryMessage = errors.New("realtime: unexpected binary message")

// Config says where and how to connect.
type Config struct {
	// URL is the realtime endpoint without query, e.g.
	// wss://api.openai.com/v1/realtime or
	// wss://<resource>.openai.azure.com/openai/v1/realtime.
	URL string
	// APIKey is sent as "Authorization: Bearer" to OpenAI and as the
	// "api-key" header to Azure hosts (*.azure.com).
	APIKey string
	// Model is the ?model= query value (the deployment name on Azure).
	// Empty means DefaultModel.
	Model string
	// Dialer is used for the handshake; nil means a default dialer with
	// DefaultHandshakeTimeout.
	Dialer *websocket.Dialer
	// ReadLimit caps one incoming message; default DefaultReadLimit (16 MiB).
	ReadLimit int64
	// WriteTimeout is the deadline of every write; default DefaultWriteTimeout.
	WriteTimeout time.Duration
	// IdleTimeout closes a connection from which nothing (not even a pong)
	// was read for that long; default DefaultIdleTimeout. Keep it above the
	// ping interval of the writer.
	IdleTimeout time.Duration
}

// Conn is one realtime session's websocket.
type Conn struct {
	wc          *wsframe.Conn
	idleTimeout time.Duration

	// When the read deadline was last moved: at most once a second, not
	// per message (each move is a timer update). Owned by the reader.
	readMoved time.Time
}

// closeWait bounds how long Close waits for the model's answering close
// frame.
const closeWait = time.Second

// deadlineSlack is how stale a moved deadline may get: timeouts are then
// between the configured value and one second less.
const deadlineSlack = time.Second

// EndpointURL returns the websocket URL for model: base with ?model= set.
// http(s) bases are mapped to ws(s).
func EndpointURL(base, model string) (*url.URL, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("realtime: parse URL: %w", err)
	}
	switch u.Scheme {
	case "wss", "ws":
	case "https":
		u.Scheme = "wss"
	case "http":
		u.Scheme = "ws"
	default:
		return nil, fmt.Errorf("realtime: URL %q: scheme must be wss or ws", base)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("realtime: URL %q has no host", base)
	}
	if model == "" {
		model = DefaultModel
	}
	q := u.Query()
	q.Set("model", model)
	u.RawQuery = q.Encode()
	return u, nil
}

// AuthHeader returns the handshake headers for host: the "api-key" header
// for Azure OpenAI hosts, a bearer token otherwise. There is deliberately no
// OpenAI-Beta header: sending it selects the retired beta protocol.
func AuthHeader(host, apiKey string) http.Header {
	h := http.Header{}
	if apiKey == "" {
		return h
	}
	host = strings.ToLower(host)
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		host = host[:i]
	}
	if strings.HasSuffix(host, ".azure.com") {
		h.Set("api-key", apiKey)
	} else {
		h.Set("Authorization", "Bearer "+apiKey)
	}
	return h
}

// Dial opens a realtime websocket for cfg.Model.
func Dial(ctx context.Context, cfg Config) (*Conn, error) {
	u, err := EndpointURL(cfg.URL, cfg.Model)
	if err != nil {
		return nil, err
	}
	d := cfg.Dialer
	if d == nil {
		// gorilla writes only the handshake request: keep its write
		// buffer small. Its read buffer becomes the frame reader's.
		d = &websocket.Dialer{Proxy: http.ProxyFromEnvironment, HandshakeTimeout: DefaultHandshakeTimeout,
			ReadBufferSize: 4096, WriteBufferSize: 512}
	}
	d, detach := abortable(ctx, d)
	ws, resp, err := d.DialContext(ctx, u.String(), AuthHeader(u.Hostname(), cfg.APIKey))
	if err == nil && !detach() {
		_ = ws.Close()
		err = ctx.Err()
	}
	if err != nil {
		if resp != nil {
			why := refusal(resp)
			return nil, fmt.Errorf("realtime: dial %s%s: %w (HTTP %d%s)", u.Host, u.Path, err, resp.StatusCode, why)
		}
		return nil, fmt.Errorf("realtime: dial %s%s: %w", u.Host, u.Path, err)
	}
	return newConn(ws, cfg), nil
}

// abortable returns a copy of d whose connection is closed when outer (the
// dial's context) ends before detach is called: once the TCP connection is
// up, gorilla honours only the context's deadline, so a server that never
// answers the upgrade would hold a cancelled dial until then (a call's
// dial is cancelled when its session is not ready in time). detach reports
// false when outer ended first (the connection is closed then). The watch
// is on outer: gorilla cancels the context it hands NetDialContext when the
// dial returns.
func abortable(outer context.Context, d *websocket.Dialer) (*websocket.Dialer, func() bool) {
	cp := *d
	base := d.NetDialContext
	if base == nil {
		var nd net.Dialer
		base = nd.DialContext
	}
	var mu sync.Mutex
	var stops []func() bool
	cp.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := base(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		stops = append(stops, context.AfterFunc(outer, func() { _ = nc.Close() }))
		mu.Unlock()
		return nc, nil
	}
	return &cp, func() bool {
		mu.Lock()
		defer mu.Unlock()
		ok := true
		for _, stop := range stops {
			ok = stop() && ok
		}
		return ok
	}
}

// newConn takes ws over after the handshake. The model may send its first
// event (session.created) right behind the 101 response: gorilla's read
// buffer may hold it already, so the frame reader reads through it.
func newConn(ws *websocket.Conn, cfg Config) *Conn {
	c := &Conn{idleTimeout: cfg.IdleTimeout}
	if c.idleTimeout <= 0 {
		c.idleTimeout = DefaultIdleTimeout
	}
	writeTimeout := cfg.WriteTimeout
	if writeTimeout <= 0 {
		writeTimeout = DefaultWriteTimeout
	}
	limit := cfg.ReadLimit
	if limit <= 0 || limit > 1<<30 {
		limit = DefaultReadLimit
	}
	c.wc = wsframe.NewConn(ws.NetConn(), wsframe.HandshakeReader(ws), wsframe.Config{Client: true, ReadBuffer: 4096,
		ReadLimit: int(limit), WriteTimeout: writeTimeout, CloseWait: closeWait})
	c.wc.OnPong(func() {
		// Runs inside Read, on the reader goroutine: a pong is life.
		_ = c.wc.SetReadDeadline(time.Now().Add(c.idleTimeout))
	})
	return c
}

// refusal returns the error type and code of a refused handshake's JSON
// body (e.g. ": invalid_request_error invalid_api_key"). The message is left
// out: OpenAI quotes part of a wrong key in it.
func refusal(resp *http.Response) string {
	defer resp.Body.Close()
	var body struct {
		Error struct {
			Type string `json:"type"`
			Code string `json:"code"`
		} `json:"error"`
	}
	if json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&body) != nil {
		return ""
	}
	why := strings.TrimSpace(clip(body.Error.Type, 60) + " " + clip(body.Error.Code, 60))
	if why == "" {
		return ""
	}
	return ": " + why
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Read reads the next text message into buf (reused; grown as needed) and
// returns it. The returned slice is valid until the next Read with the same
// buf. A binary message returns ErrBinaryMessage and may be skipped.
func (c *Conn) Read(buf []byte) ([]byte, error) {
	if now := time.Now(); now.Sub(c.readMoved) >= deadlineSlack {
		c.readMoved = now
		if err := c.wc.SetReadDeadline(now.Add(c.idleTimeout)); err != nil {
			return buf[:0], fmt.Errorf("realtime: read: %w", err)
		}
	}
	typ, buf, err := c.wc.Next(buf)
	if err != nil {
		return buf, fmt.Errorf("realtime: read: %w", err)
	}
	if typ != websocket.TextMessage {
		return buf, ErrBinaryMessage
	}
	return buf, nil
}

// ReadAll appends everything r yields to buf, growing it as needed; unlike
// io.ReadAll it reuses buf, so a reader loop allocates nothing per message.
func ReadAll(buf []byte, r io.Reader) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// Write sends one text message (a JSON event) with the write deadline.
func (c *Conn) Write(msg []byte) error {
	return c.WriteFrames(c.AppendFrame(nil, msg))
}

// AppendFrame appends msg (a JSON event) to dst as one masked websocket
// text frame, ready for WriteFrames: the writer of a busy connection can
// gather several events into one system call, and nothing is allocated.
func (c *Conn) AppendFrame(dst, msg []byte) []byte {
	return c.wc.AppendText(dst, msg)
}

// WriteFrames sends frames made by AppendFrame, in one write with the write
// deadline. It is a write like Write: the connection's one writer calls it.
func (c *Conn) WriteFrames(frames []byte) error {
	if err := c.wc.WriteFrames(frames); err != nil {
		return fmt.Errorf("realtime: write: %w", err)
	}
	return nil
}

// WriteJSON encodes v and sends it; for the rare, typed client events.
func (c *Conn) WriteJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("realtime: encode %T: %w", v, err)
	}
	return c.Write(b)
}

// Ping sends a ping; the pong extends the read deadline.
func (c *Conn) Ping() error {
	if err := c.wc.Ping(nil); err != nil {
		return fmt.Errorf("realtime: ping: %w", err)
	}
	return nil
}

// Close sends a close frame (best effort, bounded by one second) and closes
// the connection, which makes a blocked Read return. The code is normal
// (1000), or the code of the protocol error Read met (1002, 1007, 1009):
// the model's side learns why. While Read is reading, Close waits up to a
// second for the model's answering close frame.
func (c *Conn) Close() error {
	return c.wc.Close(wsframe.CloseNormal, "")
}
