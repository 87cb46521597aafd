package realtimetest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"
)

const (
	readLimit    = 16 << 20 // bytes per client message
	queueSize    = 1024     // server events waiting for the writer
	writeTimeout = 10 * time.Second
	closeWait    = 2 * time.Second // how long a close frame waits for the client's reply
)

// ClientEvent is one event received from the client.
type ClientEvent struct {
	Type string          // the event's "type" ("" when missing or not JSON)
	Raw  json.RawMessage // the frame as received
	At   time.Time       // when it was read
}

// outMsg is one frame for the writer: a text message, or a close frame.
type outMsg struct {
	data        []byte
	close       bool
	closeCode   int
	closeReason string
}

// Conn is one model session on the fake server. Its reader goroutine handles
// client events, its writer goroutine is the only one writing the socket, and
// a paced response runs in a goroutine of its own. Methods are safe for
// concurrent use.
type Conn struct {
	srv    *Server
	opts   Options
	log    *zap.Logger
	ws     *websocket.Conn
	model  string
	header http.Header
	beta   bool

	out        chan outMsg   // bounded queue to the writer; never closed
	quit       chan struct{} // closed once when the connection starts to end
	quitOnce   sync.Once
	readerDone chan struct{}
	done       chan struct{} // closed when every goroutine of the conn returned

	lifeMu sync.Mutex     // guards ended and wg.Add; never held while blocking
	ended  bool           // no new goroutine may start
	wg     sync.WaitGroup // writer and response goroutines

	// mu guards the session state below. Server events are queued while it
	// is held, so the order on the wire is the order of the state changes.
	mu           sync.Mutex
	events       []ClientEvent
	byType       map[string][]ClientEvent
	counts       map[string]int
	evWake       chan struct{} // closed on the next event (or the end)
	input        []byte        // every appended audio byte (unless Options.DiscardAudio)
	inputLen     int           // bytes appended so far: the session's audio clock
	pendingFrom  int           // inputLen where the uncommitted input buffer starts
	session      map[string]any
	items        map[string]*item
	lastItemID   string // previous_item_id of the next item
	convID       string
	active       *response
	queue        []queued // scripted responses waiting for the active one
	greeted      bool     // the first response.create has been answered
	lastUserText string   // last transcript, user or system text, or function output
	seeded       bool     // the client created conversation items (a resumed call)
	userItem     string   // user item of the current or last speech turn
	vad          vadState
	truncations  []Truncation
}

// item is what the fake remembers of a conversation item.
type item struct {
	raw       map[string]any
	assistant bool // an assistant message: truncatable
	audioLen  int  // audio bytes sent (after truncation: kept) for it
}

// Truncation is one accepted conversation.item.truncate.
type Truncation struct {
	ItemID       string
	ContentIndex int
	AudioEndMs   int
}

func newConn(s *Server, ws *websocket.Conn, model string, h http.Header, beta bool) *Conn {
	c := &Conn{
		srv: s, opts: s.opts, ws: ws, model: model, header: h, beta: beta,
		log:        s.log.With(zap.String("model", model)),
		out:        make(chan outMsg, queueSize),
		quit:       make(chan struct{}),
		readerDone: make(chan struct{}),
		done:       make(chan struct{}),
		byType:     map[string][]ClientEvent{},
		counts:     map[string]int{},
		items:      map[string]*item{},
	}
	sessModel := model
	if s.opts.SessionModel != "" {
		sessModel = s.opts.SessionModel
	}
	c.session = defaultSession(s.newID("sess"), sessModel, time.Now(), s.opts.ExpiresIn)
	c.convID = s.newID("conv")
	ws.SetReadLimit(readLimit)
	return c
}

// run serves the connection until it ends; it runs on the handler goroutine.
func (c *Conn) run() {
	c.wg.Add(1)
	go c.writeLoop()

	c.mu.Lock()
	if c.beta {
		msg := "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API."
		c.errorLocked("invalid_request_error", "beta_api_shape_disabled", msg, nil, nil)
		c.closeLocked(4000, msg)
	} else {
		c.emitLocked("session.created", map[string]any{"session": c.session})
		if c.opts.FatalError != "" {
			c.errorLocked("invalid_request_error", c.opts.FatalError, "The session cannot continue ("+c.opts.FatalError+").", nil, nil)
		}
	}
	c.mu.Unlock()

	c.readLoop()
	close(c.readerDone)
	c.shutdown()
	_ = c.ws.Close()
	c.wg.Wait()
	c.mu.Lock()
	c.wakeLocked()
	c.mu.Unlock()
	close(c.done)
}

func (c *Conn) readLoop() {
	for {
		_, data, err := c.ws.ReadMessage() // a fresh slice each time
		if err != nil {
			c.log.Debug("read ended", zap.Error(err))
			return
		}
		c.handle(data, time.Now())
	}
}

func (c *Conn) writeLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.quit:
			return
		case m := <-c.out:
			_ = c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
			if m.close {
				err := c.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(m.closeCode, m.closeReason))
				c.shutdown()
				if err == nil { // let the client answer the close frame before the socket goes
					t := time.NewTimer(closeWait)
					select {
					case <-c.readerDone:
					case <-t.C:
					}
					t.Stop()
				}
				_ = c.ws.Close()
				return
			}
			if err := c.ws.WriteMessage(websocket.TextMessage, m.data); err != nil {
				c.log.Debug("write failed", zap.Error(err))
				c.shutdown()
				_ = c.ws.Close()
				return
			}
		}
	}
}

// shutdown marks the connection as ending: queued and future frames are
// dropped and paced responses stop.
func (c *Conn) shutdown() {
	c.lifeMu.Lock()
	c.ended = true
	c.lifeMu.Unlock()
	c.quitOnce.Do(func() { close(c.quit) })
}

// abort ends the connection at once (Server.Close).
func (c *Conn) abort() {
	c.shutdown()
	_ = c.ws.Close()
}

// goTrack runs f in a goroutine that the connection waits for, unless the
// connection is already ending.
func (c *Conn) goTrack(f func()) bool {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.ended {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
	return true
}

// enqueue hands a frame to the writer, waiting while the queue is full; the
// frame is dropped when the connection is ending.
func (c *Conn) enqueue(m outMsg) {
	select {
	case <-c.quit:
		return
	default:
	}
	select {
	case c.out <- m:
	case <-c.quit:
	}
}

// emitLocked queues a server event of type typ with the given fields plus
// event_id and type. c.mu must be held.
func (c *Conn) emitLocked(typ string, fields map[string]any) {
	ev := make(map[string]any, len(fields)+2)
	for k, v := range fields {
		ev[k] = v
	}
	ev["event_id"] = c.srv.newID("event")
	ev["type"] = typ
	b, err := json.Marshal(ev)
	if err != nil {
		c.log.Error("marshal server event", zap.String("type", typ), zap.Error(err))
		return
	}
	c.enqueue(outMsg{data: b})
}

// errorLocked queues an `error` event. clientEventID is echoed as
// error.event_id (null when nil).
func (c *Conn) errorLocked(typ, code, message string, param, clientEventID *string) {
	var codeVal any
	if code != "" {
		codeVal = code
	}
	c.emitLocked("error", map[string]any{"error": map[string]any{
		"type": typ, "code": codeVal, "message": message, "param": param, "event_id": clientEventID,
	}})
}

func (c *Conn) closeLocked(code int, reason string) {
	c.enqueue(outMsg{close: true, closeCode: code, closeReason: reason})
}

// Model returns the model named in the handshake's query.
func (c *Conn) Model() string { return c.model }

// Header returns the handshake's request headers.
func (c *Conn) Header() http.Header { return c.header }

// Done is closed when the connection has ended and its goroutines returned.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Events returns every client event received so far, in order.
func (c *Conn) Events() []ClientEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]ClientEvent(nil), c.events...)
}

// WaitEvent waits until the n-th (1-based) event of type typ has arrived and
// returns it. It fails when ctx ends or the connection ends first. With
// Options.DiscardAudio an append is returned with only its Type set.
func (c *Conn) WaitEvent(ctx context.Context, typ string, n int) (ClientEvent, error) {
	for {
		c.mu.Lock()
		if c.counts[typ] >= n {
			var ev ClientEvent
			if list := c.byType[typ]; len(list) >= n {
				ev = list[n-1]
			} else {
				ev = ClientEvent{Type: typ}
			}
			c.mu.Unlock()
			return ev, nil
		}
		got := c.counts[typ]
		select {
		case <-c.readerDone:
			c.mu.Unlock()
			return ClientEvent{}, fmt.Errorf("realtimetest: wait %s #%d: connection ended after %d", typ, n, got)
		default:
		}
		if c.evWake == nil {
			c.evWake = make(chan struct{})
		}
		wake := c.evWake
		c.mu.Unlock()
		select {
		case <-wake:
		case <-c.readerDone:
		case <-ctx.Done():
			return ClientEvent{}, fmt.Errorf("realtimetest: wait %s #%d (have %d): %w", typ, n, got, ctx.Err())
		}
	}
}

func (c *Conn) wakeLocked() {
	if c.evWake != nil {
		close(c.evWake)
		c.evWake = nil
	}
}

// InputAudio returns the concatenation of every base64-decoded
// input_audio_buffer.append payload, in order.
func (c *Conn) InputAudio() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.input...)
}

// Session returns the effective session configuration after every update.
func (c *Conn) Session() json.RawMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, _ := json.Marshal(c.session)
	return b
}

// Truncations returns every accepted conversation.item.truncate, in order.
func (c *Conn) Truncations() []Truncation {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Truncation(nil), c.truncations...)
}

// SendError sends an `error` event with error.type typ, code (null when
// empty) and message.
func (c *Conn) SendError(typ, code, message string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errorLocked(typ, code, message, nil, nil)
}

// SendRaw sends b as one text frame, as is (for malformed-event tests).
func (c *Conn) SendRaw(b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.enqueue(outMsg{data: append([]byte(nil), b...)})
}

// CloseWith sends a close frame with code and reason after the frames
// already queued, waits briefly for the client's answer, then closes.
func (c *Conn) CloseWith(code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(code, reason)
}

// Expire ends the session like the 60-minute limit of the real service: an
// `error` with code session_expired, then close 1001 with the same reason.
func (c *Conn) Expire() {
	const msg = "Your session hit the maximum duration of 60 minutes."
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errorLocked("invalid_request_error", "session_expired", msg, nil, nil)
	c.closeLocked(websocket.CloseGoingAway, msg)
}
