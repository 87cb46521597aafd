package realtimetest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
)

const waitFor = 5 * time.Second

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newServer starts a Server that is closed when the test ends.
func newServer(t *testing.T, opts Options) *Server {
	t.Helper()
	s := NewServer(opts)
	t.Cleanup(s.Close)
	return s
}

// client is the test's side of one realtime websocket, like the bridge.
type client struct {
	t  *testing.T
	ws *websocket.Conn
}

func authHeader() http.Header {
	return http.Header{"Authorization": {"Bearer " + DefaultAPIKey}}
}

// dial connects with the default key and model and returns the client and
// the server's side of the connection.
func dial(t *testing.T, s *Server) (*client, *Conn) {
	t.Helper()
	cl := dialWith(t, s.URL()+"?model=gpt-realtime", authHeader())
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, err := s.NextConn(ctx)
	if err != nil {
		t.Fatalf("NextConn: %v", err)
	}
	return cl, c
}

func dialWith(t *testing.T, url string, h http.Header) *client {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(url, h)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	_ = resp.Body.Close()
	t.Cleanup(func() { _ = ws.Close() })
	return &client{t: t, ws: ws}
}

func (cl *client) send(v any) {
	cl.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		cl.t.Fatalf("marshal: %v", err)
	}
	cl.sendRaw(b)
}

func (cl *client) sendRaw(b []byte) {
	cl.t.Helper()
	if err := cl.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		cl.t.Fatalf("write: %v", err)
	}
}

func (cl *client) appendAudio(audio []byte) {
	cl.t.Helper()
	cl.send(map[string]any{"type": "input_audio_buffer.append", "audio": base64.StdEncoding.EncodeToString(audio)})
}

// event is one server event as decoded JSON.
type event map[string]any

func (e event) str(key string) string { s, _ := e[key].(string); return s }

func (e event) obj(key string) event { m, _ := e[key].(map[string]any); return m }

func (e event) num(key string) int { f, _ := e[key].(float64); return int(f) }

// read returns the next server event, failing the test after waitFor.
func (cl *client) read() event {
	cl.t.Helper()
	_ = cl.ws.SetReadDeadline(time.Now().Add(waitFor))
	_, b, err := cl.ws.ReadMessage()
	if err != nil {
		cl.t.Fatalf("read: %v", err)
	}
	var e event
	if err := json.Unmarshal(b, &e); err != nil {
		cl.t.Fatalf("server event is not JSON: %q", b)
	}
	if e.str("event_id") == "" || e.str("type") == "" {
		cl.t.Fatalf("server event without event_id or type: %s", b)
	}
	return e
}

// expect reads the next events and checks their types, in order.
func (cl *client) expect(types ...string) []event {
	cl.t.Helper()
	out := make([]event, 0, len(types))
	for i, typ := range types {
		e := cl.read()
		if e.str("type") != typ {
			cl.t.Fatalf("event %d: got %s (%v), want %s", i, e.str("type"), e, typ)
		}
		out = append(out, e)
	}
	return out
}

// until reads events until one of type typ and returns it with the skipped ones.
func (cl *client) until(typ string) (event, []event) {
	cl.t.Helper()
	var skipped []event
	for {
		e := cl.read()
		if e.str("type") == typ {
			return e, skipped
		}
		skipped = append(skipped, e)
	}
}

// expectError reads the next event and checks it is an error with code.
func (cl *client) expectError(code string) event {
	cl.t.Helper()
	e := cl.expect("error")[0].obj("error")
	if got, _ := e["code"].(string); got != code {
		cl.t.Fatalf("error code = %v (%v), want %s", e["code"], e, code)
	}
	return e
}

// expectClose reads until the server's close frame and returns its code.
func (cl *client) expectClose() (int, string) {
	cl.t.Helper()
	_ = cl.ws.SetReadDeadline(time.Now().Add(waitFor))
	for {
		_, b, err := cl.ws.ReadMessage()
		if err == nil {
			cl.t.Logf("frame before close: %s", b)
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			cl.t.Fatalf("read: %v, want a close frame", err)
		}
		return ce.Code, ce.Text
	}
}

// waitDone waits until the server side of the connection has ended.
func waitDone(t *testing.T, c *Conn) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(waitFor):
		t.Fatal("connection did not end")
	}
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}
