package bridge

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/vivi/bridge/bridge/internal/jsonscan"
	"github.com/vivi/bridge/bridge/realtime"
	"github.com/vivi/bridge/internal/redact"
	"github.com/vivi/bridge/session"
)

// modelConn is one realtime connection of a call; a re-dial makes a new one
// with the next generation number, and messages of older ones are ignored.
type modelConn struct {
	gen   int
	conn  *realtime.Conn
	out   chan outFrame // loop -> writer
	quit  chan struct{} // closed by the loop to drop this connection
	ready bool          // session.updated seen; owned by the loop
}

// modelMsg is what a model reader hands the loop: audio ready for Twilio,
// a decoded event, the end of the connection, or something unreadable.
type modelMsg struct {
	gen   int
	buf   *[]byte // audio: Twilio's media message (the loop adds the mark)
	item  string
	audio int
	ev    *realtime.ServerEvent
	err   error
	bad   string
}

func (c *call) modelName() string {
	if c.agent.Model != "" {
		return c.agent.Model
	}
	return c.cfg.RealtimeModel
}

// dialModel dials the model off the loop; onDialed gets the result. The
// first dial of a call takes over the early dial when it is for the same
// model (see earlyDial).
func (c *call) dialModel() {
	c.gen++
	gen := c.gen
	if e := &c.early; e.state != earlyNone && e.model == c.modelName() {
		if e.state == earlyDialled {
			conn, err := e.conn, e.err
			*e = earlyModel{}
			c.onDialed(gen, conn, err)
			return
		}
		e.gen = gen // still dialling: onEarlyDialed hands it over
		return
	}
	c.dropEarly()
	c.dial(c.modelName(), func(conn *realtime.Conn, err error) { c.onDialed(gen, conn, err) })
}

// dial dials model off the loop and runs done with the result on the loop.
func (c *call) dial(model string, done func(*realtime.Conn, error)) {
	cfg := realtime.Config{
		URL: c.cfg.RealtimeURL, APIKey: c.cfg.APIKey, Model: model,
		Dialer: c.cfg.RealtimeDialer, WriteTimeout: c.cfg.WriteTimeout,
		IdleTimeout: 3 * c.cfg.PingInterval,
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.DialTimeout)
		conn, err := realtime.Dial(ctx, cfg)
		cancel()
		select {
		case c.results <- func() { done(conn, err) }:
		case <-c.done:
			if conn != nil {
				_ = conn.Close()
			}
		}
	}()
}

// earlyModel is the model connection dialled as soon as the websocket is
// accepted, in parallel with waiting for Twilio's start and the look-ups:
// the default model, which most agents use. An agent with a model of its
// own gets a dial of its own and the early connection is closed.
type earlyModel struct {
	state int // earlyNone, earlyDialling, earlyDialled
	model string
	gen   int // when set, the dial the early connection is handed to
	conn  *realtime.Conn
	err   error
}

const (
	earlyNone = iota
	earlyDialling
	earlyDialled
)

// earlyDial starts the early dial (on the loop, when the websocket opens).
func (c *call) earlyDial() {
	c.early = earlyModel{state: earlyDialling, model: c.cfg.RealtimeModel}
	c.dial(c.early.model, c.onEarlyDialed)
}

func (c *call) onEarlyDialed(conn *realtime.Conn, err error) {
	e := &c.early
	if e.state != earlyDialling {
		if conn != nil {
			_ = conn.Close() // dropped meanwhile
		}
		return
	}
	if e.gen != 0 {
		gen := e.gen
		*e = earlyModel{}
		c.onDialed(gen, conn, err)
		return
	}
	e.state, e.conn, e.err = earlyDialled, conn, err
}

// dropEarly closes an early connection that will not be used.
func (c *call) dropEarly() {
	if c.early.conn != nil {
		_ = c.early.conn.Close()
	}
	c.early = earlyModel{}
}

func (c *call) onDialed(gen int, conn *realtime.Conn, err error) {
	if gen != c.gen {
		if conn != nil {
			_ = conn.Close()
		}
		return
	}
	if err != nil {
		// A refused dial's error may carry the server's answer: remote text.
		c.log.Warn("model dial failed: ending the call", zap.Int("redials", c.redials), zap.String("error", redact.Error(err)))
		c.record(session.EventModelError, "dial failed: "+clip(redact.Error(err), 300))
		c.end(ReasonModelDropped)
		return
	}
	mc := &modelConn{gen: gen, conn: conn, out: make(chan outFrame, modelOutQueue), quit: make(chan struct{})}
	c.model = mc
	c.wg.Add(2)
	go c.readModel(mc)
	go c.writeModel(mc)
	typ := session.EventModelConnected
	if c.greeted {
		typ = session.EventModelReconnect
	}
	c.record(typ, c.modelName())
	c.log.Info("model connected", zap.String("model", c.modelName()), zap.Int("redials", c.redials))
	c.toModelJSON(sessionUpdate(c.agent, c.from, c.cfg.TranscriptionModel))
}

// closeModel drops the current model connection (its writer closes it).
func (c *call) closeModel() {
	if c.model != nil {
		close(c.model.quit)
		c.model = nil
	}
	c.respActive, c.respWanted = false, false
}

// redial replaces a lost model connection, at most MaxRedials times a call.
func (c *call) redial() {
	if c.endReason != "" {
		return
	}
	if c.redials >= c.cfg.MaxRedials {
		c.log.Warn("model connection lost and the re-dial limit is reached: ending the call", zap.Int("redials", c.redials))
		c.end(ReasonModelDropped)
		return
	}
	c.redials++
	c.srv.metrics.redials.Inc()
	c.log.Info("re-dialling the model", zap.Int("attempt", c.redials))
	c.dialModel()
}

// readModel is a model socket's only reader.
func (c *call) readModel(mc *modelConn) {
	defer c.wg.Done()
	var buf, lastItem []byte
	var item string
	for {
		msg, err := mc.conn.Read(buf)
		buf = msg
		if cap(buf) > maxKeptReadBuf {
			buf = nil // a large event (session.created, response.done) is not kept for the call's life
		}
		var m modelMsg
		switch {
		case errors.Is(err, realtime.ErrBinaryMessage):
			m = modelMsg{bad: "binary frame"}
		case err != nil:
			m = modelMsg{err: err}
		default:
			m = c.parseModel(msg, &lastItem, &item)
		}
		m.gen = mc.gen
		select {
		case c.modelIn <- m:
		case <-c.done:
			c.srv.pool.put(m.buf)
			return
		}
		if m.err != nil {
			return
		}
	}
}

// maxKeptReadBuf bounds the read buffer a model reader keeps between
// events: audio deltas are small, a few other events are not.
const maxKeptReadBuf = 16 << 10

// parseModel turns an audio delta into Twilio's media message on the fast
// path; anything else is decoded. The loop adds the mark, if the chunk gets
// one (onModelAudio). The item id string is made only when it changes
// (lastItem, item), not per delta.
func (c *call) parseModel(msg []byte, lastItem *[]byte, item *string) modelMsg {
	fb := c.srv.pool.get()
	var noMark atomic.Uint64 // marks are numbered by the loop, in send order
	out, split, _, id, n, ok := c.frames.modelToTwilio(*fb, msg, &noMark)
	if ok {
		*fb = out[:split]
		if !bytes.Equal(id, *lastItem) || *item == "" {
			*lastItem = append((*lastItem)[:0], id...)
			*item = string(id)
		}
		return modelMsg{buf: fb, item: *item, audio: n}
	}
	ev, err := realtime.ParseEvent(msg)
	if err != nil {
		c.srv.pool.put(fb)
		return modelMsg{bad: "malformed event"}
	}
	if ev.Type != realtime.TypeAudioDelta {
		c.srv.pool.put(fb)
		return modelMsg{ev: ev}
	}
	// An audio delta the fast path declined (escaped characters).
	d := []byte(ev.Delta)
	n, valid := jsonscan.Base64(d)
	if !valid || ev.ItemID == "" {
		c.srv.pool.put(fb)
		return modelMsg{bad: "audio delta is not base64"}
	}
	*fb = c.frames.appendMedia((*fb)[:0], d)
	return modelMsg{buf: fb, item: ev.ItemID, audio: n}
}

// writeModel is a model socket's only writer; it pings, and closes the
// socket when the connection is dropped or the call ends.
func (c *call) writeModel(mc *modelConn) {
	defer c.wg.Done()
	defer func() { _ = mc.conn.Close() }()
	ping := time.NewTicker(c.cfg.PingInterval)
	defer ping.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-mc.quit:
			return
		case f := <-mc.out:
			if err := c.writeModelFrames(mc, f); err != nil {
				return // the reader fails next and the loop re-dials
			}
		case <-ping.C:
			if err := mc.conn.Ping(); err != nil {
				return
			}
		}
	}
}

// writeModelFrames writes f and whatever else is queued already in one
// system call (held audio flushed at once drains in a few writes).
func (c *call) writeModelFrames(mc *modelConn, f outFrame) error {
	wb := c.srv.pool.get()
	b := appendOutFrame(*wb, f, mc.conn.AppendFrame)
	c.srv.pool.put(f.buf)
gather:
	for len(b) < writeBatch {
		select {
		case f := <-mc.out:
			b = appendOutFrame(b, f, mc.conn.AppendFrame)
			c.srv.pool.put(f.buf)
		default:
			break gather
		}
	}
	err := mc.conn.WriteFrames(b)
	*wb = b
	c.srv.pool.put(wb)
	return err
}

// onModel handles one message of a model reader on the loop.
func (c *call) onModel(m modelMsg) {
	if c.model == nil || m.gen != c.model.gen {
		c.srv.pool.put(m.buf) // from a connection already dropped
		return
	}
	switch {
	case m.err != nil:
		c.onModelClosed(m.err)
	case m.buf != nil:
		c.onModelAudio(m)
	case m.ev != nil:
		c.onModelEvent(m.ev)
	default:
		c.anomaly("model_"+m.bad, "unreadable model event ignored", zap.String("what", m.bad))
	}
}

func (c *call) onModelClosed(err error) {
	var ce *websocket.CloseError
	detail := "connection lost"
	if errors.As(err, &ce) {
		detail = "connection closed"
		c.log.Info("model closed the connection", zap.Int("code", ce.Code), zap.String("text", clip(ce.Text, 200)))
	} else {
		c.log.Warn("model connection lost", zap.Error(err))
	}
	c.record(session.EventModelError, detail)
	c.closeModel()
	if c.hangup.pending {
		return // the goodbye is out; the hang-up goes on without a model
	}
	c.redial()
}

// onModelAudio relays one chunk of the agent's audio to Twilio.
func (c *call) onModelAudio(m modelMsg) {
	if slices.Contains(c.dropItems, m.item) {
		c.srv.pool.put(m.buf) // late audio of an item the caller interrupted
		return
	}
	now := c.now()
	if c.play.tailOf(m.item) {
		c.markTail() // the previous item's last audio gets its own mark
	}
	c.framesOut++
	c.srv.metrics.framesOut.Inc()
	if !c.play.wantMark(m.audio) {
		c.play.sentUnmarked(m.item, m.audio, now)
		c.toTwilio(outFrame{buf: m.buf})
		return
	}
	seq := c.markSeq.Add(1)
	c.play.sent(m.item, m.audio, seq, now)
	split := len(*m.buf)
	*m.buf = c.frames.appendMark(*m.buf, seq)
	c.toTwilio(outFrame{buf: m.buf, split: split})
}

// markTail sends a mark after the audio sent without one, so that its echo
// tells when it has played (the end of a response, an item change).
func (c *call) markTail() {
	if c.play.tail.n == 0 {
		return
	}
	seq := c.markSeq.Add(1)
	c.play.markTail(seq)
	b := c.srv.pool.get()
	*b = c.frames.appendMark(*b, seq)
	c.toTwilio(outFrame{buf: b})
}

// onModelEvent handles the decoded (non-audio) model events.
func (c *call) onModelEvent(ev *realtime.ServerEvent) {
	switch ev.Type {
	case realtime.TypeSessionUpdated:
		c.onSessionUpdated()
	case realtime.TypeSpeechStarted:
		c.onSpeechStarted()
	case realtime.TypeResponseCreated:
		c.respActive = true
	case realtime.TypeAudioDone:
		c.markTail()
	case realtime.TypeResponseDone:
		c.markTail() // before the waits look at the playout
		c.onResponseDone()
	case realtime.TypeFunctionCallArgumentsDone:
		c.onToolCall(ev.CallID, ev.Name, ev.Arguments)
	case realtime.TypeOutputItemDone:
		if it := ev.Item; it != nil && it.Type == "function_call" {
			c.onToolCall(it.CallID, it.Name, it.Arguments)
		}
	case realtime.TypeAudioTranscriptDone:
		c.addTurn(session.RoleAgent, ev.Transcript)
	case realtime.TypeInputTranscriptionCompleted:
		c.addTurn(session.RoleCaller, ev.Transcript)
	case realtime.TypeError:
		c.onModelError(ev.Error)
	default:
		c.log.Debug("model event", zap.String("type", ev.Type))
	}
}

// onSessionUpdated starts the conversation on a new connection: the
// transcript so far (and a note) if any, the caller audio held meanwhile,
// then a response: the greeting on a fresh call, a continuation otherwise.
func (c *call) onSessionUpdated() {
	mc := c.model
	if mc.ready {
		return
	}
	mc.ready = true
	first := !c.greeted
	c.greeted = true
	note := ""
	if first {
		note = c.note
	}
	items := seedItems(c.transcript, note)
	for _, it := range items {
		c.toModelJSON(it)
	}
	c.flushHeld()
	if first && len(items) == 0 {
		c.toModelJSON(realtime.CreateResponse(greetingInstructions(c.agent, c.from)))
		return
	}
	c.toModelJSON(realtime.CreateResponse(""))
}

// flushHeld sends the caller audio held while the model was not ready.
func (c *call) flushHeld() {
	if c.held.dropped > 0 {
		c.log.Warn("caller audio held too long while the model was not ready: oldest dropped",
			zap.Int("dropped_frames", c.held.dropped), zap.Int("dropped_ms", c.held.droppedBytes/bytesPerMs))
		c.held.dropped, c.held.droppedBytes = 0, 0
	}
	// One at a time: should the model drop meanwhile, the rest stays held.
	// A long hold (a re-dial) is flushed as the writer makes room, the rest
	// with the next caller frames (onCallerAudio), so that the queue stays
	// small and always has room for the events that follow.
	for c.held.len() > 0 && c.model != nil && c.model.ready && len(c.model.out) < modelOutQueue-modelOutReserve {
		c.toModel(c.held.pop().buf)
	}
}

// The model writer's queue: a frame is written within microseconds, so it
// holds little but a flush of held audio, which is bounded by leaving
// modelOutReserve places to events (a smaller queue is less memory per call).
const (
	modelOutQueue   = 256
	modelOutReserve = 64
)
