package realtimetest

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

func TestHandshakeRejections(t *testing.T) {
	tests := map[string]struct {
		azure  bool
		path   string
		header http.Header
		status int
		code   string
	}{
		"no model": {
			path: "", header: authHeader(), status: http.StatusBadRequest, code: "missing_required_parameter",
		},
		"no auth": {
			path: "?model=gpt-realtime", header: http.Header{}, status: http.StatusUnauthorized, code: "invalid_api_key",
		},
		"wrong key": {
			path: "?model=gpt-realtime", header: http.Header{"Authorization": {"Bearer nope"}},
			status: http.StatusUnauthorized, code: "invalid_api_key",
		},
		"api-key header without Azure": {
			path: "?model=gpt-realtime", header: http.Header{"Api-Key": {DefaultAPIKey}},
			status: http.StatusUnauthorized, code: "invalid_api_key",
		},
		"Azure without key": {
			azure: true, path: "?model=gpt-realtime", header: http.Header{"Api-Key": {"nope"}},
			status: http.StatusUnauthorized, code: "invalid_api_key",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			s := newServer(t, Options{Azure: tt.azure})
			ws, resp, err := websocket.DefaultDialer.Dial(s.URL()+tt.path, tt.header)
			if err == nil {
				_ = ws.Close()
				t.Fatal("handshake accepted, want refused")
			}
			if !errors.Is(err, websocket.ErrBadHandshake) || resp == nil {
				t.Fatalf("dial error = %v, want a bad handshake", err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.status)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			body, _ := io.ReadAll(resp.Body)
			var got struct {
				Error struct {
					Type, Code, Message string
				}
			}
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("body %q is not JSON: %v", body, err)
			}
			if got.Error.Code != tt.code || got.Error.Type != "invalid_request_error" || got.Error.Message == "" {
				t.Errorf("error = %+v, want invalid_request_error %s", got.Error, tt.code)
			}
			if len(s.Conns()) != 0 {
				t.Errorf("a refused handshake was recorded as a connection")
			}
		})
	}
}

func TestBetaHeaderClosed4000(t *testing.T) {
	s := newServer(t, Options{})
	h := authHeader()
	h.Set("OpenAI-Beta", "realtime=v1")
	cl := dialWith(t, s.URL()+"?model=gpt-realtime", h)

	e := cl.expectError("beta_api_shape_disabled")
	if !strings.Contains(e["message"].(string), "no longer supported") {
		t.Errorf("message = %q", e["message"])
	}
	if code, _ := cl.expectClose(); code != 4000 {
		t.Errorf("close code = %d, want 4000", code)
	}
	c, err := s.NextConn(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, c)
}

func TestAzureAPIKeyAndPath(t *testing.T) {
	s := newServer(t, Options{Azure: true, APIKey: "azure-key"})
	url := strings.Replace(s.URL(), Path, "/openai/v1/realtime", 1) + "?model=my-deployment"
	cl := dialWith(t, url, http.Header{"api-key": {"azure-key"}})
	cl.expect("session.created")
	c, err := s.NextConn(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if c.Model() != "my-deployment" {
		t.Errorf("Model() = %q, want my-deployment", c.Model())
	}
	if got := c.Header().Get("api-key"); got != "azure-key" {
		t.Errorf("Header api-key = %q", got)
	}
}

func TestNextConnInAcceptanceOrder(t *testing.T) {
	s := newServer(t, Options{})
	first := dialWith(t, s.URL()+"?model=one", authHeader())
	first.expect("session.created")
	second := dialWith(t, s.URL()+"?model=two", authHeader())
	second.expect("session.created")

	for _, want := range []string{"one", "two"} {
		c, err := s.NextConn(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if c.Model() != want {
			t.Errorf("NextConn model = %q, want %q", c.Model(), want)
		}
	}
	if n := len(s.Conns()); n != 2 {
		t.Errorf("Conns() has %d, want 2", n)
	}
}

func TestCloseEndsConnections(t *testing.T) {
	s := NewServer(Options{})
	cl, c := dial(t, s)
	cl.expect("session.created")
	s.Close()
	waitDone(t, c)
	if _, _, err := cl.ws.ReadMessage(); err == nil {
		t.Error("client still reads after Server.Close")
	}
	if _, err := s.NextConn(ctx(t)); err == nil {
		t.Error("NextConn after Close returned a connection")
	}
	s.Close() // idempotent
}

func TestClientCloseEndsConn(t *testing.T) {
	s := newServer(t, Options{})
	cl, c := dial(t, s)
	cl.expect("session.created")
	_ = cl.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	waitDone(t, c)
	if _, err := c.WaitEvent(ctx(t), "response.create", 1); err == nil {
		t.Error("WaitEvent on an ended connection returned no error")
	}
}
