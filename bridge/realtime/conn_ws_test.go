package realtime

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestModelPingsAnsweredWhileWriting: the model's pings get pongs with
// their payload (the latest one at least) through the connection's one write path while the writer
// keeps sending events, and every event arrives whole.
func TestModelPingsAnsweredWhileWriting(t *testing.T) {
	const pings, events = 50, 200
	pongs := make(chan string, pings)
	got := make(chan int, 1)
	srv, _ := echoServer(t, func(ws *websocket.Conn) {
		ws.SetPongHandler(func(p string) error { pongs <- p; return nil })
		go func() {
			for i := range pings {
				_ = ws.WriteControl(websocket.PingMessage, []byte{byte(i)}, time.Now().Add(5*time.Second))
			}
			_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"pinged"}`))
		}()
		n := 0
		for n < events {
			_, msg, err := ws.ReadMessage()
			if err != nil || string(msg) != `{"type":"input_audio_buffer.append","audio":"AAAA"}` {
				break
			}
			n++
		}
		got <- n
		_, _, _ = ws.ReadMessage()
	})
	c, err := Dial(context.Background(), Config{URL: "ws" + strings.TrimPrefix(srv.URL, "http"), Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() {
		var b []byte
		for range events / 4 {
			b = b[:0]
			for range 4 {
				b = c.AppendFrame(b, []byte(`{"type":"input_audio_buffer.append","audio":"AAAA"}`))
			}
			if err := c.WriteFrames(b); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	if msg, err := c.Read(nil); err != nil || string(msg) != `{"type":"pinged"}` {
		t.Fatalf("read %q %v", msg, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := <-got; n != events {
		t.Fatalf("the model read %d whole events, want %d", n, events)
	}
	// Pongs come in order; pings not answered yet may be answered by one
	// pong for the latest (RFC 6455 section 5.5.3), which must come.
	last := -1
	for last != pings-1 {
		p := <-pongs
		if len(p) != 1 || int(p[0]) <= last {
			t.Fatalf("pong %q after the pong for ping %d", p, last)
		}
		last = int(p[0])
	}
}

// TestModelProtocolErrorClosed1002: a frame with a reserved bit set fails
// the read, and Close tells the model so with code 1002.
func TestModelProtocolErrorClosed1002(t *testing.T) {
	closed := make(chan error, 1)
	srv, _ := echoServer(t, func(ws *websocket.Conn) {
		_, _ = ws.NetConn().Write([]byte{0xc1, 0x02, '{', '}'}) // RSV1, no extension negotiated
		_, _, err := ws.ReadMessage()
		closed <- err
	})
	c, err := Dial(context.Background(), Config{URL: "ws" + strings.TrimPrefix(srv.URL, "http"), Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(nil); err == nil || !strings.Contains(err.Error(), "reserved bits") {
		t.Fatalf("read: %v", err)
	}
	_ = c.Close()
	if err := <-closed; !websocket.IsCloseError(err, websocket.CloseProtocolError) {
		t.Fatalf("the model saw %v, want close 1002", err)
	}
}

// TestDialKeepsEventsBehindThe101: a model that sends session.created in
// the same write as its 101 response (gorilla's handshake reader then
// holds it) loses nothing.
func TestDialKeepsEventsBehindThe101(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan net.Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			close(served)
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(nc))
		if err != nil {
			nc.Close()
			close(served)
			return
		}
		h := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		out := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: " + base64.StdEncoding.EncodeToString(h[:]) + "\r\n\r\n" +
			"\x81\x1a" + `{"type":"session.created"}`
		_, _ = nc.Write([]byte(out))
		served <- nc
	}()
	c, err := Dial(context.Background(), Config{URL: "ws://" + ln.Addr().String() + "/v1/realtime", Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	nc := <-served
	defer nc.Close()
	defer c.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if msg, err := c.Read(nil); err != nil || string(msg) != `{"type":"session.created"}` {
		t.Fatalf("read %q %v", msg, err)
	}
}
