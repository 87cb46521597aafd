package wsframe

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"net"
	"net/http"
	"testing"

	"github.com/gorilla/websocket"
)

// rawUpgrade answers one websocket handshake on ln with the 101 response
// and then frames in the same write, as a server may (the first event
// right behind the response), and returns the connection.
func rawUpgrade(t *testing.T, ln net.Listener, frames []byte) chan net.Conn {
	t.Helper()
	got := make(chan net.Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			close(got)
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(nc))
		if err != nil {
			nc.Close()
			close(got)
			return
		}
		h := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: " + base64.StdEncoding.EncodeToString(h[:]) + "\r\n\r\n"
		_, _ = nc.Write(append([]byte(resp), frames...))
		got <- nc
	}()
	return got
}

// TestHandshakeReaderKeepsFramesBehindTheResponse: frames that came in the
// same read as gorilla's 101 response are in gorilla's buffer; a Conn made
// with HandshakeReader reads them.
func TestHandshakeReaderKeepsFramesBehindTheResponse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	first := AppendText(nil, []byte(`{"type":"session.created"}`))
	first = AppendText(first, []byte(`{"type":"second"}`))
	srv := rawUpgrade(t, ln, first)
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+ln.Addr().String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	nc := <-srv
	defer nc.Close()
	br := HandshakeReader(ws)
	if br == nil || br.Buffered() == 0 {
		t.Fatalf("gorilla's reader: %v (the frames should be buffered in it)", br)
	}
	c := NewConn(ws.NetConn(), br, Config{Client: true, ReadLimit: 1 << 20})
	defer c.Close(CloseNormal, "")
	for _, want := range []string{`{"type":"session.created"}`, `{"type":"second"}`} {
		if _, msg, err := c.Next(nil); err != nil || string(msg) != want {
			t.Fatalf("got %q %v, want %s", msg, err, want)
		}
	}
}
