package wsframe

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// FuzzReader feeds arbitrary bytes to a server-side reader (the Twilio
// side: masked client frames) and to a client-side one (the model side).
// Whatever the bytes, Next must not panic, must return only whole messages
// within the limit (text valid UTF-8), and must end with the peer's close,
// a protocol error with a close code we may send, or the end of the input;
// after that every call returns the same error.
func FuzzReader(f *testing.F) {
	seeds := [][]byte{
		client(finBit|opText, []byte(`{"event":"media","media":{"payload":"AAAA"}}`)),
		append(client(opText, []byte("hel")), append(client(finBit|opPing, []byte("p")), client(finBit|opContinuation, []byte("lo"))...)...),
		client(finBit|opBinary, []byte{0, 1, 2}),
		client(finBit|opClose, closeBody(1000, "bye")),
		client(finBit|opClose, closeBody(1005, "")),
		client(finBit|opClose, []byte{3}),
		client(finBit|opText, []byte{0xc3, 0x28}),
		client(finBit|0x40|opText, []byte("x")),
		client(finBit|opPing, make([]byte, 126)),
		{0x81, maskBit | 127, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4},
		{0x81, maskBit | 126, 0x10, 0x00, 1, 2, 3, 4},
		rawFrame(finBit|opText, []byte("unmasked"), 0),
		AppendText(nil, []byte(`{"type":"response.output_audio.delta","delta":"AAAA"}`)),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, masked := range []bool{true, false} {
			const limit = 4096
			r := NewReader(bytes.NewReader(in), 64, masked, limit)
			var pings int
			r.Ping = func(p []byte) {
				if len(p) > maxControlPayload {
					t.Fatalf("ping of %d bytes handed on", len(p))
				}
				pings++
			}
			var buf []byte
			var err error
			for range len(in) + 1 { // every message takes at least 2 bytes
				var typ int
				typ, buf, err = r.Next(buf)
				if err != nil {
					break
				}
				if len(buf) > limit {
					t.Fatalf("message of %d bytes over the limit", len(buf))
				}
				if typ == websocket.TextMessage && !utf8.Valid(buf) {
					t.Fatalf("text message %q is not UTF-8", buf)
				}
			}
			if err == nil {
				t.Fatal("more messages than the input can hold")
			}
			var ce *websocket.CloseError
			switch code := CloseCode(err); {
			case code != 0:
				if !ValidCloseCode(code) || code < 1000 || code > 1011 {
					t.Fatalf("protocol error with close code %d", code)
				}
			case errors.As(err, &ce):
				if ce.Code != closeNoStatus && !ValidCloseCode(ce.Code) {
					t.Fatalf("peer close with code %d accepted", ce.Code)
				}
			case err == io.EOF, err == io.ErrUnexpectedEOF:
			default:
				t.Fatalf("unexpected error %v", err)
			}
			if _, _, again := r.Next(buf); again != err {
				t.Fatalf("after %v, Next returned %v", err, again)
			}
		}
	})
}
