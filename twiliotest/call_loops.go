package twiliotest

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gorilla/websocket"
)

// readLoop is the only reader of the socket. When the socket ends it ends
// the call, waits for the writer and the media loop, and closes done.
func (c *Call) readLoop() {
	defer func() {
		c.wg.Wait()
		close(c.done)
	}()
	for {
		typ, data, err := c.conn.ReadMessage()
		if err != nil {
			c.readEnded(err)
			return
		}
		c.handle(time.Now(), typ, data)
	}
}

// readEnded ends the call after a read error and freezes the player.
func (c *Call) readEnded(err error) {
	var ce *websocket.CloseError
	switch {
	case isClosed(c.quit): // we ended it (Close, write error): keep that reason
	case c.stopSent.Load(): // the server answered our stop and close
		c.finish(nil, false)
	case errors.As(err, &ce) && (ce.Code == websocket.CloseNormalClosure ||
		ce.Code == websocket.CloseGoingAway || ce.Code == websocket.CloseNoStatusReceived):
		c.finish(nil, true)
	default:
		c.finish(fmt.Errorf("twiliotest: read: %w", err), true)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.player.advance(time.Now()) // what played until now counts; marks are no longer echoed
	c.ended = true
	c.notifyLocked()
}

// handle validates one message from the server and applies it to the player.
func (c *Call) handle(now time.Time, typ int, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.notifyLocked()
	if typ != websocket.TextMessage {
		c.protoErrs = append(c.protoErrs, fmt.Sprintf(
			"%s binary frame of %d bytes: send Media Streams messages as text", codeBinaryFrame, len(data)))
		return
	}
	msg, err := parseOutbound(data, c.cfg.StreamSID)
	msg.At = now
	payload := msg.Payload
	if c.cfg.DiscardAudio {
		msg.Payload = nil
	}
	if err != nil {
		msg.Err = err.Error()
		c.protoErrs = append(c.protoErrs, msg.Err)
		c.messages = append(c.messages, msg)
		return
	}
	c.messages = append(c.messages, msg)
	var echo []string
	switch msg.Event {
	case "media":
		echo = c.player.addAudio(now, payload)
	case "mark":
		echo = c.player.addMark(now, msg.Mark)
	case "clear":
		echo = c.player.clear(now)
	}
	c.echoLocked(echo)
	select { // the next mark may be due at a new time
	case c.kick <- struct{}{}:
	default:
	}
}

// echoLocked queues the echo of marks whose audio has played. c.mu must be
// held, so that echoes keep their order.
func (c *Call) echoLocked(names []string) {
	for _, name := range names {
		if c.enqueue(outMsg{kind: kindMarkEcho, name: name}) {
			c.echoed = append(c.echoed, name)
			c.echoedAt = append(c.echoedAt, time.Now())
		}
	}
}

// mediaLoop sends caller frames at the frame cadence and echoes marks when
// their audio has played.
func (c *Call) mediaLoop() {
	defer c.wg.Done()
	frames := time.NewTicker(c.cfg.FrameInterval)
	defer frames.Stop()
	markDue := time.NewTimer(time.Hour)
	markDue.Stop()
	defer markDue.Stop()
	for {
		select {
		case <-c.quit:
			return
		case <-frames.C:
			c.sendFrames(time.Now())
		case <-markDue.C:
		case <-c.kick:
		}
		if due, ok := c.tickPlayer(time.Now()); ok {
			markDue.Reset(time.Until(due))
		} else {
			markDue.Stop()
		}
	}
}

// sendFrames sends every frame due by now. Frames are due every
// FrameInterval from the start; a late tick catches up, so the caller's
// audio keeps real time as Twilio's does.
func (c *Call) sendFrames(now time.Time) {
	due := int(now.Sub(c.started) / c.cfg.FrameInterval)
	for c.chunk < due && !c.stopping.Load() {
		c.chunk++
		m := outMsg{
			kind:  kindMedia,
			chunk: c.chunk,
			ts:    (time.Duration(c.chunk) * c.cfg.FrameInterval).Milliseconds(),
			audio: c.nextFrame(),
		}
		if !c.enqueue(m) {
			return
		}
	}
}

// nextFrame takes the next 160 bytes of queued speech, or silence.
func (c *Call) nextFrame() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	frame := make([]byte, FrameBytes)
	if len(c.speech) == 0 {
		for i := range frame {
			frame[i] = Silence
		}
		return frame
	}
	copy(frame, c.speech) // Say pads speech to whole frames
	c.speech = c.speech[FrameBytes:]
	if len(c.speech) == 0 {
		c.speech = nil
		c.notifyLocked()
	}
	return frame
}

// tickPlayer plays what is due, echoes due marks and reports when the next
// mark will be due.
func (c *Call) tickPlayer(now time.Time) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return time.Time{}, false
	}
	c.advanceLocked(now)
	return c.player.nextMarkDue()
}

// writeLoop is the only writer of data frames. It numbers messages in wire
// order. After `stop` it sends a close frame and waits for the server's reply.
func (c *Call) writeLoop() {
	defer c.wg.Done()
	seq := 0
	for {
		select {
		case <-c.quit:
			return
		case m := <-c.out:
			if err := c.write(m, &seq); err != nil {
				c.finish(err, false)
				return
			}
			if m.kind == kindStop {
				c.stopSent.Store(true)
				c.closeAfterStop()
				return
			}
		}
	}
}

// write renders and writes one message.
func (c *Call) write(m outMsg, seq *int) error {
	if err := c.conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return fmt.Errorf("twiliotest: write: %w", err)
	}
	if m.kind == kindRaw || m.kind == kindBinary {
		typ := websocket.TextMessage
		if m.kind == kindBinary {
			typ = websocket.BinaryMessage
		}
		if err := c.conn.WriteMessage(typ, m.raw); err != nil {
			return fmt.Errorf("twiliotest: write raw frame: %w", err)
		}
		return nil
	}
	if m.kind != kindConnected {
		*seq++ // `connected` has no sequence number; `start` is 1
	}
	data, err := json.Marshal(c.render(m, seq2str(*seq)))
	if err != nil {
		return fmt.Errorf("twiliotest: encode message: %w", err)
	}
	// Media is counted as sent before the write: the bridge may relay it
	// (and a test read it at the model) before WriteMessage returns.
	if m.kind == kindMedia {
		c.sentMu.Lock()
		c.sentFrames++
		if !c.cfg.DiscardAudio {
			c.sentAudio = append(c.sentAudio, m.audio...)
		}
		c.sentMu.Unlock()
	}
	if err := c.conn.WriteMessage(websocket.TextMessage, data); err != nil {
		return fmt.Errorf("twiliotest: write message: %w", err)
	}
	return nil
}

// render builds the documented JSON shape of m (twilio.md §1.1).
func (c *Call) render(m outMsg, sequence string) any {
	sid := c.cfg.StreamSID
	switch m.kind {
	case kindConnected:
		return connectedMsg{Event: "connected", Protocol: "Call", Version: "1.0.0"}
	case kindStart:
		params := make(map[string]string, len(c.cfg.Parameters))
		for k, v := range c.cfg.Parameters {
			params[k] = v
		}
		return startMsg{Event: "start", SequenceNumber: sequence, StreamSid: sid, Start: startBody{
			AccountSid: c.cfg.AccountSID, StreamSid: sid, CallSid: c.cfg.CallSID,
			Tracks:           []string{"inbound"},
			MediaFormat:      mediaFormat{Encoding: "audio/x-mulaw", SampleRate: 8000, Channels: 1},
			CustomParameters: params,
		}}
	case kindMedia:
		return mediaMsg{Event: "media", SequenceNumber: sequence, StreamSid: sid, Media: mediaBody{
			Track: "inbound", Chunk: seq2str(m.chunk), Timestamp: fmt.Sprint(m.ts),
			Payload: base64.StdEncoding.EncodeToString(m.audio),
		}}
	case kindDTMF:
		return dtmfMsg{Event: "dtmf", StreamSid: sid, SequenceNumber: sequence,
			DTMF: dtmfBody{Track: "inbound_track", Digit: m.name}}
	case kindMarkEcho:
		return markMsg{Event: "mark", SequenceNumber: sequence, StreamSid: sid, Mark: markBody{Name: m.name}}
	default: // kindStop
		return stopMsg{Event: "stop", SequenceNumber: sequence, StreamSid: sid,
			Stop: stopBody{AccountSid: c.cfg.AccountSID, CallSid: c.cfg.CallSID}}
	}
}

// closeAfterStop sends a normal close frame and waits for the server's
// reply (the reader then ends the call), or gives up after closeWait.
func (c *Call) closeAfterStop() {
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	if err := c.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(writeTimeout)); err != nil {
		c.finish(nil, false)
		return
	}
	wait := time.NewTimer(closeWait)
	defer wait.Stop()
	select {
	case <-c.quit:
	case <-wait.C:
		c.finish(nil, false)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
