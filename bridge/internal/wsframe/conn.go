package wsframe

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// Config sets up a Conn.
type Config struct {
	// Client says which end we are: a client masks its frames and reads
	// unmasked ones, a server the opposite.
	Client bool
	// ReadBuffer is the size of the read buffer.
	ReadBuffer int
	// ReadLimit caps one incoming message (CloseTooBig beyond).
	ReadLimit int
	// WriteTimeout bounds every write: the deadline is moved at most once
	// a second (each move is a timer update), so a write has between
	// WriteTimeout-1s and WriteTimeout.
	WriteTimeout time.Duration
	// CloseWait bounds how long Close waits for the peer's close frame
	// after sending its own, while a reader is reading (RFC 6455 section
	// 7.1.1: the peer should see our close before the TCP connection ends).
	CloseWait time.Duration
}

// deadlineSlack is how stale a moved write deadline may get.
const deadlineSlack = time.Second

// Conn is a websocket after the handshake. One goroutine reads (Next); any
// number may write (WriteFrames, Ping, Close): writes are serialised, each
// one whole, so control frames go between data frames, never inside one.
// A ping read by Next is answered by the write path: at once when no write
// is running, else by the running write as soon as it is done, so the
// reader never waits for a slow peer and no two writes overlap.
type Conn struct {
	nc  net.Conn
	r   *Reader
	cfg Config

	wmu       sync.Mutex // the one write path
	werr      error      // under wmu: a failed write breaks the stream
	wmoved    time.Time  // under wmu: when the write deadline last moved
	sentClose bool       // under wmu
	wctl      []byte     // under wmu: control frames are built here

	pongDue atomic.Bool
	pmu     sync.Mutex // the latest ping's payload (RFC 6455 5.5.3: the latest may be answered alone)
	pong    []byte

	reading   atomic.Bool
	readDone  chan struct{} // closed when Next returned its final error
	readOnce  sync.Once
	readErr   atomic.Pointer[error]
	closeOnce sync.Once
}

// NewConn takes over nc, whose handshake is done. br is what the handshake
// was read through (it may hold the peer's first frames already), or nil.
func NewConn(nc net.Conn, br *bufio.Reader, cfg Config) *Conn {
	var r io.Reader = nc
	if br != nil {
		r = br
	}
	if cfg.ReadBuffer <= 0 {
		cfg.ReadBuffer = 4096
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 5 * time.Second
	}
	c := &Conn{nc: nc, cfg: cfg, readDone: make(chan struct{}),
		wctl: make([]byte, 0, 2+8+maxControlPayload), pong: make([]byte, 0, maxControlPayload)}
	c.r = NewReader(r, cfg.ReadBuffer, !cfg.Client, cfg.ReadLimit)
	c.r.Ping = c.queuePong
	return c
}

// HandshakeReader returns the buffered reader gorilla read ws's handshake
// through, for NewConn; nil when gorilla keeps none (then nothing is lost).
// gorilla has no API for it: on the client side its reader may hold the
// server's first frames, sent right behind the 101 response, and reading
// the bare connection would lose them. The type check keeps this safe if a
// gorilla release renames or retypes the field (then the handshake test of
// this package fails).
func HandshakeReader(ws *websocket.Conn) *bufio.Reader {
	return gorillaReader(ws)
}

// OnPong sets a function called (on the reader's goroutine) for each pong.
// Call it before the first Next.
func (c *Conn) OnPong(f func()) { c.r.Pong = f }

// NetConn returns the connection, for deadlines.
func (c *Conn) NetConn() net.Conn { return c.nc }

// SetReadDeadline sets the deadline of the reads.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// Next reads the next data message; see Reader.Next. An error is final.
func (c *Conn) Next(buf []byte) (typ int, msg []byte, err error) {
	c.reading.Store(true)
	typ, msg, err = c.r.Next(buf)
	c.reading.Store(false)
	if err != nil {
		final := err // a copy: taking err's address would put it on the heap on every call
		c.readErr.CompareAndSwap(nil, &final)
		c.readOnce.Do(func() { close(c.readDone) })
	}
	return typ, msg, err
}

// AppendText appends msg as one text frame, masked if we are the client,
// to dst, for WriteFrames.
func (c *Conn) AppendText(dst, msg []byte) []byte {
	if c.cfg.Client {
		return AppendMaskedText(dst, msg, rand.Uint32())
	}
	return AppendText(dst, msg)
}

// WriteFrames writes whole frames made by AppendText in one write, after a
// pong that is due.
func (c *Conn) WriteFrames(frames []byte) error {
	c.wmu.Lock()
	c.writePongLocked()
	err := c.writeLocked(frames)
	c.wmu.Unlock()
	c.flushPong()
	return err
}

// Ping sends a ping with payload (at most 125 bytes).
func (c *Conn) Ping(payload []byte) error {
	if len(payload) > maxControlPayload {
		return errors.New("websocket: ping payload over 125 bytes")
	}
	c.wmu.Lock()
	c.writePongLocked()
	err := c.writeLocked(c.appendControl(opPing, payload))
	c.wmu.Unlock()
	c.flushPong()
	return err
}

// queuePong records a ping to answer and answers it unless a write is
// running (that write answers it when it is done).
func (c *Conn) queuePong(p []byte) {
	c.pmu.Lock()
	c.pong = append(c.pong[:0], p...)
	c.pmu.Unlock()
	c.pongDue.Store(true)
	c.flushPong()
}

// flushPong writes a due pong unless another write holds the write path:
// that one re-checks after it lets go, so a pong is never left behind.
func (c *Conn) flushPong() {
	for c.pongDue.Load() && c.wmu.TryLock() {
		c.writePongLocked()
		c.wmu.Unlock()
	}
}

func (c *Conn) writePongLocked() {
	if !c.pongDue.Swap(false) || c.sentClose {
		return // after our close frame nothing else may be sent
	}
	c.pmu.Lock()
	f := c.appendControl(opPong, c.pong)
	c.pmu.Unlock()
	_ = c.writeLocked(f) // a failure is the next data write's error too
}

// appendControl builds a control frame in c.wctl; call with wmu held.
func (c *Conn) appendControl(op byte, p []byte) []byte {
	var m byte
	if c.cfg.Client {
		m = maskBit
	}
	b := appendOpHeader(c.wctl[:0], op, len(p), m)
	if c.cfg.Client {
		key := rand.Uint32()
		b = binary.BigEndian.AppendUint32(b, key)
		n := len(b)
		b = append(b, p...)
		mask(b[n:], key)
	} else {
		b = append(b, p...)
	}
	c.wctl = b
	return b
}

// writeLocked writes b with the write deadline; call with wmu held.
func (c *Conn) writeLocked(b []byte) error {
	if c.werr != nil {
		return c.werr
	}
	if c.sentClose {
		return websocket.ErrCloseSent
	}
	if now := time.Now(); now.Sub(c.wmoved) >= deadlineSlack {
		c.wmoved = now
		if err := c.nc.SetWriteDeadline(now.Add(c.cfg.WriteTimeout)); err != nil {
			c.werr = err
			return err
		}
	}
	if _, err := c.nc.Write(b); err != nil {
		c.werr = err // part of a frame may have gone: the stream is broken
		return err
	}
	return nil
}

// Close sends a close frame and closes the connection. The code is that of
// the reader's protocol error if there was one (the peer must learn why),
// else code (sent without a payload when it may not go on the wire, e.g.
// 1005); text is clipped to fit a control frame. While a reader is still
// reading, Close waits up to CloseWait for the peer's close frame before
// closing the TCP connection. Safe to call more than once and from any
// goroutine; only the first call sends.
func (c *Conn) Close(code int, text string) error {
	if p := c.readErr.Load(); p != nil {
		if pc := CloseCode(*p); pc != 0 {
			code, text = pc, "protocol error"
		}
	}
	c.wmu.Lock()
	sent := false
	if !c.sentClose && c.werr == nil {
		c.wmoved = time.Time{} // a short deadline of its own
		if err := c.nc.SetWriteDeadline(time.Now().Add(min(c.cfg.WriteTimeout, time.Second))); err == nil {
			_, err = c.nc.Write(c.appendControl(opClose, closePayload(code, text)))
			sent = err == nil
		}
		c.sentClose = true
	}
	c.wmu.Unlock()
	if sent && c.reading.Load() && c.cfg.CloseWait > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(c.cfg.CloseWait))
		t := time.NewTimer(c.cfg.CloseWait) // in case the reader stops reading
		select {
		case <-c.readDone:
		case <-t.C:
		}
		t.Stop()
	}
	var err error
	c.closeOnce.Do(func() { err = c.nc.Close() })
	return err
}

// closePayload is a close frame's payload: code and text, or nothing for a
// code that may not be sent.
func closePayload(code int, text string) []byte {
	if !ValidCloseCode(code) {
		return nil
	}
	if len(text) > maxControlPayload-2 {
		text = text[:maxControlPayload-2]
		for len(text) > 0 && !utf8.ValidString(text) {
			text = text[:len(text)-1] // do not cut a character in two
		}
	}
	return append(binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(text)), uint16(code)), text...)
}
