package wsframe

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// Close codes this package sends (RFC 6455 section 7.4.1).
const (
	CloseNormal      = 1000
	CloseProtocol    = 1002
	CloseInvalidData = 1007
	CloseTooBig      = 1009
	closeNoStatus    = 1005 // never on the wire
)

// ErrProtocol is matched (errors.Is) by every *Error: the peer broke RFC
// 6455 and the connection must be closed with the error's code.
var ErrProtocol = errors.New("websocket protocol error")

// Error is a frame or message from the peer that breaks RFC 6455 (or our
// size limit); Code is the close code to answer it with.
type Error struct {
	Code int    // CloseProtocol, CloseInvalidData or CloseTooBig
	Msg  string // what was wrong, without the peer's data
}

func (e *Error) Error() string {
	return fmt.Sprintf("websocket protocol error (%d): %s", e.Code, e.Msg)
}

// Is makes errors.Is(err, ErrProtocol) true for every *Error, and
// errors.Is(err, websocket.ErrReadLimit) true for an oversize message.
func (e *Error) Is(target error) bool {
	return target == ErrProtocol || (target == websocket.ErrReadLimit && e.Code == CloseTooBig)
}

func protoErr(code int, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// CloseCode returns the close code a reader's error must be answered with,
// or 0 when err is not a protocol error (the peer closed, or the transport
// failed).
func CloseCode(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// Reader reads the data messages of a peer, reusing its buffers. It checks
// every frame against RFC 6455 (reserved bits, masking, opcodes, control
// frame rules, continuation order, close payloads, UTF-8 of text) and the
// size limit; a violation is an *Error, and so is every later call: after
// an error or a close the connection is finished. A ping is handed to Ping
// (which should queue the pong), a pong to Pong, a close ends the reading
// with a *websocket.CloseError.
type Reader struct {
	br     *bufio.Reader
	masked bool // the peer is a client: its frames must be masked
	limit  int
	// Ping is called with the payload of each ping (valid during the call).
	Ping func(payload []byte)
	// Pong is called for each pong.
	Pong func()
	ctrl [maxControlPayload]byte
	err  error // sticky: the reading is over
}

// NewReader reads frames from r through a buffer of size bytes (r itself
// when it is a *bufio.Reader at least that large: the reader gorilla read
// the handshake through, which may hold the first frames already). masked
// says whether the peer is a client (frames masked) or a server (unmasked).
// Messages longer than limit bytes fail with CloseTooBig.
func NewReader(r io.Reader, size int, masked bool, limit int) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, size), masked: masked, limit: limit}
}

// frame is one frame header.
type frame struct {
	fin    bool
	op     byte
	n      int
	key    uint32
	masked bool
}

func (r *Reader) header() (frame, error) {
	var f frame
	b0, err := r.br.ReadByte()
	if err != nil {
		return f, err
	}
	b1, err := r.br.ReadByte()
	if err != nil {
		return f, noEOF(err)
	}
	f.fin, f.op, f.masked = b0&finBit != 0, b0&0x0f, b1&maskBit != 0
	if b0&rsvBits != 0 { // no extension was negotiated
		return f, protoErr(CloseProtocol, "reserved bits set")
	}
	if f.masked != r.masked {
		return f, protoErr(CloseProtocol, "bad mask bit (masked %v)", f.masked)
	}
	switch f.op {
	case opClose, opPing, opPong:
		if !f.fin {
			return f, protoErr(CloseProtocol, "fragmented control frame")
		}
	case opContinuation, opText, opBinary:
	default:
		return f, protoErr(CloseProtocol, "unknown opcode %d", f.op)
	}
	n := uint64(b1 & 0x7f)
	switch n {
	case 126:
		n, err = r.uint(2)
	case 127:
		n, err = r.uint(8)
	}
	if err != nil {
		return f, err
	}
	switch {
	case n > maxControlPayload && f.op >= opClose:
		return f, protoErr(CloseProtocol, "control frame of %d bytes", n)
	case n>>63 != 0:
		return f, protoErr(CloseProtocol, "frame length has its top bit set")
	case n > uint64(r.limit):
		return f, protoErr(CloseTooBig, "frame of %d bytes, limit %d", n, r.limit)
	}
	if f.masked {
		k, err := r.uint(4)
		if err != nil {
			return f, err
		}
		f.key = uint32(k)
	}
	f.n = int(n)
	return f, nil
}

func (r *Reader) uint(size int) (uint64, error) {
	var v uint64
	for range size {
		b, err := r.br.ReadByte()
		if err != nil {
			return 0, noEOF(err)
		}
		v = v<<8 | uint64(b)
	}
	return v, nil
}

// payload reads n bytes of payload appended to dst and unmasks them.
func (r *Reader) payload(dst []byte, f frame) ([]byte, error) {
	start := len(dst)
	if cap(dst)-start < f.n {
		dst = append(dst[:cap(dst)], make([]byte, start+f.n-cap(dst))...)
	}
	dst = dst[:start+f.n]
	if _, err := io.ReadFull(r.br, dst[start:]); err != nil {
		return dst[:start], noEOF(err)
	}
	if f.masked {
		mask(dst[start:], f.key)
	}
	return dst, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Next reads the next data message appended to buf[:0] and returns its type
// (websocket.TextMessage or BinaryMessage) and content; buf is reused when
// it is large enough. The returned slice keeps buf's memory: pass it back
// as buf next time. Control frames between the fragments of a message are
// handled on the way.
func (r *Reader) Next(buf []byte) (typ int, msg []byte, err error) {
	msg = buf[:0]
	if r.err != nil {
		return 0, msg, r.err
	}
	typ, msg, err = r.next(msg)
	if err != nil {
		r.err = err
	}
	return typ, msg, err
}

func (r *Reader) next(msg []byte) (typ int, _ []byte, err error) {
	started := false
	for {
		f, err := r.header()
		if err != nil {
			return 0, msg, err
		}
		switch f.op {
		case opPing, opPong, opClose:
			ctrl, err := r.payload(r.ctrl[:0], f)
			if err != nil {
				return 0, msg, err
			}
			switch f.op {
			case opPing:
				if r.Ping != nil {
					r.Ping(ctrl)
				}
			case opPong:
				if r.Pong != nil {
					r.Pong()
				}
			case opClose:
				return 0, msg, closeError(ctrl)
			}
			continue
		case opContinuation:
			if !started {
				return 0, msg, protoErr(CloseProtocol, "continuation frame without a message")
			}
		default:
			if started {
				return 0, msg, protoErr(CloseProtocol, "data frame inside a fragmented message")
			}
			started = true
			typ = websocket.TextMessage
			if f.op == opBinary {
				typ = websocket.BinaryMessage
			}
		}
		if len(msg)+f.n > r.limit {
			return 0, msg, protoErr(CloseTooBig, "message over %d bytes", r.limit)
		}
		if msg, err = r.payload(msg, f); err != nil {
			return 0, msg, err
		}
		if !f.fin {
			continue
		}
		// Checked once the message is whole (a character may span
		// fragments); ASCII, all of the bridge's traffic, is checked eight
		// bytes at a time.
		if typ == websocket.TextMessage && !utf8.Valid(msg) {
			return 0, msg, protoErr(CloseInvalidData, "text message is not UTF-8")
		}
		return typ, msg, nil
	}
}

// closeError decodes a close frame's payload: a *websocket.CloseError
// (code 1005 for an empty payload), or an *Error when the payload breaks
// RFC 6455 section 5.5.1 or 7.4.
func closeError(p []byte) error {
	switch {
	case len(p) == 0:
		return &websocket.CloseError{Code: closeNoStatus}
	case len(p) == 1:
		return protoErr(CloseProtocol, "close frame with a 1-byte payload")
	}
	code := int(binary.BigEndian.Uint16(p))
	if !ValidCloseCode(code) {
		return protoErr(CloseProtocol, "close code %d is not allowed on the wire", code)
	}
	if !utf8.Valid(p[2:]) {
		return protoErr(CloseInvalidData, "close reason is not UTF-8")
	}
	return &websocket.CloseError{Code: code, Text: string(p[2:])}
}

// ValidCloseCode reports whether code may be sent in a close frame: the
// codes RFC 6455 and the IANA registry define for endpoints (1000-1003,
// 1007-1014), and 3000-4999 for libraries and applications. 1005, 1006 and
// 1015 only describe what happened locally.
func ValidCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}
