package bridge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiliotest"
)

// The relay benchmarks run one call through the real Server, websockets
// and all, between a Twilio client and a model that do raw, allocation-free
// websocket I/O, so that allocs/op are the bridge's own (plus the runtime's
// network poller). One op is one frame relayed in the named direction; at
// most relayWindow frames are in flight, like audio that is paced rather
// than flooded.
const relayWindow = 16

// rawWS reads and writes unfragmented websocket frames on a connection
// after its handshake, reusing its buffers. Client frames are sent masked
// with a zero key (the payload is then unchanged).
type rawWS struct {
	conn   net.Conn
	br     *bufio.Reader
	client bool
	wbuf   []byte
	rbuf   []byte
	hdr    [8]byte // a field: a local array would escape through io.ReadFull
}

func newRawWS(ws *websocket.Conn, client bool) *rawWS {
	return &rawWS{conn: ws.NetConn(), br: bufio.NewReaderSize(ws.NetConn(), 8192), client: client}
}

func appendWSFrame(dst, p []byte, mask bool) []byte {
	var m byte
	if mask {
		m = 0x80
	}
	dst = append(dst, 0x81) // FIN, text
	switch {
	case len(p) < 126:
		dst = append(dst, m|byte(len(p)))
	case len(p) < 1<<16:
		dst = append(dst, m|126, byte(len(p)>>8), byte(len(p)))
	default:
		panic("frame too large for the benchmark")
	}
	if mask {
		dst = append(dst, 0, 0, 0, 0)
	}
	return append(dst, p...)
}

func (w *rawWS) write(msgs ...[]byte) error {
	b := w.wbuf[:0]
	for _, p := range msgs {
		b = appendWSFrame(b, p, w.client)
	}
	w.wbuf = b
	_, err := w.conn.Write(b)
	return err
}

// read returns the next text message; control frames are skipped.
func (w *rawWS) read() ([]byte, error) {
	for {
		h := w.hdr[:2]
		if _, err := io.ReadFull(w.br, h); err != nil {
			return nil, err
		}
		n := int(h[1] & 0x7f)
		switch n {
		case 126:
			ext := w.hdr[2:4]
			if _, err := io.ReadFull(w.br, ext); err != nil {
				return nil, err
			}
			n = int(ext[0])<<8 | int(ext[1])
		case 127:
			return nil, errors.New("rawWS: frame too large")
		}
		key := w.hdr[4:8]
		masked := h[1]&0x80 != 0
		if masked {
			if _, err := io.ReadFull(w.br, key); err != nil {
				return nil, err
			}
		}
		if cap(w.rbuf) < n {
			w.rbuf = make([]byte, n)
		}
		p := w.rbuf[:n]
		if _, err := io.ReadFull(w.br, p); err != nil {
			return nil, err
		}
		if masked {
			for i := range p {
				p[i] ^= key[i&3]
			}
		}
		switch op := w.hdr[0] & 0x0f; {
		case op == 0x8:
			return nil, io.EOF
		case op >= 0x8: // ping, pong
			continue
		case w.hdr[0]&0x80 == 0:
			return nil, errors.New("rawWS: fragmented message")
		}
		return p, nil
	}
}

// relayBench is one live call through a real Server.
type relayBench struct {
	tw, model *rawWS
	sid       string
	closeAll  func()
}

func newRelayBench(b *testing.B) *relayBench {
	b.Helper()
	models := make(chan *websocket.Conn, 1)
	up := websocket.Upgrader{}
	modelSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ws, err := up.Upgrade(w, r, nil); err == nil {
			models <- ws
		}
	}))
	tokens, err := session.NewTokens([]byte(strings.Repeat("s", session.MinTokenSecret)), time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	sessions := &memSessions{m: map[string]*session.Session{}}
	agent := testAgent()
	srv, err := NewServer(Config{RealtimeURL: "ws" + strings.TrimPrefix(modelSrv.URL, "http"), APIKey: "k"}, Deps{
		Sessions: sessions, Tokens: tokens, Claims: &memClaims{used: map[string]bool{}}, Handshake: signatureCheck{},
		Agents: agentsFunc(func(context.Context, string, string) (Agent, error) { return agent, nil }),
		Logger: zap.NewNop(),
	})
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	srv.Register(mux)
	bridgeSrv := httptest.NewServer(mux)

	callSID, streamSID := twiliotest.NewCallSID(), twiliotest.NewStreamSID()
	sessions.put(session.New(callSID, testChannel, agent.ID, time.Now()))
	token, _, err := tokens.Issue(callSID, testChannel, agent.ID, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	h := http.Header{twiliotest.SignatureHeader: {twiliotest.SignForm(testAuthToken, testSignURL, nil)}}
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(bridgeSrv.URL, "http")+StreamPath, h)
	if err != nil {
		b.Fatal(err)
	}
	rb := &relayBench{tw: newRawWS(ws, true), sid: streamSID}
	start := fmt.Sprintf(`{"event":"start","sequenceNumber":"1","start":{"accountSid":"%s","streamSid":"%s","callSid":"%s",`+
		`"tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},`+
		`"customParameters":{"token":"%s"}},"streamSid":"%s"}`, testAccount, streamSID, callSID, token, streamSID)
	if err := rb.tw.write([]byte(`{"event":"connected","protocol":"Call","version":"1.0.0"}`), []byte(start)); err != nil {
		b.Fatal(err)
	}
	var mws *websocket.Conn
	select {
	case mws = <-models:
	case <-time.After(10 * time.Second):
		b.Fatal("the bridge did not dial the model")
	}
	rb.model = newRawWS(mws, false)
	// The model's side of the set-up: session.updated, then a response
	// without audio to the greeting's response.create.
	if err := rb.model.write([]byte(`{"type":"session.created","event_id":"e0","session":{"id":"sess_1"}}`)); err != nil {
		b.Fatal(err)
	}
	for created := false; !created; {
		msg, err := rb.model.read()
		if err != nil {
			b.Fatal(err)
		}
		switch {
		case bytes.Contains(msg, []byte(`"type":"session.update"`)):
			err = rb.model.write([]byte(`{"type":"session.updated","event_id":"e1","session":{"id":"sess_1"}}`))
		case bytes.Contains(msg, []byte(`"type":"response.create"`)):
			err = rb.model.write([]byte(`{"type":"response.created","event_id":"e2","response":{"id":"resp_1","status":"in_progress"}}`),
				[]byte(`{"type":"response.done","event_id":"e3","response":{"id":"resp_1","status":"completed"}}`))
			created = true
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	rb.closeAll = func() {
		b.StopTimer() // ending the call is not part of the benchmark
		_ = ws.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		bridgeSrv.Close()
		_ = mws.Close()
		modelSrv.Close()
	}
	return rb
}

var benchAudio = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xff}, 160))

func (rb *relayBench) media() []byte {
	return []byte(`{"event":"media","sequenceNumber":"2","media":{"track":"inbound","chunk":"1","timestamp":"0","payload":"` +
		benchAudio + `"},"streamSid":"` + rb.sid + `"}`)
}

func benchDelta() []byte {
	return []byte(`{"type":"response.output_audio.delta","event_id":"event_9","response_id":"resp_echo","item_id":"item_echo",` +
		`"output_index":0,"content_index":0,"delta":"` + benchAudio + `"}`)
}

// BenchmarkRelayTwilioToModel: Twilio media in, the model's append out.
func BenchmarkRelayTwilioToModel(b *testing.B) {
	rb := newRelayBench(b)
	defer rb.closeAll()
	window := make(chan struct{}, relayWindow)
	done := make(chan error, 1)
	go func() {
		for n := 0; n < b.N; {
			msg, err := rb.model.read()
			if err != nil {
				done <- err
				return
			}
			if bytes.HasPrefix(msg, []byte(`{"type":"input_audio_buffer.append"`)) {
				n++
				<-window
			}
		}
		done <- nil
	}()
	frame := rb.media()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		window <- struct{}{}
		if err := rb.tw.write(frame); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRelayModelToTwilio: a model audio delta in, Twilio's media and
// mark out, and the mark's echo back in (the whole cost of a chunk).
func BenchmarkRelayModelToTwilio(b *testing.B) {
	rb := newRelayBench(b)
	defer rb.closeAll()
	window := make(chan struct{}, relayWindow)
	done := make(chan error, 1)
	go func() {
		var echo []byte
		for n := 0; n < b.N; {
			msg, err := rb.tw.read()
			if err != nil {
				done <- err
				return
			}
			switch {
			case bytes.HasPrefix(msg, []byte(`{"event":"media"`)):
				n++
				<-window
			case bytes.HasPrefix(msg, []byte(`{"event":"mark"`)):
				echo = append(echo[:0], msg...) // Twilio echoes the mark as it was sent
				if err := rb.tw.write(echo); err != nil {
					done <- err
					return
				}
			}
		}
		done <- nil
	}()
	delta := benchDelta()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		window <- struct{}{}
		if err := rb.model.write(delta); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRelayRoundTrip: one caller frame at a time through the bridge to
// a model that echoes it at once and back to Twilio, marks echoed: ns/op is
// the echo delay the bridge adds on an idle machine (plus four loopback
// hops), allocs/op those of a frame relayed both ways.
func BenchmarkRelayRoundTrip(b *testing.B) {
	rb := newRelayBench(b)
	defer rb.closeAll()
	go func() { // the echo model
		delta := []byte(`{"type":"response.output_audio.delta","event_id":"event_9","response_id":"resp_echo","item_id":"item_echo",` +
			`"output_index":0,"content_index":0,"delta":"`)
		var out []byte
		for {
			msg, err := rb.model.read()
			if err != nil {
				return
			}
			if a, ok := bytes.CutPrefix(msg, []byte(`{"type":"input_audio_buffer.append","audio":"`)); ok {
				out = append(append(append(out[:0], delta...), a[:len(a)-2]...), `"}`...)
				if rb.model.write(out) != nil {
					return
				}
			}
		}
	}()
	frame := rb.media()
	var echo []byte
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := rb.tw.write(frame); err != nil {
			b.Fatal(err)
		}
		for got := false; !got; {
			msg, err := rb.tw.read()
			if err != nil {
				b.Fatal(err)
			}
			switch {
			case bytes.HasPrefix(msg, []byte(`{"event":"media"`)):
				got = true
			case bytes.HasPrefix(msg, []byte(`{"event":"mark"`)):
				echo = append(echo[:0], msg...)
				if err := rb.tw.write(echo); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
}
