package wsframe

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// RFC 6455 conformance of Conn, over real loopback sockets: the peer is a
// raw connection that writes frames byte by byte as the test says and reads
// what the Conn sends.

// rawFrame is one frame as a peer would write it. key 0 means unmasked.
func rawFrame(b0 byte, p []byte, key uint32) []byte {
	var m byte
	if key != 0 {
		m = maskBit
	}
	b := appendOpHeader(nil, b0&0x0f, len(p), m)
	b[0] = b0
	if key != 0 {
		b = binary.BigEndian.AppendUint32(b, key)
		n := len(b)
		b = append(b, p...)
		mask(b[n:], key)
		return b
	}
	return append(b, p...)
}

const testKey = 0x11223344

// client is a client's frame (masked).
func client(b0 byte, p []byte) []byte { return rawFrame(b0, p, testKey) }

func closeBody(code int, text string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), text...)
}

// serverConn is a Conn (server side) and the raw peer of its connection.
func serverConn(t *testing.T, cfg Config) (*Conn, net.Conn) {
	t.Helper()
	a, b := tcpPair(t)
	if cfg.ReadLimit == 0 {
		cfg.ReadLimit = 256 << 10
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 5 * time.Second
	}
	return NewConn(a, nil, cfg), b
}

func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		got <- c
	}()
	b, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := <-got
	if a == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() {
		a.Close()
		b.Close()
	})
	return a, b
}

// peerFrame is a frame the peer read.
type peerFrame struct {
	fin    bool
	op     byte
	masked bool
	p      []byte
}

// readFrame reads one frame on the peer's side, unmasking it.
func readFrame(t *testing.T, br *bufio.Reader) peerFrame {
	t.Helper()
	r := &Reader{br: br, limit: 1 << 30}
	b0, err := br.ReadByte()
	if err != nil {
		t.Fatalf("peer read: %v", err)
	}
	b1, _ := br.ReadByte()
	n := uint64(b1 & 0x7f)
	switch n {
	case 126:
		n, _ = r.uint(2)
	case 127:
		n, _ = r.uint(8)
	}
	f := peerFrame{fin: b0&finBit != 0, op: b0 & 0x0f, masked: b1&maskBit != 0}
	var key uint32
	if f.masked {
		k, _ := r.uint(4)
		key = uint32(k)
	}
	f.p = make([]byte, n)
	if _, err := io.ReadFull(br, f.p); err != nil {
		t.Fatalf("peer read payload: %v", err)
	}
	if f.masked {
		mask(f.p, key)
	}
	return f
}

func expectClose(t *testing.T, br *bufio.Reader, code int) {
	t.Helper()
	for {
		f := readFrame(t, br)
		if f.op != opClose {
			continue
		}
		if code == 0 {
			if len(f.p) != 0 {
				t.Fatalf("close payload %q, want none", f.p)
			}
			return
		}
		if len(f.p) < 2 || int(binary.BigEndian.Uint16(f.p)) != code {
			t.Fatalf("close payload %q, want code %d", f.p, code)
		}
		return
	}
}

func TestConnFragmentsWithControlFramesBetween(t *testing.T) {
	c, peer := serverConn(t, Config{})
	var in []byte
	in = append(in, client(opText, []byte("hel"))...)
	in = append(in, client(finBit|opPing, []byte("p1"))...)
	in = append(in, client(opContinuation, []byte("lo, "))...)
	in = append(in, client(finBit|opPong, nil)...)
	in = append(in, client(opContinuation, []byte("wörld"))...)
	in = append(in, client(finBit|opContinuation, nil)...) // an empty final fragment
	in = append(in, client(finBit|opBinary, []byte{0, 1, 2})...)
	go func() { _, _ = peer.Write(in) }()
	pongs := 0
	c.OnPong(func() { pongs++ })
	typ, msg, err := c.Next(nil)
	if err != nil || typ != websocket.TextMessage || string(msg) != "hello, wörld" {
		t.Fatalf("got %d %q %v", typ, msg, err)
	}
	typ, msg, err = c.Next(msg)
	if err != nil || typ != websocket.BinaryMessage || !bytes.Equal(msg, []byte{0, 1, 2}) {
		t.Fatalf("got %d %q %v", typ, msg, err)
	}
	if pongs != 1 {
		t.Fatalf("%d pongs seen, want 1", pongs)
	}
	// The ping between the fragments was answered: an unmasked pong
	// with its payload (a server's frames are never masked).
	f := readFrame(t, bufio.NewReader(peer))
	if f.op != opPong || !f.fin || f.masked || string(f.p) != "p1" {
		t.Fatalf("answer %+v, want an unmasked pong p1", f)
	}
}

// TestConnProtocolErrors: every violation ends the reading with an error
// that says which close code answers it, and Close sends that code.
func TestConnProtocolErrors(t *testing.T) {
	big := func(op byte, n uint64) []byte { // a header announcing n bytes
		b := []byte{op, maskBit | 127}
		b = binary.BigEndian.AppendUint64(b, n)
		return append(b, 1, 2, 3, 4)
	}
	fragments := func(n, each int) []byte {
		var b []byte
		for i := 0; i < n; i += each {
			op := byte(opContinuation)
			if i == 0 {
				op = opText
			}
			if i+each >= n {
				op |= finBit
			}
			b = append(b, client(op, bytes.Repeat([]byte("a"), each))...)
		}
		return b
	}
	for name, tc := range map[string]struct {
		in   []byte
		code int
	}{
		"unmasked client frame":        {rawFrame(finBit|opText, []byte("x"), 0), CloseProtocol},
		"rsv1":                         {client(finBit|0x40|opText, []byte("x")), CloseProtocol},
		"rsv2":                         {client(finBit|0x20|opText, []byte("x")), CloseProtocol},
		"rsv3":                         {client(finBit|0x10|opText, []byte("x")), CloseProtocol},
		"opcode 3":                     {client(finBit|0x3, nil), CloseProtocol},
		"opcode 11":                    {client(finBit|0xb, nil), CloseProtocol},
		"126-byte ping":                {client(finBit|opPing, make([]byte, 126)), CloseProtocol},
		"fragmented ping":              {client(opPing, nil), CloseProtocol},
		"length 2^63":                  {big(finBit|opText, 1<<63), CloseProtocol},
		"continuation first":           {client(finBit|opContinuation, []byte("x")), CloseProtocol},
		"text inside a message":        {append(client(opText, []byte("x")), client(finBit|opText, []byte("y"))...), CloseProtocol},
		"1 MB message":                 {big(finBit|opText, 1<<20), CloseTooBig},
		"16 MB message":                {big(finBit|opBinary, 16<<20), CloseTooBig},
		"fragments over the limit":     {fragments(300<<10, 50<<10), CloseTooBig},
		"invalid UTF-8 text":           {client(finBit|opText, []byte{'a', 0xff}), CloseInvalidData},
		"UTF-8 cut between fragments":  {append(client(opText, []byte{0xc3}), client(finBit|opContinuation, []byte{'x'})...), CloseInvalidData},
		"close code 1005":              {client(finBit|opClose, closeBody(1005, "")), CloseProtocol},
		"close code 1006":              {client(finBit|opClose, closeBody(1006, "")), CloseProtocol},
		"close code 999":               {client(finBit|opClose, closeBody(999, "")), CloseProtocol},
		"close code 1004":              {client(finBit|opClose, closeBody(1004, "")), CloseProtocol},
		"close code 1015":              {client(finBit|opClose, closeBody(1015, "")), CloseProtocol},
		"close code 2999":              {client(finBit|opClose, closeBody(2999, "")), CloseProtocol},
		"close code 5000":              {client(finBit|opClose, closeBody(5000, "")), CloseProtocol},
		"1-byte close payload":         {client(finBit|opClose, []byte{3}), CloseProtocol},
		"close reason not UTF-8":       {client(finBit|opClose, append(closeBody(1000, ""), 0xff)), CloseInvalidData},
		"close frame of 126 bytes":     {client(finBit|opClose, append(closeBody(1000, ""), make([]byte, 124)...)), CloseProtocol},
		"binary then bad continuation": {append(client(finBit|opBinary, nil), client(finBit|opContinuation, nil)...), CloseProtocol},
	} {
		t.Run(name, func(t *testing.T) {
			c, peer := serverConn(t, Config{})
			go func() { _, _ = peer.Write(tc.in) }()
			var err error
			for err == nil { // a valid message ahead of the bad one is read first
				_, _, err = c.Next(nil)
			}
			if CloseCode(err) != tc.code || !errors.Is(err, ErrProtocol) {
				t.Fatalf("err = %v (code %d), want code %d", err, CloseCode(err), tc.code)
			}
			if _, _, again := c.Next(nil); again != err {
				t.Fatalf("a second Next read on: %v", again)
			}
			go func() { _ = c.Close(CloseNormal, "") }()
			expectClose(t, bufio.NewReader(peer), tc.code)
		})
	}
}

// TestConnAcceptsLegalCloses: every code allowed on the wire, and an empty
// close payload, end the reading as the peer's close (not an error of ours).
func TestConnAcceptsLegalCloses(t *testing.T) {
	for _, code := range []int{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4000, 4999, 0} {
		c, peer := serverConn(t, Config{})
		body := closeBody(code, "bye ✓")
		if code == 0 {
			body = nil
		}
		go func() { _, _ = peer.Write(client(finBit|opClose, body)) }()
		_, _, err := c.Next(nil)
		var ce *websocket.CloseError
		want := code
		if code == 0 {
			want = closeNoStatus
		}
		if !errors.As(err, &ce) || ce.Code != want || CloseCode(err) != 0 {
			t.Fatalf("code %d: %v", code, err)
		}
	}
}

// TestConnCloseHandshake: the peer's close is answered with a close frame
// and the connection ends; our close waits for the peer's answer.
func TestConnCloseHandshake(t *testing.T) {
	t.Run("peer first", func(t *testing.T) {
		c, peer := serverConn(t, Config{})
		go func() { _, _ = peer.Write(client(finBit|opClose, closeBody(1001, "going"))) }()
		if _, _, err := c.Next(nil); !websocket.IsCloseError(err, 1001) {
			t.Fatalf("err = %v", err)
		}
		go func() { _ = c.Close(CloseNormal, "") }()
		br := bufio.NewReader(peer)
		expectClose(t, br, CloseNormal)
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("after the close: %v, want EOF", err)
		}
	})
	t.Run("we first", func(t *testing.T) {
		c, peer := serverConn(t, Config{CloseWait: time.Minute})
		read := make(chan error, 1)
		go func() {
			_, _, err := c.Next(nil)
			read <- err
		}()
		br := bufio.NewReader(peer)
		// The pong says the reader is inside Next.
		_, _ = peer.Write(client(finBit|opPing, nil))
		if f := readFrame(t, br); f.op != opPong {
			t.Fatalf("got %+v, want a pong", f)
		}
		closed := make(chan error, 1)
		go func() { closed <- c.Close(4001, strings.Repeat("é", 100)) }()
		f := readFrame(t, br)
		if f.op != opClose || binary.BigEndian.Uint16(f.p) != 4001 || len(f.p) > 125 || !utf8Valid(f.p[2:]) {
			t.Fatalf("close frame %+v", f)
		}
		select {
		case <-closed:
			t.Fatal("Close returned before the peer answered")
		default:
		}
		_, _ = peer.Write(client(finBit|opClose, closeBody(4001, "")))
		if err := <-read; !websocket.IsCloseError(err, 4001) {
			t.Fatalf("reader: %v", err)
		}
		if err := <-closed; err != nil {
			t.Fatal(err)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("after the handshake: %v, want EOF", err)
		}
	})
	t.Run("codes not for the wire", func(t *testing.T) {
		c, peer := serverConn(t, Config{})
		go func() { _ = c.Close(closeNoStatus, "x") }()
		expectClose(t, bufio.NewReader(peer), 0)
	})
}

// TestConnClientMasks: a client Conn masks every frame it sends (data and
// control) and refuses masked frames from the server.
func TestConnClientMasks(t *testing.T) {
	a, peer := tcpPair(t)
	c := NewConn(a, nil, Config{Client: true, ReadLimit: 1 << 20})
	go func() {
		_ = c.WriteFrames(c.AppendText(nil, []byte("hi")))
		_ = c.Ping([]byte("p"))
		_, _ = peer.Write(rawFrame(finBit|opPing, []byte("q"), 0))
		_, _ = peer.Write(rawFrame(finBit|opText, []byte("ok"), 0))
		_, _ = peer.Write(rawFrame(finBit|opText, []byte("masked"), testKey))
	}()
	br := bufio.NewReader(peer)
	for _, want := range []peerFrame{{op: opText, p: []byte("hi")}, {op: opPing, p: []byte("p")}} {
		if f := readFrame(t, br); f.op != want.op || !f.masked || !bytes.Equal(f.p, want.p) {
			t.Fatalf("got %+v, want masked %+v", f, want)
		}
	}
	if _, msg, err := c.Next(nil); err != nil || string(msg) != "ok" {
		t.Fatalf("%q %v", msg, err)
	}
	if f := readFrame(t, br); f.op != opPong || !f.masked || string(f.p) != "q" {
		t.Fatalf("pong %+v", f)
	}
	if _, _, err := c.Next(nil); CloseCode(err) != CloseProtocol {
		t.Fatalf("masked server frame: %v", err)
	}
}

// TestConnReaderNotHeldBySlowPeer: while a write is stuck on a peer that
// does not read, the reader goes on (a ping does not wait for the write),
// the pong follows the write, and the write ends at its deadline.
func TestConnReaderNotHeldBySlowPeer(t *testing.T) {
	c, peer := serverConn(t, Config{WriteTimeout: 300 * time.Millisecond})
	werr := make(chan error, 1)
	go func() { werr <- c.WriteFrames(AppendText(nil, make([]byte, 16<<20))) }()
	go func() {
		_, _ = peer.Write(client(finBit|opPing, []byte("x")))
		_, _ = peer.Write(client(finBit|opText, []byte("after the ping")))
	}()
	if _, msg, err := c.Next(nil); err != nil || string(msg) != "after the ping" {
		t.Fatalf("%q %v", msg, err)
	}
	if err := <-werr; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stuck write: %v, want its deadline", err)
	}
}

func utf8Valid(b []byte) bool { return strings.ToValidUTF8(string(b), "\uFFFD") == string(b) }

// fakeConn reads from r and discards writes.
type fakeConn struct {
	net.Conn
	r io.Reader
}

func (c fakeConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c fakeConn) Write(b []byte) (int, error)      { return len(b), nil }
func (c fakeConn) SetWriteDeadline(time.Time) error { return nil }
func (c fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c fakeConn) Close() error                     { return nil }

// TestConnPerFrameAllocatesNothing: reading a message (with a ping in
// between, answered) and writing frames allocate nothing per frame.
func TestConnPerFrameAllocatesNothing(t *testing.T) {
	var in []byte
	for range 200 {
		in = append(in, client(finBit|opPing, []byte("p"))...)
		in = AppendMaskedText(in, payload(300), 0x01020304)
	}
	c := NewConn(fakeConn{r: bytes.NewReader(in)}, nil, Config{ReadLimit: 1 << 20})
	buf := make([]byte, 0, 512)
	out := make([]byte, 0, 1024)
	allocs := testing.AllocsPerRun(199, func() {
		_, msg, err := c.Next(buf)
		if err != nil || len(msg) != 300 {
			t.Fatalf("%d bytes, %v", len(msg), err)
		}
		out = c.AppendText(out[:0], msg)
		if err := c.WriteFrames(out); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per frame", allocs)
	}
}
