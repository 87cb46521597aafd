package wsframe

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// pair is a gorilla client and the server side of its connection.
func pair(t *testing.T) (client, server *websocket.Conn) {
	t.Helper()
	conns := make(chan *websocket.Conn, 1)
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ws, err := up.Upgrade(w, r, nil); err == nil {
			conns <- ws
		}
	}))
	t.Cleanup(srv.Close)
	d := websocket.Dialer{WriteBufferSize: 1024} // larger messages are fragmented
	client, _, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	server = <-conns
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

var sizes = []int{0, 1, 125, 126, 1000, 65535, 65536, 200000}

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

// TestReaderReadsGorillaClient: every size, fragmented or not, text and
// binary, with pings between, as gorilla's client writes them.
func TestReaderReadsGorillaClient(t *testing.T) {
	client, server := pair(t)
	r := NewReader(server.NetConn(), 1024, true, 1<<20)
	var pings []string
	r.Ping = func(p []byte) { pings = append(pings, string(p)) }
	go func() {
		for i, n := range sizes {
			typ := websocket.TextMessage
			if i%2 == 1 {
				typ = websocket.BinaryMessage
			}
			_ = client.WriteControl(websocket.PingMessage, []byte{byte('0' + i)}, time.Now().Add(time.Second))
			_ = client.WriteMessage(typ, payload(n))
		}
		_ = client.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "bye"), time.Now().Add(time.Second))
	}()
	var buf []byte
	for i, n := range sizes {
		typ, msg, err := r.Next(buf)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		want := websocket.TextMessage
		if i%2 == 1 {
			want = websocket.BinaryMessage
		}
		if typ != want || !bytes.Equal(msg, payload(n)) {
			t.Fatalf("message %d: type %d, %d bytes, want type %d, %d bytes", i, typ, len(msg), want, n)
		}
		buf = msg
	}
	_, _, err := r.Next(buf)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 4001 || ce.Text != "bye" {
		t.Fatalf("close: %v", err)
	}
	if len(pings) != len(sizes) || pings[3] != "3" {
		t.Fatalf("pings %q", pings)
	}
}

// TestAppendedFramesReadByGorilla: server frames to gorilla's client and
// masked client frames to gorilla's server, several per write.
func TestAppendedFramesReadByGorilla(t *testing.T) {
	client, server := pair(t)
	var out, in []byte
	for _, n := range sizes {
		out = AppendText(out, payload(n))
		in = AppendMaskedText(in, payload(n), uint32(n*2654435761))
	}
	go func() { _, _ = server.NetConn().Write(out) }()
	go func() { _, _ = client.NetConn().Write(in) }()
	for _, side := range []*websocket.Conn{client, server} {
		for _, n := range sizes {
			typ, msg, err := side.ReadMessage()
			if err != nil || typ != websocket.TextMessage || !bytes.Equal(msg, payload(n)) {
				t.Fatalf("%d bytes: type %d, %d bytes, %v", n, typ, len(msg), err)
			}
		}
	}
}

func TestReaderRefusesBadFrames(t *testing.T) {
	masked := func(b0, b1 byte, rest ...byte) []byte { return append([]byte{b0, b1 | maskBit, 0, 0, 0, 0}, rest...) }
	for name, tc := range map[string]struct {
		in   []byte
		want error
	}{
		"unmasked from a client":   {[]byte{0x81, 0x01, 'x'}, ErrProtocol},
		"reserved bits":            {masked(0xc1, 0x01, 'x'), ErrProtocol},
		"fragmented ping":          {masked(0x09, 0x00), ErrProtocol},
		"long ping":                {[]byte{0x89, 126 | maskBit, 0, 200, 0, 0, 0, 0}, ErrProtocol},
		"unknown opcode":           {masked(0x83, 0x00), ErrProtocol},
		"continuation first":       {masked(0x80, 0x01, 'x'), ErrProtocol},
		"text inside a fragment":   {append(masked(0x01, 0x01, 'x'), masked(0x81, 0x01, 'y')...), ErrProtocol},
		"frame over the limit":     {[]byte{0x81, 126 | maskBit, 0x01, 0x00, 0, 0, 0, 0}, websocket.ErrReadLimit},
		"fragments over the limit": {append(masked(0x01, 100), make([]byte, 100)...), websocket.ErrReadLimit},
	} {
		t.Run(name, func(t *testing.T) {
			in := tc.in
			if name == "fragments over the limit" {
				in = append(in, masked(0x80, 100)...)
				in = append(in, make([]byte, 100)...)
			}
			r := NewReader(bytes.NewReader(in), 64, true, 150)
			if _, _, err := r.Next(nil); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestReaderReusesItsBuffers(t *testing.T) {
	var in []byte
	for range 100 {
		in = AppendMaskedText(in, payload(300), 0x01020304)
	}
	r := NewReader(bytes.NewReader(in), 1024, true, 1<<20)
	buf := make([]byte, 0, 512)
	allocs := testing.AllocsPerRun(99, func() {
		_, msg, err := r.Next(buf)
		if err != nil || len(msg) != 300 {
			t.Fatalf("%d bytes, %v", len(msg), err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per message", allocs)
	}
}

func BenchmarkReaderNext(b *testing.B) {
	frame := AppendMaskedText(nil, payload(330), 0x0badcafe)
	in := bytes.Repeat(frame, 1000)
	br := bytes.NewReader(in)
	r := NewReader(br, 4096, true, 1<<20)
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for i := 0; b.Loop(); i++ {
		if i%1000 == 0 {
			br.Reset(in)
		}
		if _, msg, err := r.Next(buf); err != nil || len(msg) != 330 {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendMaskedText(b *testing.B) {
	p := payload(330)
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		buf = AppendMaskedText(buf[:0], p, 0x0badcafe)
	}
}
