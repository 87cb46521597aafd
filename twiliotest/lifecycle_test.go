package twiliotest

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestProtocolErrorsAreRecordedLikeTwilio(t *testing.T) {
	const sid = "MZproto"
	tests := map[string]struct {
		binary bool
		raw    string
		want   string // substring of the one protocol error; empty: valid
	}{
		"valid media":              {raw: `{"event":"media","streamSid":"MZproto","media":{"payload":"AAAA"}}`},
		"valid clear":              {raw: `{"event":"clear","streamSid":"MZproto"}`},
		"binary frame":             {binary: true, raw: "\x7f\x7f", want: "31950"},
		"invalid JSON":             {raw: `{"event":`, want: "31951"},
		"not an object":            {raw: `[1]`, want: "not a JSON object"},
		"unknown event":            {raw: `{"event":"play","streamSid":"MZproto"}`, want: `unknown event "play"`},
		"missing event":            {raw: `{"streamSid":"MZproto"}`, want: `missing field "event"`},
		"event not a string":       {raw: `{"event":1,"streamSid":"MZproto"}`, want: "want a JSON string"},
		"wrong streamSid":          {raw: `{"event":"media","streamSid":"MZother","media":{"payload":"AAAA"}}`, want: "does not match"},
		"missing streamSid":        {raw: `{"event":"clear"}`, want: `missing field "streamSid"`},
		"streamSid not a string":   {raw: `{"event":"clear","streamSid":7}`, want: "want a JSON string"},
		"extra top-level field":    {raw: `{"event":"media","sequenceNumber":"1","streamSid":"MZproto","media":{"payload":"AAAA"}}`, want: `unexpected fields ["sequenceNumber"]`},
		"extra media field":        {raw: `{"event":"media","streamSid":"MZproto","media":{"track":"outbound","payload":"AAAA"}}`, want: `unexpected fields ["track"]`},
		"media not an object":      {raw: `{"event":"media","streamSid":"MZproto","media":"AAAA"}`, want: "want a JSON object"},
		"payload a number":         {raw: `{"event":"media","streamSid":"MZproto","media":{"payload":12}}`, want: "want a JSON string"},
		"payload null":             {raw: `{"event":"media","streamSid":"MZproto","media":{"payload":null}}`, want: "want a JSON string"},
		"payload not base64":       {raw: `{"event":"media","streamSid":"MZproto","media":{"payload":"!!!"}}`, want: "not base64"},
		"payload empty":            {raw: `{"event":"media","streamSid":"MZproto","media":{"payload":""}}`, want: "empty media.payload"},
		"missing media":            {raw: `{"event":"media","streamSid":"MZproto"}`, want: `missing field "media"`},
		"mark without name":        {raw: `{"event":"mark","streamSid":"MZproto","mark":{}}`, want: `missing field "name"`},
		"mark name a number":       {raw: `{"event":"mark","streamSid":"MZproto","mark":{"name":3}}`, want: "want a JSON string"},
		"mark a string":            {raw: `{"event":"mark","streamSid":"MZproto","mark":"x"}`, want: "want a JSON object"},
		"clear with extra field":   {raw: `{"event":"clear","streamSid":"MZproto","media":{}}`, want: `unexpected fields ["media"]`},
		"mark with sequenceNumber": {raw: `{"event":"mark","sequenceNumber":"2","streamSid":"MZproto","mark":{"name":"x"}}`, want: "unexpected fields"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			b := newFakeBridge(t, 0)
			c, bc := dial(t, b, CallConfig{StreamSID: sid})
			typ := websocket.TextMessage
			if tc.binary {
				typ = websocket.BinaryMessage
			}
			bc.sendRaw(t, typ, []byte(tc.raw))
			bc.sendMark(t, sid, "barrier") // a valid message after it: when it is seen, so was the first
			if _, err := c.WaitMessage(ctxT(t), func(m Message) bool { return m.Mark == "barrier" }); err != nil {
				t.Fatal(err)
			}
			errs := c.ProtocolErrors()
			if tc.want == "" {
				if len(errs) != 0 {
					t.Fatalf("ProtocolErrors = %q, want none", errs)
				}
				return
			}
			if len(errs) != 1 || !strings.Contains(errs[0], tc.want) {
				t.Fatalf("ProtocolErrors = %q, want one containing %q", errs, tc.want)
			}
			if len(c.ReceivedAudio()) != 0 || len(c.Clears()) != 0 {
				t.Error("an invalid message was acted on")
			}
			msgs := c.Messages()
			if !tc.binary && (len(msgs) != 2 || msgs[0].Err != errs[0] || msgs[1].Err != "") {
				t.Errorf("Messages = %+v", msgs)
			}
		})
	}
}

func TestStopSendsStopThenCloses(t *testing.T) {
	b := newFakeBridge(t, 0)
	c, bc := dial(t, b, CallConfig{AccountSID: testAccount, CallSID: "CAstop", StreamSID: "MZstop"})
	skipHandshakeMessages(t, bc)
	m, _ := bc.next(t) // a media frame
	last, _ := strconv.Atoi(m["sequenceNumber"].(string))
	c.Stop()
	for {
		m, _ = bc.next(t)
		if m["event"] != "media" {
			break
		}
		last, _ = strconv.Atoi(m["sequenceNumber"].(string))
	}
	if got := keys(t, m); got != "event,sequenceNumber,stop,streamSid" {
		t.Errorf("stop keys = %s", got)
	}
	stop := m["stop"].(map[string]any)
	if got := keys(t, stop); got != "accountSid,callSid" {
		t.Errorf("stop.stop keys = %s", got)
	}
	if m["event"] != "stop" || m["streamSid"] != "MZstop" || stop["accountSid"] != testAccount || stop["callSid"] != "CAstop" ||
		m["sequenceNumber"] != strconv.Itoa(last+1) {
		t.Errorf("stop = %v after sequence %d", m, last)
	}
	err := bc.waitEnd(t) // nothing but the close may follow stop
	if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Errorf("server read ended with %v, want a normal close", err)
	}
	waitDone(t, c)
	if c.Err() != nil || c.ClosedByServer() {
		t.Errorf("Err = %v, ClosedByServer = %v", c.Err(), c.ClosedByServer())
	}
	c.Stop() // idempotent
	c.Digit("1")
}

func TestServerEndsTheStream(t *testing.T) {
	tests := map[string]struct {
		end     func(bc *bridgeConn)
		wantErr bool
	}{
		"normal close": {end: func(bc *bridgeConn) {
			bc.wmu.Lock()
			defer bc.wmu.Unlock()
			_ = bc.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"))
		}},
		"close with error code": {end: func(bc *bridgeConn) {
			bc.wmu.Lock()
			defer bc.wmu.Unlock()
			_ = bc.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseInternalServerErr, "oops"))
		}, wantErr: true},
		"connection dropped": {end: func(bc *bridgeConn) { _ = bc.ws.Close() }, wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			b := newFakeBridge(t, 0)
			c, bc := dial(t, b, CallConfig{})
			skipHandshakeMessages(t, bc)
			tc.end(bc)
			waitDone(t, c)
			if (c.Err() != nil) != tc.wantErr || !c.ClosedByServer() {
				t.Errorf("Err = %v, ClosedByServer = %v", c.Err(), c.ClosedByServer())
			}
			if _, err := c.WaitMessage(ctxT(t), func(Message) bool { return false }); !errors.Is(err, ErrCallEnded) {
				t.Errorf("WaitMessage after the end = %v, want ErrCallEnded", err)
			}
			if err := c.WaitPlayedBytes(ctxT(t), 1); !errors.Is(err, ErrCallEnded) {
				t.Errorf("WaitPlayedBytes after the end = %v, want ErrCallEnded", err)
			}
		})
	}
}

func TestCloseDropsTheConnectionWithoutStop(t *testing.T) {
	b := newFakeBridge(t, 0)
	c, bc := dial(t, b, CallConfig{})
	skipHandshakeMessages(t, bc)
	c.Close()
	waitDone(t, c)
	for {
		select {
		case r, ok := <-bc.in:
			if !ok {
				if !websocket.IsCloseError(bc.endErr, websocket.CloseAbnormalClosure) {
					t.Errorf("server read ended with %v, want an abnormal closure", bc.endErr)
				}
				if c.Err() != nil || c.ClosedByServer() {
					t.Errorf("Err = %v, ClosedByServer = %v", c.Err(), c.ClosedByServer())
				}
				return
			}
			if strings.Contains(string(r.data), `"stop"`) {
				t.Fatal("Close sent stop")
			}
		case <-time.After(waitTime):
			t.Fatal("server did not see the drop")
		}
	}
}

func TestWaitMessageHonoursContext(t *testing.T) {
	b := newFakeBridge(t, 0)
	c, _ := dial(t, b, CallConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := c.WaitMessage(ctx, func(Message) bool { return false }); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitMessage = %v, want the context's error", err)
	}
}

// waitDone waits for the call's Done.
func waitDone(t *testing.T, c *Call) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(waitTime):
		t.Fatal("call did not end")
	}
}
