// Package wsframe reads and writes RFC 6455 data frames on a connection that
// gorilla/websocket has upgraded or dialled, for the audio hot path.
//
// gorilla allocates for every message it reads (and, with a write buffer
// pool, for every message it writes) and writes each message with a system
// call of its own. The bridge keeps gorilla for the handshakes, control
// frames (pings, pongs, closes) and closing, and does the data frames here:
// a reader that reuses its buffers, and append functions that let a writer
// put several messages into one write. A connection's data frames must all
// go one way or the other (gorilla keeps no state about them). Writes stay
// whole: net.Conn (and tls.Conn) write one buffer under a lock, so a control
// frame gorilla writes meanwhile never lands inside one of these.
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

// Opcodes (RFC 6455 section 5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa

	finBit  = 0x80
	rsvBits = 0x70
	maskBit = 0x80

	maxControlPayload = 125
)

// ErrProtocol is wrapped by the errors of frames that break RFC 6455.
var ErrProtocol = errors.New("websocket protocol error")

// AppendText appends one unfragmented text frame carrying p, unmasked (a
// server's frame), to dst.
func AppendText(dst, p []byte) []byte {
	return append(appendHeader(dst, len(p), 0), p...)
}

// AppendMaskedText appends one unfragmented text frame carrying p masked
// with key (a client's frame) to dst.
func AppendMaskedText(dst, p []byte, key uint32) []byte {
	dst = appendHeader(dst, len(p), maskBit)
	dst = binary.BigEndian.AppendUint32(dst, key)
	n := len(dst)
	dst = append(dst, p...)
	mask(dst[n:], key)
	return dst
}

func appendHeader(dst []byte, n int, m byte) []byte {
	dst = append(dst, finBit|opText)
	switch {
	case n <= 125:
		return append(dst, m|byte(n))
	case n < 1<<16:
		return append(dst, m|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, m|127)
		return binary.BigEndian.AppendUint64(dst, uint64(n))
	}
}

// mask XORs b with the 4-byte key (big-endian on the wire), eight bytes at
// a time.
func mask(b []byte, key uint32) {
	var k [4]byte
	binary.BigEndian.PutUint32(k[:], key)
	k8 := uint64(binary.LittleEndian.Uint32(k[:]))
	k8 |= k8 << 32
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], binary.LittleEndian.Uint64(b[i:])^k8)
	}
	for ; i < len(b); i++ {
		b[i] ^= k[i&3]
	}
}

// Reader reads the data messages of a peer, reusing its buffers. It checks
// frames as gorilla does (reserved bits, masking, control frame rules,
// continuation order, the size limit) and handles control frames: a ping
// is handed to Ping (which should answer with a pong), a pong is skipped, a
// close ends the reading with a *websocket.CloseError.
type Reader struct {
	br     *bufio.Reader
	masked bool // the peer is a client: its frames must be masked
	limit  int
	// Ping is called with the payload of each ping (valid during the call).
	Ping func(payload []byte)
	ctrl [maxControlPayload]byte
}

// NewReader reads frames from r through a buffer of size bytes. masked says
// whether the peer is a client (frames masked) or a server (unmasked).
// Messages longer than limit bytes fail with websocket.ErrReadLimit.
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
		return f, err
	}
	f.fin, f.op, f.masked = b0&finBit != 0, b0&0x0f, b1&maskBit != 0
	if b0&rsvBits != 0 {
		return f, fmt.Errorf("%w: reserved bits set", ErrProtocol)
	}
	if f.masked != r.masked {
		return f, fmt.Errorf("%w: bad mask bit", ErrProtocol)
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
	if f.masked {
		k, err := r.uint(4)
		if err != nil {
			return f, err
		}
		f.key = uint32(k)
	}
	switch f.op {
	case opClose, opPing, opPong:
		if !f.fin || n > maxControlPayload {
			return f, fmt.Errorf("%w: bad control frame", ErrProtocol)
		}
	case opContinuation, opText, opBinary:
	default:
		return f, fmt.Errorf("%w: unknown opcode %d", ErrProtocol, f.op)
	}
	if n > uint64(r.limit) {
		return f, websocket.ErrReadLimit
	}
	f.n = int(n)
	return f, nil
}

func (r *Reader) uint(size int) (uint64, error) {
	var v uint64
	for range size {
		b, err := r.br.ReadByte()
		if err != nil {
			return 0, err
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
// as buf next time.
func (r *Reader) Next(buf []byte) (typ int, msg []byte, err error) {
	msg = buf[:0]
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
			case opClose:
				return 0, msg, closeError(ctrl)
			}
			continue
		case opContinuation:
			if !started {
				return 0, msg, fmt.Errorf("%w: continuation frame without a message", ErrProtocol)
			}
		default:
			if started {
				return 0, msg, fmt.Errorf("%w: data frame inside a fragmented message", ErrProtocol)
			}
			started = true
			typ = websocket.TextMessage
			if f.op == opBinary {
				typ = websocket.BinaryMessage
			}
		}
		if len(msg)+f.n > r.limit {
			return 0, msg, websocket.ErrReadLimit
		}
		if msg, err = r.payload(msg, f); err != nil {
			return 0, msg, err
		}
		if f.fin {
			return typ, msg, nil
		}
	}
}

// closeError decodes a close frame's payload as gorilla does.
func closeError(p []byte) error {
	ce := &websocket.CloseError{Code: websocket.CloseNoStatusReceived}
	if len(p) >= 2 {
		ce.Code = int(binary.BigEndian.Uint16(p))
		if !utf8.Valid(p[2:]) {
			return fmt.Errorf("%w: invalid utf8 in close frame", ErrProtocol)
		}
		ce.Text = string(p[2:])
	}
	return ce
}
