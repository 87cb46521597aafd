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
	out   chan outFrame   // loop -> writer
	quit  chan struct{}   // closed by the loop to drop this connection
	ready bool            // session.updated seen; owned by the loop
	first chan pooledRead // pooled: the watcher's pending read; owned by the reader
	// born and expires (session.created's expires_at, zero when not
	// known) time the session for its rotation; owned by the loop.
	born, expires time.Time
	// model is the connection's model, which its usage is counted under:
	// session.created's model when it names one (often a dated snapshot),
	// else the model dialled; owned by the loop.
	model string
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

// dialModel takes a pooled connection when the call uses the default model
// and the pool has one (no dial on the answer path), and dials otherwise,
// off the loop; onDialed gets the result. It runs only once the stream is
// accepted (its token verified and claimed), so that a websocket costs no
// model session before that.
func (c *call) dialModel() {
	c.gen++
	gen := c.gen
	model := c.modelName()
	ctx, cancel := context.WithCancel(c.ctx)
	c.armDial(cancel)
	if model == c.cfg.RealtimeModel {
		if pc := c.srv.models.take(); pc != nil {
			c.onDialed(gen, pc.conn, pc.first, nil)
			if c.model != nil {
				c.model.born, c.model.expires = pc.born, pc.expires
				c.model.setModel(pc.model)
			}
			return
		}
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer cancel()
		conn, err := c.srv.dialModel(ctx, model)
		select {
		case c.results <- func() { c.onDialed(gen, conn, nil, err) }:
		case <-c.done:
			if conn != nil {
				_ = conn.Close()
			}
		}
	}()
}

// onDialed starts the reader and writer of a new model connection; first
// is the pending read of a pooled connection's watcher, nil for a dial.
func (c *call) onDialed(gen int, conn *realtime.Conn, first chan pooledRead, err error) {
	if gen != c.gen {
		if conn != nil {
			_ = conn.Close()
		}
		return
	}
	if err != nil {
		// A refused dial's error may carry the server's answer: remote text.
		c.dialFailed("dial failed: " + clip(redact.Error(err), 300))
		return
	}
	mc := &modelConn{gen: gen, conn: conn, first: first, out: make(chan outFrame, modelOutQueue), quit: make(chan struct{}),
		born: c.now(), model: c.modelName()}
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
		c.ms.lostReady = c.model.ready
		close(c.model.quit)
		c.model = nil
	}
	c.respActive, c.respWanted, c.respAsked = false, false, false
}

// redial replaces a lost model connection (call_fault.go): a drop of a
// ready session is re-dialled at once within the drop budget (MaxRedials
// per RedialWindow), a connection lost before it was ready after a backoff.
func (c *call) redial() { c.onModelLost(false) }

// readModel is a model socket's only reader.
func (c *call) readModel(mc *modelConn) {
	defer c.wg.Done()
	var buf, lastItem []byte
	var item string
	for {
		msg, err := mc.read(buf)
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
		if m.buf != nil && m.audio > maxMediaBytes {
			if !c.splitAudio(msg, m) {
				return
			}
			continue
		}
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

// splitAudio hands the loop an oversized audio delta (m, parsed from msg)
// as media messages of at most maxMediaBytes each, in order; false when the
// call ended meanwhile. It runs on the reader, so the loop's work per
// message stays small, and the reader waits while the loop is busy.
func (c *call) splitAudio(msg []byte, m modelMsg) bool {
	c.srv.pool.put(m.buf)
	delta := deltaOf(msg)
	if delta == nil {
		return true // cannot happen: parseModel read it
	}
	return splitDelta(delta, m.audio, func(part []byte, n int) bool {
		fb := c.srv.pool.get()
		*fb = c.frames.appendMedia(*fb, part)
		select {
		case c.modelIn <- modelMsg{gen: m.gen, buf: fb, item: m.item, audio: n}:
			return true
		case <-c.done:
			c.srv.pool.put(fb)
			return false
		}
	})
}

// splitDelta calls emit with each part of delta (valid base64 of n bytes)
// of at most maxMediaB64 characters and the bytes it decodes to, in order,
// until emit returns false (then false).
func splitDelta(delta []byte, n int, emit func(part []byte, audio int) bool) bool {
	for left := n; len(delta) > 0; left -= maxMediaBytes {
		part := delta[:min(len(delta), maxMediaB64)]
		delta = delta[len(part):]
		if !emit(part, min(left, maxMediaBytes)) {
			return false
		}
	}
	return true
}

// deltaOf returns the base64 delta of an audio delta event: the fast
// path's slice of msg, or the decoded string when it had escapes. A valid
// base64 text has no characters that need escaping, so the decoded text is
// exactly the base64.
func deltaOf(msg []byte) []byte {
	if _, _, d, ok := realtime.ScanAudioDelta(msg); ok {
		return d
	}
	if ev, err := realtime.ParseEvent(msg); err == nil {
		return []byte(ev.Delta)
	}
	return nil
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
	if n := c.rot.next; n != nil && m.gen == n.gen {
		c.onNextModel(m)
		return
	}
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

// onModelAudio relays one chunk of the agent's audio to Twilio, or holds
// it while Twilio has aheadLimit of audio to play (pacing.go).
func (c *call) onModelAudio(m modelMsg) {
	if slices.Contains(c.dropItems, m.item) {
		c.srv.pool.put(m.buf) // late audio of an item the caller interrupted
		return
	}
	if c.ahead.len() == 0 && c.play.canSend(m.audio) {
		c.sendAudio(m.buf, m.item, m.audio)
		return
	}
	if c.ahead.push(heldChunk{buf: m.buf, item: m.item, audio: m.audio}) {
		return
	}
	c.srv.pool.put(m.buf)
	c.srv.metrics.agentDropped.Add(float64(m.audio))
	if c.aheadDrop != m.item { // once an item, not per chunk
		c.aheadDrop = m.item
		c.record(session.EventModelError, "agent audio beyond the hold limit dropped (item "+clip(m.item, 64)+")")
	}
	c.anomaly("agent_audio_dropped", "model audio far ahead of playout: newest dropped",
		zap.String("item", clip(m.item, 64)), zap.Int("held_bytes", c.ahead.bytes))
}

// sendAudio sends one chunk and its mark to Twilio.
func (c *call) sendAudio(buf *[]byte, item string, n int) {
	c.framesOut++
	c.srv.metrics.framesOut.Inc()
	seq := c.markSeq.Add(1)
	c.play.sent(item, n, seq, c.now())
	split := len(*buf)
	*buf = c.frames.appendMark(*buf, seq)
	c.toTwilio(outFrame{buf: buf, split: split})
}

// pumpAudio sends held audio as far as Twilio's playout allows.
func (c *call) pumpAudio() {
	for c.ahead.len() > 0 && c.play.canSend(c.ahead.peek().audio) {
		h := c.ahead.pop()
		c.sendAudio(h.buf, h.item, h.audio)
	}
}

// dropHeldAudio empties the hold (a barge-in) and returns the items it
// held, in order, without repeats.
func (c *call) dropHeldAudio() []string {
	var items []string
	for c.ahead.len() > 0 {
		h := c.ahead.pop()
		c.srv.pool.put(h.buf)
		if len(items) == 0 || items[len(items)-1] != h.item {
			items = append(items, h.item)
		}
	}
	return items
}

// onModelEvent handles the decoded (non-audio) model events.
func (c *call) onModelEvent(ev *realtime.ServerEvent) {
	c.observeModelEvent(ev)
	switch ev.Type {
	case realtime.TypeSessionUpdated:
		c.onSessionUpdated()
	case realtime.TypeSpeechStarted:
		c.tools.newTurn()
		c.onSpeechStarted()
	case realtime.TypeInputCommitted:
		c.tools.newTurn()
	case realtime.TypeResponseCreated:
		c.onResponseCreated()
	case realtime.TypeResponseDone:
		c.onResponseUsage(c.model, ev.Response)
		c.onResponseOutput(ev.Response)
		c.onResponseDone()
	case realtime.TypeFunctionCallArgumentsDone:
		c.onFunctionCall(ev.CallID, ev.ItemID, ev.Name, ev.Arguments, true)
	case realtime.TypeOutputItemAdded, realtime.TypeOutputItemDone:
		if it := ev.Item; it != nil && it.Type == "function_call" {
			done := ev.Type == realtime.TypeOutputItemDone
			c.onFunctionCall(it.CallID, it.ID, it.Name, it.Arguments, done || it.Arguments != "")
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
	c.modelReady()
	c.armRotation(mc)
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
	if c.quietResume() {
		return // a migrated call: the caller carries on, the agent answers their next turn
	}
	if first && len(items) == 0 {
		c.createResponse(greetingInstructions(c.agent, c.from))
		return
	}
	c.createResponse("")
}

// flushHeld sends the caller audio held while the model was not ready.
func (c *call) flushHeld() {
	if c.held.dropped > 0 {
		c.onHeldDropped() // at most once per warnEvery
	}
	// One at a time: should the model drop meanwhile, the rest stays held.
	// A long hold (a re-dial) is flushed as the writer makes room, the rest
	// with the next caller frames (onCallerAudio), so that the queue stays
	// small and always has room for the events that follow.
	for c.held.len() > 0 && c.model != nil && c.model.ready && len(c.model.out) < modelOutQueue-modelOutReserve {
		b := c.held.pop().buf
		c.sentCaller(*b)
		c.toModel(b)
	}
}

// The model writer's queue: a frame is written within microseconds, so it
// holds little but a flush of held audio, which is bounded by leaving
// modelOutReserve places to events (a smaller queue is less memory per call).
const (
	modelOutQueue   = 256
	modelOutReserve = 64
)
