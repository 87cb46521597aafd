package bridge

import (
	"errors"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/vivi/bridge/bridge/internal/jsonscan"
	"github.com/vivi/bridge/bridge/internal/wsframe"
	"github.com/vivi/bridge/bridge/realtime"
)

// twKind is the kind of an inbound Twilio message.
type twKind uint8

const (
	twMedia twKind = iota
	twMark
	twDTMF
	twStart
	twStop
	twConnected
	twBinary
	twMalformed
	twUnknown
	twBadPayload
)

// twilioMsg is what the Twilio reader hands the loop.
type twilioMsg struct {
	kind      twKind
	buf       *[]byte // twMedia: the model's append event, ready to send
	audio     int     // twMedia: audio bytes
	seq       uint64  // twMark: our mark number
	markOK    bool    // twMark: the name was one of ours
	text      string  // twDTMF: digit; twUnknown: event; twMalformed: error
	start     *twilioStart
	streamSID string
}

// ReasonTwilioProtocol ends a call whose Twilio socket broke RFC 6455 (or
// sent a message over twilioLimit): not a caller's hang-up or a network
// drop, and answered with close code 1002, 1007 or 1009.
const ReasonTwilioProtocol = "twilio_protocol_error"

// twilioCloseWait bounds how long the writer waits for Twilio's answer to
// our close frame before closing the TCP connection.
const twilioCloseWait = time.Second

// newTwilioConn takes the Twilio socket over from gorilla after the
// upgrade: from here on wsframe owns every frame of it, both ways, so that
// pings are answered, every write has the one deadline policy, and a
// protocol error is answered with its close code. It reads through
// gorilla's buffer, which may hold what Twilio sent right after the 101.
func newTwilioConn(ws *websocket.Conn, cfg *Config) *wsframe.Conn {
	return wsframe.NewConn(ws.NetConn(), wsframe.HandshakeReader(ws), wsframe.Config{
		ReadBuffer: twilioReadBuffer, ReadLimit: twilioLimit,
		WriteTimeout: cfg.WriteTimeout, CloseWait: twilioCloseWait,
	})
}

// readTwilio is the Twilio socket's only reader. It does the per-frame work
// (media becomes a ready-made model event) so that the loop only routes.
// Pings are answered from inside twc.Next, through twc's write path.
func (c *call) readTwilio() {
	defer c.wg.Done()
	r := c.twc
	var buf []byte
	var refreshed time.Time
	for {
		// Twilio sends media every 20 ms: silence means the socket is dead.
		// The deadline moves at most once a second, not per frame.
		if now := time.Now(); now.Sub(refreshed) >= time.Second {
			refreshed = now
			_ = r.SetReadDeadline(now.Add(c.cfg.TwilioIdleTimeout))
		}
		typ, msg, err := r.Next(buf)
		buf = msg
		if err != nil {
			select {
			case c.twDone <- err:
			case <-c.done:
			}
			return
		}
		m := c.parseTwilio(typ, buf)
		select {
		case c.twIn <- m:
		case <-c.done:
			c.srv.pool.put(m.buf)
			return
		}
	}
}

// twilioReadBuffer is the read buffer of a Twilio socket: a media message
// is about 330 bytes, a mark echo about 100; longer messages are read
// around it.
const twilioReadBuffer = 1024

// parseTwilio classifies one inbound message: the fast path for media and
// marks, encoding/json for the rest.
func (c *call) parseTwilio(typ int, b []byte) twilioMsg {
	if typ != websocket.TextMessage {
		return twilioMsg{kind: twBinary}
	}
	fb := c.srv.pool.get()
	out, f, n, ok := twilioToModel(*fb, b)
	if ok {
		*fb = out
		return twilioMsg{kind: twMedia, buf: fb, audio: n}
	}
	var full *twilioMessage
	if f.event == nil {
		var err error
		if f, full, err = decodeTwilio(b); err != nil {
			c.srv.pool.put(fb)
			return twilioMsg{kind: twMalformed, text: clip(err.Error(), 120)}
		}
	}
	switch string(f.event) {
	case "media":
		if n, ok := jsonscan.Base64(f.payload); ok {
			*fb = realtime.AppendInputAudio((*fb)[:0], f.payload)
			return twilioMsg{kind: twMedia, buf: fb, audio: n}
		}
		c.srv.pool.put(fb)
		return twilioMsg{kind: twBadPayload}
	}
	c.srv.pool.put(fb)
	switch string(f.event) {
	case "mark":
		seq, ok := parseMark(f.mark)
		return twilioMsg{kind: twMark, seq: seq, markOK: ok}
	case "dtmf":
		return twilioMsg{kind: twDTMF, text: string(f.digit)}
	case "start":
		if full == nil {
			var err error
			if _, full, err = decodeTwilio(b); err != nil {
				return twilioMsg{kind: twMalformed, text: clip(err.Error(), 120)}
			}
		}
		if full.Start == nil {
			return twilioMsg{kind: twMalformed, text: "start message without start object"}
		}
		return twilioMsg{kind: twStart, start: full.Start, streamSID: full.StreamSID}
	case "stop":
		return twilioMsg{kind: twStop}
	case "connected":
		return twilioMsg{kind: twConnected}
	}
	return twilioMsg{kind: twUnknown, text: clip(string(f.event), 40)}
}

// writeTwilio is the Twilio socket's data writer. When the call ends it
// sends the close frame (the reader's protocol error code if it met one)
// and closes the socket, which ends the reader.
func (c *call) writeTwilio() {
	defer c.wg.Done()
	defer func() {
		select {
		case <-c.done: // the loop set the close code before closing done
			_ = c.twc.Close(c.closeCode, c.closeText)
		default: // a write failed: twc sends no close frame on a broken stream
			_ = c.twc.Close(websocket.CloseAbnormalClosure, "")
		}
	}()
	for {
		select {
		case <-c.done:
			return
		case f := <-c.twOut:
			if err := c.writeTwilioFrames(f); err != nil {
				// The reader fails next and reports it to the loop. (c.log
				// belongs to the loop: not used here.)
				c.srv.log.Debug("twilio write failed", zap.Error(err))
				return
			}
		}
	}
}

// writeBatch bounds the bytes one write gathers from a writer's queue.
const writeBatch = 32 << 10

// writeTwilioFrames writes f and whatever else is queued already as
// websocket frames in one system call: a chunk's media and mark always go
// together, and a backlog drains in a few writes instead of one per message.
func (c *call) writeTwilioFrames(f outFrame) error {
	wb := c.srv.pool.get()
	b := appendOutFrame(*wb, f, wsframe.AppendText)
	c.srv.pool.put(f.buf)
gather:
	for len(b) < writeBatch {
		select {
		case f := <-c.twOut:
			b = appendOutFrame(b, f, wsframe.AppendText)
			c.srv.pool.put(f.buf)
		default:
			break gather
		}
	}
	err := c.twc.WriteFrames(b) // with the write deadline, after a pong that is due
	*wb = b
	c.srv.pool.put(wb)
	return err
}

// appendOutFrame appends the message(s) of f as frames made by frame.
func appendOutFrame(dst []byte, f outFrame, frame func(dst, p []byte) []byte) []byte {
	b := *f.buf
	if f.split > 0 {
		dst = frame(dst, b[:f.split])
		b = b[f.split:]
	}
	return frame(dst, b)
}

// onTwilio handles one inbound Twilio message on the loop.
func (c *call) onTwilio(m twilioMsg) {
	switch m.kind {
	case twMedia:
		c.onCallerAudio(m)
	case twMark:
		if !m.markOK {
			c.anomaly("mark", "twilio echoed a mark that is not ours; ignored")
			return
		}
		c.play.echo(m.seq, c.now())
		c.checkWaits()
	case twDTMF:
		c.onDigit(m.text)
	case twStart:
		c.onStart(m)
	case twStop:
		c.log.Info("twilio stopped the stream")
		c.end(ReasonCallerHangup)
	case twConnected:
		c.log.Debug("twilio connected")
	case twBinary:
		c.anomaly("binary", "twilio sent a binary websocket frame; ignored")
	case twMalformed:
		c.anomaly("malformed", "malformed twilio message ignored", zap.String("error", m.text))
	case twUnknown:
		c.anomaly("unknown", "unknown twilio event ignored", zap.String("event", m.text))
	case twBadPayload:
		c.anomaly("payload", "twilio media payload is not base64; frame dropped")
	}
}

// onCallerAudio forwards caller audio, or holds it while the model is not
// ready (set-up, dial, session.update, re-dial).
func (c *call) onCallerAudio(m twilioMsg) {
	if c.phase == awaitingStart {
		c.srv.pool.put(m.buf)
		c.anomaly("early_media", "twilio media before start; dropped")
		return
	}
	c.framesIn++
	c.srv.metrics.framesIn.Inc()
	if c.model != nil && c.model.ready && c.held.len() == 0 {
		c.sentCaller(*m.buf)
		c.toModel(m.buf)
		return
	}
	c.held.push(heldChunk{buf: m.buf, audio: m.audio}, c.srv.pool.put)
	c.flushHeld() // a flush that did not fit goes on, in order
}

// onTwilioClosed handles the end of the Twilio socket.
func (c *call) onTwilioClosed(err error) {
	// The reader queued everything it read before it reported the close, but
	// the loop's select may take the close first: handle what is queued
	// (a stop among it makes this a hang-up, not a drop).
	for c.endReason == "" {
		select {
		case m := <-c.twIn:
			c.onTwilio(m)
			continue
		default:
		}
		break
	}
	c.probes.fail() // the socket is gone: whatever the loop still does, it is not live
	if c.endReason != "" {
		return
	}
	if !c.accepted {
		if c.endReason == "" {
			c.log.Info("twilio closed the media stream before it was accepted", zap.Error(err))
			c.endReason = "closed_early"
		}
		return
	}
	if code := wsframe.CloseCode(err); code != 0 {
		// Recorded as what it is, not as the caller's disconnect.
		c.log.Warn("twilio broke the websocket protocol: closing", zap.Int("code", code), zap.Error(err))
		c.end(ReasonTwilioProtocol)
		return
	}
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		c.log.Info("twilio closed the websocket without stop", zap.Int("code", ce.Code), zap.String("text", ce.Text))
	} else {
		c.log.Info("twilio websocket dropped without stop", zap.Error(err))
	}
	c.end(ReasonTwilioDisconnected)
}

// clip bounds a string from outside before it is logged.
func clip(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return s
}
