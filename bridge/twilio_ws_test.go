package bridge

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiliotest"
)

// The Twilio socket's websocket layer, seen from a raw peer: after
// gorilla's handshake the test writes frames byte by byte (legal or not)
// and reads the bridge's frames itself, so nothing between the test and
// the bridge hides a ping, a pong or a close code.

// rawTwilio is a Twilio media stream client with a raw frame layer.
type rawTwilio struct {
	t   *testing.T
	nc  net.Conn
	br  *bufio.Reader
	sid string
}

func dialRawTwilio(t *testing.T, h *harness) *rawTwilio {
	t.Helper()
	hdr := http.Header{twiliotest.SignatureHeader: {twiliotest.SignForm(testAuthToken, testSignURL, nil)}}
	ws, _, err := websocket.DefaultDialer.Dial(h.url, hdr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	_ = ws.NetConn().SetDeadline(time.Now().Add(waitLimit))
	// The bridge sends nothing before start: gorilla buffered nothing.
	return &rawTwilio{t: t, nc: ws.NetConn(), br: bufio.NewReader(ws.NetConn())}
}

// frame writes one client frame (masked with a fixed key) with b0 as its
// first byte.
func (r *rawTwilio) frame(b0 byte, p []byte) {
	r.t.Helper()
	r.write(rawClientFrame(b0, p))
}

func (r *rawTwilio) write(b []byte) {
	r.t.Helper()
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatalf("raw write: %v", err)
	}
}

func rawClientFrame(b0 byte, p []byte) []byte {
	b := []byte{b0}
	switch n := len(p); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	b = append(b, key[:]...)
	for i, c := range p {
		b = append(b, c^key[i%4])
	}
	return b
}

// start sends connected and start for callSID with token.
func (r *rawTwilio) start(callSID, token string) {
	r.t.Helper()
	r.sid = "MZ" + callSID[2:]
	r.frame(0x81, []byte(`{"event":"connected","protocol":"Call","version":"1.0.0"}`))
	start, _ := json.Marshal(map[string]any{"event": "start", "sequenceNumber": "1", "streamSid": r.sid,
		"start": map[string]any{"accountSid": testAccount, "streamSid": r.sid, "callSid": callSID,
			"tracks": []string{"inbound"}, "customParameters": map[string]string{"token": token},
			"mediaFormat": map[string]any{"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
	r.frame(0x81, start)
}

// read reads the next frame from the bridge: opcode, payload, masked.
func (r *rawTwilio) read() (op byte, p []byte, masked bool, err error) {
	var h [2]byte
	if _, err = io.ReadFull(r.br, h[:]); err != nil {
		return 0, nil, false, err
	}
	n := uint64(h[1] & 0x7f)
	var ext [8]byte
	switch n {
	case 126:
		_, err = io.ReadFull(r.br, ext[:2])
		n = uint64(binary.BigEndian.Uint16(ext[:2]))
	case 127:
		_, err = io.ReadFull(r.br, ext[:])
		n = binary.BigEndian.Uint64(ext[:])
	}
	if err != nil || n > 1<<20 || h[1]&0x80 != 0 {
		return 0, nil, h[1]&0x80 != 0, fmt.Errorf("bad frame from the bridge (%d bytes, %v)", n, err)
	}
	p = make([]byte, n)
	_, err = io.ReadFull(r.br, p)
	return h[0] & 0x0f, p, false, err
}

// until reads frames until one of opcode op and returns its payload.
func (r *rawTwilio) until(op byte) []byte {
	r.t.Helper()
	for {
		got, p, _, err := r.read()
		if err != nil {
			r.t.Fatalf("waiting for opcode %d: %v", op, err)
		}
		if got == op {
			return p
		}
	}
}

// rawCall starts a streaming call from a raw peer.
func rawCall(t *testing.T, h *harness) (*rawTwilio, string) {
	t.Helper()
	sid, tok := h.newSession(nil)
	r := dialRawTwilio(t, h)
	r.start(sid, tok)
	h.nextConn()
	waitFor(t, "the call to stream", func() bool { return h.sessions.get(sid).State == session.Streaming })
	return r, sid
}

// TestTwilioPingIsAnswered: a ping from Twilio (between fragments of a
// message too) gets a pong with its payload, unmasked, and the call goes on.
func TestTwilioPingIsAnswered(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	r, sid := rawCall(t, h)
	r.frame(0x89, []byte("are you there"))
	if p := r.until(0xa); string(p) != "are you there" {
		t.Fatalf("pong %q", p)
	}
	msg := []byte(`{"event":"dtmf","streamSid":"` + r.sid + `","dtmf":{"track":"inbound_track","digit":"5"}}`)
	r.frame(0x01, msg[:10])
	r.frame(0x89, []byte("between"))
	r.frame(0x80, msg[10:])
	if p := r.until(0xa); string(p) != "between" {
		t.Fatalf("pong %q", p)
	}
	waitFor(t, "the fragmented dtmf message on the timeline", func() bool {
		_, ok := hasEvent(h.sessions.get(sid), session.EventDigit)
		return ok
	})
	if s := h.sessions.get(sid); s.State != session.Streaming {
		t.Fatalf("session %s after pings", s.State)
	}
}

// TestTwilioProtocolErrorsClose: every breach of RFC 6455 (or of the size
// limit) from Twilio's side is answered with its close code and recorded
// on the session as a protocol error, not as the caller's disconnect.
func TestTwilioProtocolErrorsClose(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	long := func(b0 byte, n uint64) []byte {
		b := []byte{b0, 0x80 | 127}
		return append(binary.BigEndian.AppendUint64(b, n), 1, 2, 3, 4)
	}
	closeBody := func(code uint16) []byte { return binary.BigEndian.AppendUint16(nil, code) }
	for name, tc := range map[string]struct {
		in   []byte
		code int
	}{
		"unmasked frame":   {[]byte{0x81, 0x02, '{', '}'}, websocket.CloseProtocolError},
		"rsv bits":         {rawClientFrame(0xc1, []byte("{}")), websocket.CloseProtocolError},
		"unknown opcode":   {rawClientFrame(0x83, nil), websocket.CloseProtocolError},
		"126-byte ping":    {rawClientFrame(0x89, make([]byte, 126)), websocket.CloseProtocolError},
		"length 2^63":      {long(0x81, 1<<63), websocket.CloseProtocolError},
		"1 MB message":     {long(0x81, 1<<20), websocket.CloseMessageTooBig},
		"16 MB message":    {long(0x82, 16<<20), websocket.CloseMessageTooBig},
		"close code 1005":  {rawClientFrame(0x88, closeBody(1005)), websocket.CloseProtocolError},
		"close code 999":   {rawClientFrame(0x88, closeBody(999)), websocket.CloseProtocolError},
		"invalid UTF-8":    {rawClientFrame(0x81, []byte{'{', 0xff, '}'}), websocket.CloseInvalidFramePayloadData},
		"fragmented close": {rawClientFrame(0x08, closeBody(1000)), websocket.CloseProtocolError},
	} {
		t.Run(name, func(t *testing.T) {
			r, sid := rawCall(t, h)
			r.write(tc.in)
			p := r.until(0x8)
			if len(p) < 2 || int(binary.BigEndian.Uint16(p)) != tc.code {
				t.Fatalf("close frame %q, want code %d", p, tc.code)
			}
			s := h.waitEnded(sid)
			if s.EndReason != ReasonTwilioProtocol {
				t.Fatalf("session ended %q, want %q", s.EndReason, ReasonTwilioProtocol)
			}
		})
	}
	waitFor(t, "11 streams counted as ended by a protocol error", func() bool {
		return h.counter("vivi_bridge_streams_ended_total", "reason", ReasonTwilioProtocol) == 11
	})
}

// TestTwilioCloseHandshake: Twilio's close (without stop) is answered with
// a close frame, and the bridge then ends the TCP connection.
func TestTwilioCloseHandshake(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	r, sid := rawCall(t, h)
	r.frame(0x88, append(binary.BigEndian.AppendUint16(nil, 1000), "bye"...))
	if p := r.until(0x8); len(p) < 2 || binary.BigEndian.Uint16(p) != 1000 {
		t.Fatalf("close answer %q", p)
	}
	if _, _, _, err := r.read(); err != io.EOF {
		t.Fatalf("after the close: %v, want EOF", err)
	}
	if s := h.waitEnded(sid); s.EndReason != ReasonTwilioDisconnected {
		t.Fatalf("ended %q", s.EndReason)
	}
}

// TestTwilioFirstFramesRightBehindTheHandshake: Twilio sends connected and
// start as soon as it has the 101; whatever gorilla's reader held is read.
func TestTwilioFirstFramesRightBehindTheHandshake(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	sid, tok := h.newSession(nil)
	r := dialRawTwilio(t, h)
	var b bytes.Buffer
	r2 := &rawTwilio{t: t, nc: writerConn{r.nc, &b}}
	r2.start(sid, tok)
	r.write(b.Bytes()) // connected and start in one write
	h.nextConn()
	waitFor(t, "the call to stream", func() bool { return h.sessions.get(sid).State == session.Streaming })
}

// writerConn collects writes into a buffer.
type writerConn struct {
	net.Conn
	w io.Writer
}

func (c writerConn) Write(b []byte) (int, error) { return c.w.Write(b) }
