package twiliotest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// waitTime bounds every wait in these tests: generous, so -race on two cores
// does not flake.
const waitTime = 5 * time.Second

// fakeBridge is a tiny websocket server standing in for the bridge.
type fakeBridge struct {
	srv    *httptest.Server
	conns  chan *bridgeConn
	status int // when not 0, refuse the handshake with this status
	wg     sync.WaitGroup
}

// bridgeConn is the server side of one stream.
type bridgeConn struct {
	ws     *websocket.Conn
	header http.Header
	in     chan received // every frame from the client; closed when reading ends
	endErr error         // the read error that ended reading (valid after in is closed)
	wmu    sync.Mutex
}

// received is one frame the fake bridge read.
type received struct {
	at   time.Time
	typ  int
	data []byte
}

func newFakeBridge(t *testing.T, refuse int) *fakeBridge {
	t.Helper()
	b := &fakeBridge{conns: make(chan *bridgeConn, 4), status: refuse}
	upgrader := websocket.Upgrader{}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b.status != 0 {
			http.Error(w, "refused", b.status)
			return
		}
		ws, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		bc := &bridgeConn{ws: ws, header: r.Header.Clone(), in: make(chan received, 4096)}
		b.wg.Add(1)
		go func() { // read until the socket ends
			defer b.wg.Done()
			defer close(bc.in)
			for {
				typ, data, err := ws.ReadMessage()
				if err != nil {
					bc.endErr = err
					return
				}
				select {
				case bc.in <- received{at: time.Now(), typ: typ, data: data}:
				default:
					t.Errorf("fake bridge: inbound buffer full")
				}
			}
		}()
		b.conns <- bc
	}))
	t.Cleanup(func() {
		b.srv.CloseClientConnections()
		b.srv.Close()
		b.wg.Wait()
	})
	return b
}

// wsURL is the ws:// URL of the fake bridge's stream endpoint.
func (b *fakeBridge) wsURL() string {
	return "ws" + strings.TrimPrefix(b.srv.URL, "http") + "/twilio/stream"
}

// accept returns the server side of the next stream.
func (b *fakeBridge) accept(t *testing.T) *bridgeConn {
	t.Helper()
	select {
	case bc := <-b.conns:
		t.Cleanup(func() { _ = bc.ws.Close() })
		return bc
	case <-time.After(waitTime):
		t.Fatal("fake bridge: no stream connected")
		return nil
	}
}

// send writes a JSON text message.
func (bc *bridgeConn) send(t *testing.T, v any) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	bc.sendRaw(t, websocket.TextMessage, data)
}

func (bc *bridgeConn) sendRaw(t *testing.T, typ int, data []byte) {
	t.Helper()
	bc.wmu.Lock()
	defer bc.wmu.Unlock()
	if err := bc.ws.WriteMessage(typ, data); err != nil {
		t.Fatalf("fake bridge: write: %v", err)
	}
}

func (bc *bridgeConn) sendMedia(t *testing.T, sid string, audio []byte) {
	t.Helper()
	bc.send(t, map[string]any{"event": "media", "streamSid": sid,
		"media": map[string]any{"payload": base64.StdEncoding.EncodeToString(audio)}})
}

func (bc *bridgeConn) sendMark(t *testing.T, sid, name string) {
	t.Helper()
	bc.send(t, map[string]any{"event": "mark", "streamSid": sid, "mark": map[string]any{"name": name}})
}

// next returns the next text message from the client, decoded.
func (bc *bridgeConn) next(t *testing.T) (map[string]any, time.Time) {
	t.Helper()
	select {
	case r, ok := <-bc.in:
		if !ok {
			t.Fatalf("fake bridge: stream ended: %v", bc.endErr)
		}
		if r.typ != websocket.TextMessage {
			t.Fatalf("fake bridge: got frame type %d, want text", r.typ)
		}
		var m map[string]any
		if err := json.Unmarshal(r.data, &m); err != nil {
			t.Fatalf("fake bridge: bad JSON %q: %v", r.data, err)
		}
		return m, r.at
	case <-time.After(waitTime):
		t.Fatal("fake bridge: no message")
		return nil, time.Time{}
	}
}

// nextEvent skips media messages and returns the next other message.
func (bc *bridgeConn) nextEvent(t *testing.T) (map[string]any, time.Time) {
	t.Helper()
	for {
		m, at := bc.next(t)
		if m["event"] != "media" {
			return m, at
		}
	}
}

// waitEnd waits until the client's socket has ended and returns the read error.
func (bc *bridgeConn) waitEnd(t *testing.T) error {
	t.Helper()
	deadline := time.After(waitTime)
	for {
		select {
		case _, ok := <-bc.in:
			if !ok {
				return bc.endErr
			}
		case <-deadline:
			t.Fatal("fake bridge: stream did not end")
		}
	}
}

// dial starts a call against b and registers its cleanup.
func dial(t *testing.T, b *fakeBridge, cfg CallConfig) (*Call, *bridgeConn) {
	t.Helper()
	cfg.URL = b.wsURL()
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	c, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() {
		c.Close()
		<-c.Done()
	})
	bc := b.accept(t)
	return c, bc
}

// ctxT returns a context bounded by waitTime.
func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	t.Cleanup(cancel)
	return ctx
}

// keys returns the sorted keys of a decoded JSON object, joined by commas.
func keys(t *testing.T, v any) string {
	t.Helper()
	obj, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("want a JSON object, got %T %v", v, v)
	}
	ks := make([]string, 0, len(obj))
	for k := range obj {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return strings.Join(ks, ",")
}
