package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/vivi/bridge/bridge/realtime"
)

// stamper is told when the echo model read a caller frame and when it
// wrote the echo, on the load's clock; nil when the model runs alone.
type stamper interface {
	now() int64
	stamp(h frameHeader, in, out int64)
}

// echoModel is a minimal OpenAI Realtime GA server for load: it answers
// every input_audio_buffer.append at once with a response.output_audio.delta
// carrying the same base64 audio, so that the delay the load measures is the
// bridge's own. It does no VAD. It answers session.update with
// session.updated and each response.create with a short spoken response
// (response.created, one delta of agentAudio, the audio and transcript done
// events, response.done), so that the greeting path of the bridge runs.
// Audio events take a fast path: no JSON decoding, one reused buffer, the
// reader goroutine writes the echo itself (one goroutine per connection).
type echoModel struct {
	key      string
	stamps   stamper
	ln       net.Listener
	srv      *http.Server
	upgrader websocket.Upgrader
	greeting []byte // base64
	reply    []byte
	ids      atomic.Uint64
	wg       sync.WaitGroup // Serve and every connection

	mu     sync.Mutex // guards closed and live
	closed bool
	live   map[*websocket.Conn]struct{} // hijacked: http.Server.Close does not end them
}

// startEchoModel listens on addr (loopback) and serves until Close.
func startEchoModel(addr, key string, stamps stamper) (*echoModel, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("echo model: %w", err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("echo model: %s is not a loopback address", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("echo model: %w", err)
	}
	m := &echoModel{
		key: key, stamps: stamps, ln: ln,
		upgrader: websocket.Upgrader{ReadBufferSize: 4096, WriteBufferSize: 4096, WriteBufferPool: &sync.Pool{}},
		greeting: agentAudio(800), // 100 ms
		reply:    agentAudio(160),
		live:     map[*websocket.Conn]struct{}{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/realtime", m.handle)
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		_ = m.srv.Serve(ln)
	}()
	return m, nil
}

// URL is the bridge's OPENAI_REALTIME_URL.
func (m *echoModel) URL() string { return "ws://" + m.ln.Addr().String() + "/v1/realtime" }

// Close stops the model and ends its connections.
func (m *echoModel) Close() {
	_ = m.srv.Close()
	m.mu.Lock()
	m.closed = true
	for ws := range m.live {
		_ = ws.Close()
	}
	m.mu.Unlock()
	m.wg.Wait()
}

func (m *echoModel) now() int64 {
	if m.stamps != nil {
		return m.stamps.now()
	}
	return time.Now().UnixNano()
}

func (m *echoModel) handle(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+m.key {
		http.Error(w, `{"error":{"type":"invalid_request_error","code":"invalid_api_key","message":"Incorrect API key provided."}}`, http.StatusUnauthorized)
		return
	}
	if r.URL.Query().Get("model") == "" {
		http.Error(w, `{"error":{"type":"invalid_request_error","code":"missing_required_parameter","message":"Missing required parameter: 'model'."}}`, http.StatusBadRequest)
		return
	}
	ws, err := m.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		_ = ws.Close()
		return
	}
	m.live[ws] = struct{}{}
	m.wg.Add(1)
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.live, ws)
		m.mu.Unlock()
		m.wg.Done()
	}()
	m.serve(ws, r.URL.Query().Get("model"))
}

var appendHead = []byte(`{"type":"input_audio_buffer.append","audio":"`)

// serve runs one connection until it ends.
func (m *echoModel) serve(ws *websocket.Conn, model string) {
	defer ws.Close()
	ws.SetReadLimit(1 << 20)
	c := &echoConn{m: m, ws: ws}
	c.event("session.created", `"session":{"object":"realtime.session","type":"realtime","id":"sess_`+
		strconv.FormatUint(m.ids.Add(1), 10)+`","model":`+strconv.Quote(model)+`}`)
	var buf []byte
	var refreshed time.Time
	for c.err == nil {
		if now := time.Now(); now.Sub(refreshed) >= time.Second {
			refreshed = now
			_ = ws.SetReadDeadline(now.Add(idleTimeout + 30*time.Second)) // the bridge pings every 20 s
			_ = ws.SetWriteDeadline(now.Add(writeTimeout))
		}
		_, r, err := ws.NextReader()
		if err == nil {
			buf, err = realtime.ReadAll(buf[:0], r)
		}
		if err != nil {
			return
		}
		if bytes.HasPrefix(buf, appendHead) && bytes.HasSuffix(buf, []byte(`"}`)) {
			c.echo(buf[len(appendHead) : len(buf)-2])
			continue
		}
		c.slow(buf)
	}
}

// echoConn is the state of one connection, owned by its goroutine.
type echoConn struct {
	m       *echoModel
	ws      *websocket.Conn
	out     []byte
	greeted bool
	err     error
}

// echo answers one append with a delta carrying the same audio.
func (c *echoConn) echo(audio []byte) {
	in := c.m.now()
	b := append(c.out[:0], `{"type":"response.output_audio.delta","event_id":"event_`...)
	b = strconv.AppendUint(b, c.m.ids.Add(1), 10)
	b = append(b, `","response_id":"resp_echo","item_id":"item_echo","output_index":0,"content_index":0,"delta":"`...)
	b = append(b, audio...)
	b = append(b, `"}`...)
	c.out = b
	if c.m.stamps != nil {
		if h, ok := readHeader(audio); ok && h.magic == magicCaller {
			c.m.stamps.stamp(h, in, c.m.now())
		}
	}
	c.write(b)
}

func (c *echoConn) write(b []byte) {
	if c.err == nil {
		c.err = c.ws.WriteMessage(websocket.TextMessage, b)
	}
}

// event writes a server event of typ with the JSON members fields.
func (c *echoConn) event(typ, fields string) {
	b := append(c.out[:0], `{"type":"`...)
	b = append(b, typ...)
	b = append(b, `","event_id":"event_`...)
	b = strconv.AppendUint(b, c.m.ids.Add(1), 10)
	b = append(b, '"')
	if fields != "" {
		b = append(b, ',')
		b = append(b, fields...)
	}
	b = append(b, '}')
	c.out = b
	c.write(b)
}

// slow handles the rare events: decoded with encoding/json.
func (c *echoConn) slow(msg []byte) {
	var ev struct {
		Type    string          `json:"type"`
		Audio   string          `json:"audio"`
		Session json.RawMessage `json:"session"`
	}
	if err := json.Unmarshal(msg, &ev); err != nil {
		c.event("error", `"error":{"type":"invalid_request_error","code":"invalid_event","message":"We could not parse the JSON body of your request."}`)
		return
	}
	switch ev.Type {
	case realtime.TypeInputAudioAppend: // an append the fast path did not take
		c.echo([]byte(ev.Audio))
	case realtime.TypeSessionUpdate:
		session := ev.Session
		if len(session) == 0 {
			session = json.RawMessage(`{}`)
		}
		c.event("session.updated", `"session":`+string(session))
	case realtime.TypeResponseCreate:
		c.respond()
	}
	// conversation.item.create, truncate, cancel: nothing to answer in echo mode.
}

// respond plays a whole response at once: the greeting the first time, a
// short reply after.
func (c *echoConn) respond() {
	id := strconv.FormatUint(c.m.ids.Add(1), 10)
	resp, item := `"resp_`+id+`"`, `"item_`+id+`"`
	audio := c.m.reply
	if !c.greeted {
		c.greeted, audio = true, c.m.greeting
	}
	c.event("response.created", `"response":{"object":"realtime.response","id":`+resp+`,"status":"in_progress","output":[]}`)
	where := `"response_id":` + resp + `,"item_id":` + item + `,"output_index":0,"content_index":0`
	c.event(realtime.TypeAudioDelta, where+`,"delta":"`+string(audio)+`"`)
	c.event(realtime.TypeAudioDone, where)
	c.event(realtime.TypeAudioTranscriptDone, where+`,"transcript":"Hello."`)
	c.event(realtime.TypeResponseDone, `"response":{"object":"realtime.response","id":`+resp+`,"status":"completed","output":[]}`)
}
