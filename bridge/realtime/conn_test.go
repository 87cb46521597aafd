package realtime

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestEndpointURL(t *testing.T) {
	tests := map[string]struct {
		base, model, want string
		err               bool
	}{
		"openai":        {base: "wss://api.openai.com/v1/realtime", model: "gpt-realtime-mini", want: "wss://api.openai.com/v1/realtime?model=gpt-realtime-mini"},
		"default model": {base: "wss://api.openai.com/v1/realtime", want: "wss://api.openai.com/v1/realtime?model=gpt-realtime"},
		"azure":         {base: "wss://res.openai.azure.com/openai/v1/realtime", model: "my deployment", want: "wss://res.openai.azure.com/openai/v1/realtime?model=my+deployment"},
		"https mapped":  {base: "https://x.example/v1/realtime", model: "m", want: "wss://x.example/v1/realtime?model=m"},
		"fake":          {base: "ws://127.0.0.1:9/v1/realtime", model: "m", want: "ws://127.0.0.1:9/v1/realtime?model=m"},
		"bad scheme":    {base: "ftp://x/v1", err: true},
		"no host":       {base: "wss:///v1", err: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			u, err := EndpointURL(tc.base, tc.model)
			if tc.err {
				if err == nil {
					t.Fatalf("got %v, want an error", u)
				}
				return
			}
			if err != nil || u.String() != tc.want {
				t.Fatalf("got %v %v, want %s", u, err, tc.want)
			}
		})
	}
}

func TestAuthHeader(t *testing.T) {
	tests := map[string]struct {
		host       string
		bearer     bool
		apiKeyHead bool
	}{
		"openai":          {host: "api.openai.com", bearer: true},
		"azure openai":    {host: "res.openai.azure.com", apiKeyHead: true},
		"azure services":  {host: "res.cognitiveservices.azure.com", apiKeyHead: true},
		"azure with port": {host: "res.openai.azure.com:443", apiKeyHead: true},
		"look-alike":      {host: "evilazure.com", bearer: true},
		"loopback":        {host: "127.0.0.1", bearer: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := AuthHeader(tc.host, "k1")
			if (h.Get("Authorization") == "Bearer k1") != tc.bearer || (h.Get("api-key") == "k1") != tc.apiKeyHead {
				t.Fatalf("headers = %v", h)
			}
			if h.Get("OpenAI-Beta") != "" {
				t.Fatal("OpenAI-Beta header sent")
			}
		})
	}
}

// echoServer accepts one websocket, records the handshake and runs serve.
func echoServer(t *testing.T, serve func(ws *websocket.Conn)) (*httptest.Server, chan *http.Request) {
	t.Helper()
	reqs := make(chan *http.Request, 1)
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("model") == "refuse" {
			http.Error(w, `{"error":{"type":"invalid_request_error","code":"invalid_api_key","message":"Incorrect API key provided: sk-sec***ret."}}`, http.StatusUnauthorized)
			return
		}
		reqs <- r
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		serve(ws)
	}))
	t.Cleanup(srv.Close)
	return srv, reqs
}

func TestDialReadWrite(t *testing.T) {
	srv, reqs := echoServer(t, func(ws *websocket.Conn) {
		_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"session.created"}`))
		_ = ws.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3})
		_, msg, err := ws.ReadMessage()
		if err != nil {
			return
		}
		_ = ws.WriteMessage(websocket.TextMessage, msg) // echo
		_, _, _ = ws.ReadMessage()                      // until the client closes
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, Config{URL: "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/realtime", APIKey: "sk-test", Model: "gpt-realtime"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := <-reqs
	if r.URL.Query().Get("model") != "gpt-realtime" || r.Header.Get("Authorization") != "Bearer sk-test" || r.Header.Get("OpenAI-Beta") != "" {
		t.Fatalf("handshake: %v %v", r.URL, r.Header)
	}
	buf := make([]byte, 0, 4)
	msg, err := c.Read(buf)
	if err != nil || string(msg) != `{"type":"session.created"}` {
		t.Fatalf("read %q %v", msg, err)
	}
	if _, err := c.Read(msg); err != ErrBinaryMessage {
		t.Fatalf("binary: %v", err)
	}
	ev := AppendInputAudio(nil, []byte(base64.StdEncoding.EncodeToString([]byte("abc"))))
	if err := c.Write(ev); err != nil {
		t.Fatal(err)
	}
	if msg, err = c.Read(msg); err != nil || string(msg) != string(ev) {
		t.Fatalf("echo %q %v", msg, err)
	}
	if err := c.Ping(); err != nil {
		t.Fatal(err)
	}
}

func TestDialRefused(t *testing.T) {
	srv, _ := echoServer(t, func(*websocket.Conn) {})
	_, err := Dial(context.Background(), Config{URL: "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/realtime", APIKey: "sk-secret", Model: "refuse"})
	if err == nil || !strings.Contains(err.Error(), "HTTP 401") || !strings.Contains(err.Error(), "invalid_api_key") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "sk-sec") {
		t.Fatal("the key leaked into the error")
	}
}

// TestReadLimit: an event over the limit fails the read and Close tells
// the model why: close code 1009 (changed from a text match on gorilla's
// "read limit" error; issue 9 asks for 1009 on the wire).
func TestReadLimit(t *testing.T) {
	closed := make(chan error, 1)
	srv, _ := echoServer(t, func(ws *websocket.Conn) {
		_ = ws.WriteMessage(websocket.TextMessage, make([]byte, 2048))
		_, _, err := ws.ReadMessage()
		closed <- err
	})
	c, err := Dial(context.Background(), Config{URL: "ws" + strings.TrimPrefix(srv.URL, "http"), Model: "m", ReadLimit: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Read(nil); !errors.Is(err, websocket.ErrReadLimit) {
		t.Fatalf("err = %v", err)
	}
	_ = c.Close()
	if err := <-closed; !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
		t.Fatalf("the model saw %v, want close 1009", err)
	}
}

func TestScanAudioDelta(t *testing.T) {
	tests := map[string]struct {
		in          string
		ok          bool
		typ, item   string
		deltaPrefix string
	}{
		"delta":        {in: `{"type":"response.output_audio.delta","event_id":"e","response_id":"r","item_id":"it","output_index":0,"content_index":0,"delta":"AAAA"}`, ok: true, typ: TypeAudioDelta, item: "it", deltaPrefix: "AAAA"},
		"delta first":  {in: `{"delta":"BBBB","item_id":"x","type":"response.output_audio.delta"}`, ok: true, typ: TypeAudioDelta, item: "x", deltaPrefix: "BBBB"},
		"other":        {in: `{"type":"response.done","response":{"id":"r","output":[{"a":1}]}}`, typ: "response.done"},
		"escaped":      {in: `{"type":"response.output_audio.delta","item_id":"i","delta":"AA\/A"}`, typ: TypeAudioDelta},
		"missing item": {in: `{"type":"response.output_audio.delta","delta":"AAAA"}`, typ: TypeAudioDelta},
		"garbage":      {in: `{"type":`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			typ, item, delta, ok := ScanAudioDelta([]byte(tc.in))
			if ok != tc.ok || string(typ) != tc.typ {
				t.Fatalf("ok=%v typ=%q", ok, typ)
			}
			if ok && (string(item) != tc.item || string(delta) != tc.deltaPrefix) {
				t.Fatalf("item=%q delta=%q", item, delta)
			}
		})
	}
}

func TestParseEvent(t *testing.T) {
	ev, err := ParseEvent([]byte(`{"type":"error","event_id":"e","error":{"type":"invalid_request_error","code":null,"message":"Audio content of 9800ms is already shorter than 11579ms","param":null,"event_id":null}}`))
	if err != nil || ev.Error == nil || ev.Error.Code != "" || !strings.Contains(ev.Error.Message, "already shorter") {
		t.Fatalf("%+v %v", ev, err)
	}
	ev, err = ParseEvent([]byte(`{"type":"response.output_item.done","response_id":"r","output_index":1,"item":{"id":"fc1","object":"realtime.item","type":"function_call","status":"completed","call_id":"call_1","name":"end_call","arguments":"{}"}}`))
	if err != nil || ev.Item == nil || ev.Item.CallID != "call_1" || ev.Item.Name != "end_call" {
		t.Fatalf("%+v %v", ev, err)
	}
	if _, err := ParseEvent([]byte(`{"no":"type"}`)); err == nil {
		t.Fatal("event without type accepted")
	}
}
