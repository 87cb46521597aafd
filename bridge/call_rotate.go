package bridge

import (
	"context"
	"encoding/json"
	"time"

	"go.uber.org/zap"

	"github.com/vivi/bridge/bridge/realtime"
	"github.com/vivi/bridge/session"
)

// Rotation: a model session ends at its expires_at (60 minutes on the real
// service). Before then the call opens the next session, make-before-break:
// dial, session.update, the conversation seeded (text turns, tool calls and
// their outputs); then it switches at a quiet moment (no response running,
// no agent audio still playing by Twilio's marks, the caller not speaking),
// waiting at most rotateQuietWait. Caller audio the old session got since
// its last commit is sent again to the new one, and audio arriving during
// the switch goes to the new one. A rotation is not a drop: it never counts
// against the drop budget.

const (
	// rotateMargin is how long before expires_at the next session is
	// opened, at most; a short session opens it at a fifth of its life
	// before the end (rotateShare).
	rotateMargin = 5 * time.Minute
	rotateShare  = 5
	// rotateQuietWait bounds the wait for a quiet moment once the next
	// session is ready; then the switch happens anyway.
	rotateQuietWait = 8 * time.Second
	// rotateRetry is the wait before another try when opening the next
	// session failed (the current one is still in use).
	rotateRetry = 2 * time.Second
	// carryFrames bounds the caller audio kept since the last commit (2 s
	// of 20 ms frames) to send again to the next session.
	carryFrames = 100
)

// rotation is the state of the next model session. Owned by the loop.
type rotation struct {
	at      <-chan time.Time // when to open the next session
	next    *modelConn       // the next session, until the switch
	nextGen int              // generation of the next session's dial
	cancel  context.CancelFunc
	readyC  <-chan time.Time // the next session not ready in time
	quietC  <-chan time.Time // the bound of the wait for a quiet moment
	readyAt time.Time        // when the next session was ready
	// carry is the caller audio sent since the last commit, kept only
	// while a rotation is under way (carrying): from when the next session
	// is opened to the switch. Before that nothing needs it, and a call
	// does not hold 2 s of audio copies for its whole life.
	carry    carryRing
	carrying bool
	// seeded and lastSeed: how many turns the next session was seeded
	// with, and the last of them, to send it the turns added meanwhile.
	seeded   int
	lastSeed session.Turn
	failures int // failed tries to open the next session, for the retry delay
}

// carryRing keeps copies of the last carryFrames caller append events sent
// to the current session; slots reuse their buffers.
type carryRing struct {
	slots [][]byte
	head  int // index of the oldest
	n     int
}

func (r *carryRing) add(b []byte) {
	if r.slots == nil {
		r.slots = make([][]byte, carryFrames)
	}
	i := (r.head + r.n) % len(r.slots)
	if r.n == len(r.slots) {
		r.head = (r.head + 1) % len(r.slots)
	} else {
		r.n++
	}
	r.slots[i] = append(r.slots[i][:0], b...)
}

func (r *carryRing) reset() { r.head, r.n = 0, 0 }

// each calls f with the kept frames, oldest first.
func (r *carryRing) each(f func([]byte)) {
	for k := 0; k < r.n; k++ {
		f(r.slots[(r.head+k)%len(r.slots)])
	}
}

// sentCaller notes a caller frame sent to the current session.
func (c *call) sentCaller(b []byte) {
	if c.rot.carrying {
		c.rot.carry.add(b)
	}
}

// stopCarrying releases the carried audio once no rotation needs it.
func (c *call) stopCarrying() { c.rot.carry, c.rot.carrying = carryRing{}, false }

// observeModelEvent follows the current session's events the rotation
// depends on: its expiry, the caller's speech and the commits.
func (c *call) observeModelEvent(ev *realtime.ServerEvent) {
	switch ev.Type {
	case realtime.TypeSessionCreated:
		if ev.Session != nil && ev.Session.ExpiresAt > 0 && c.model != nil {
			c.model.expires = time.Unix(ev.Session.ExpiresAt, 0)
		}
		if ev.Session != nil && c.model != nil {
			c.model.setModel(ev.Session.Model)
		}
	case realtime.TypeSpeechStarted:
		c.speaking = true
	case realtime.TypeSpeechStopped:
		c.speaking = false
	case realtime.TypeInputCommitted:
		c.speaking = false
		c.turnPending = true // server VAD answers it: response.created follows
		c.rot.carry.reset()
	case realtime.TypeResponseCreated:
		c.turnPending = false
	}
}

// armRotation schedules the next session of mc, now ready.
func (c *call) armRotation(mc *modelConn) {
	c.rot.at = nil
	if mc.expires.IsZero() {
		return
	}
	now := c.now()
	// The session's life as our clock sees it (expires_at is the model's
	// clock): with a skew that leaves nothing sensible, no rotation is
	// planned and an expiry is re-dialled as before; and never sooner than
	// half its life, so that a skewed clock cannot make rotations loop.
	life := mc.expires.Sub(mc.born)
	if life < rotateMinLife {
		c.log.Warn("model session expiry too close to rotate before it (clock skew?)",
			zap.Time("expires_at", mc.expires), zap.Duration("life", life))
		return
	}
	margin := min(rotateMargin, life/rotateShare)
	c.rot.at = c.cfg.After(max(mc.expires.Add(-margin).Sub(now), life/2))
}

// rotateMinLife is the shortest session life that is rotated before expiry.
const rotateMinLife = 10 * time.Second

// onRotateTimer opens the next session.
func (c *call) onRotateTimer() {
	c.rot.at = nil
	if c.endReason != "" || c.ms.unavailable || c.model == nil || !c.model.ready || c.rot.next != nil || c.rot.cancel != nil {
		return
	}
	if c.hangup.pending {
		return // the call is ending
	}
	c.gen++
	gen := c.gen
	c.rot.nextGen = gen
	c.rot.carrying = true
	c.log.Info("opening the next model session before the current one expires",
		zap.Time("expires_at", c.model.expires))
	model := c.modelName()
	if model == c.cfg.RealtimeModel {
		if pc := c.srv.models.take(); pc != nil {
			c.onNextDialed(gen, pc.conn, pc.first, pc.expires, pc.model, nil)
			return
		}
	}
	ctx, cancel := context.WithCancel(c.ctx)
	c.rot.cancel = cancel
	c.rot.readyC = c.cfg.After(c.cfg.ModelReadyTimeout)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer cancel()
		conn, err := c.srv.dialModel(ctx, model)
		select {
		case c.results <- func() { c.onNextDialed(gen, conn, nil, time.Time{}, "", err) }:
		case <-c.done:
			if conn != nil {
				_ = conn.Close()
			}
		}
	}()
}

// onNextDialed starts the next session's reader and writer and configures it.
// model is session.created's model of a pooled connection, "" if none.
func (c *call) onNextDialed(gen int, conn *realtime.Conn, first chan pooledRead, expires time.Time, model string, err error) {
	if gen != c.rot.nextGen || c.rot.next != nil || c.endReason != "" || c.model == nil {
		if conn != nil {
			_ = conn.Close()
		}
		return
	}
	c.rot.cancel = nil
	if err != nil {
		c.rotateFailed("dial failed: " + clip(err.Error(), 200))
		return
	}
	mc := &modelConn{gen: gen, conn: conn, first: first, out: make(chan outFrame, modelOutQueue),
		quit: make(chan struct{}), born: c.now(), expires: expires, model: c.modelName()}
	mc.setModel(model)
	c.rot.next = mc
	if c.rot.readyC == nil {
		c.rot.readyC = c.cfg.After(c.cfg.ModelReadyTimeout)
	}
	c.wg.Add(2)
	go c.readModel(mc)
	go c.writeModel(mc)
	c.sendTo(mc, sessionUpdate(c.agent, c.from, c.cfg.TranscriptionModel))
}

// onNextModel handles a message of the next session before the switch.
func (c *call) onNextModel(m modelMsg) {
	n := c.rot.next
	switch {
	case m.err != nil:
		c.rotateFailed("the next session closed before the switch")
	case m.buf != nil:
		c.srv.pool.put(m.buf) // nothing was asked of it yet
	case m.ev != nil:
		switch m.ev.Type {
		case realtime.TypeSessionCreated:
			if s := m.ev.Session; s != nil && s.ExpiresAt > 0 {
				n.expires = time.Unix(s.ExpiresAt, 0)
			}
			if s := m.ev.Session; s != nil {
				n.setModel(s.Model)
			}
		case realtime.TypeResponseDone:
			c.onResponseUsage(n, m.ev.Response) // nothing asks it for one before the switch; counted all the same
		case realtime.TypeSessionUpdated:
			if n.ready {
				return
			}
			n.ready = true
			c.rot.readyC = nil
			c.rot.readyAt = c.now()
			for _, it := range seedItems(c.transcript, "") {
				c.sendTo(n, it)
			}
			c.rot.seeded = len(c.transcript)
			if c.rot.seeded > 0 {
				c.rot.lastSeed = c.transcript[c.rot.seeded-1]
			}
			if c.rot.next != n {
				return
			}
			c.rot.quietC = c.cfg.After(rotateQuietWait)
			c.maybeSwitch()
		case realtime.TypeError:
			if e := m.ev.Error; e != nil && fatalModelCodes[e.Code] {
				c.rotateFailed("the next session reported " + clip(e.Code, 64))
				return
			}
			if e := m.ev.Error; e != nil {
				c.log.Info("error event on the next model session", zap.String("code", clip(e.Code, 64)))
			}
		}
	}
}

// onNextReadyTimeout: the next session did not get ready in time.
func (c *call) onNextReadyTimeout() {
	c.rot.readyC = nil
	c.rotateFailed("the next session was not ready in time")
}

// rotateFailed drops the next session and tries again after rotateRetry;
// the current session is still in use (and its expiry, if it comes first,
// is re-dialled as before).
func (c *call) rotateFailed(why string) {
	c.log.Warn("opening the next model session failed; the current one goes on", zap.String("why", why))
	c.record(session.EventModelError, "rotation: "+clip(why, 200))
	c.abortRotation(why)
	if c.endReason == "" && !c.ms.unavailable && c.model != nil {
		c.rot.failures++
		c.rot.at = c.cfg.After(rotateRetry << min(c.rot.failures-1, 4)) // 2 s doubling to 32 s
	}
}

// abortRotation drops the next session, if any.
func (c *call) abortRotation(string) {
	if c.rot.cancel != nil {
		c.rot.cancel()
		c.rot.cancel = nil
	}
	if c.rot.next != nil {
		close(c.rot.next.quit)
		c.rot.next = nil
	}
	c.rot.nextGen = 0
	c.rot.readyC, c.rot.quietC, c.rot.at = nil, nil, nil
	c.stopCarrying()
}

// quiet reports whether the call is at a quiet moment: nothing is spoken
// or about to be, and no action is under way. A model rotation switches
// sessions at one, and so does a migration (call_migrate.go).
func (c *call) quiet() bool {
	return !c.respActive && !c.respAsked && !c.respWanted && !c.turnPending && c.play.idle() && c.ahead.len() == 0 &&
		!c.speaking && !c.transfer && !c.hangup.pending
}

// maybeSwitch switches to the next session when it is ready and the call is
// quiet. It runs after every change of the playout and of the responses.
func (c *call) maybeSwitch() {
	if n := c.rot.next; n == nil || !n.ready || !c.quiet() {
		return
	}
	c.switchModel("quiet")
}

// onQuietTimeout switches even though the call was not quiet in time.
func (c *call) onQuietTimeout() {
	c.rot.quietC = nil
	if n := c.rot.next; n != nil && n.ready {
		c.switchModel("quiet wait timed out")
	}
}

// switchModel makes the next session the current one.
func (c *call) switchModel(why string) {
	old, n := c.model, c.rot.next
	c.rot.next, c.rot.quietC, c.rot.readyC, c.rot.nextGen = nil, nil, nil, 0
	wasActive := c.respActive || c.respAsked || c.respWanted || c.turnPending
	c.turnPending = false
	if old != nil { // nil: the current session was lost first
		close(old.quit)
	}
	c.model = n
	c.respActive, c.respWanted, c.respAsked = false, false, false
	c.rot.failures = 0
	// Turns added while the switch waited (a reply's transcript, the
	// caller's transcription, a tool call's output).
	for _, it := range seedItems(c.turnsSinceSeed(), "") {
		c.toModelJSON(it)
	}
	// What the old session heard since its last commit, again: a turn the
	// caller began there is not lost.
	carried := 0
	c.rot.carry.each(func(b []byte) {
		fb := c.srv.pool.get()
		*fb = append((*fb)[:0], b...)
		c.toModel(fb)
		carried++
	})
	c.stopCarrying()
	c.speaking = false
	c.flushHeld()
	if wasActive {
		c.createResponse("") // cut off by a forced switch: the agent goes on
	}
	c.ms.rotations++
	c.srv.metrics.rotations.Inc()
	waited := c.now().Sub(c.rot.readyAt)
	c.record(session.EventModelRotated, why)
	c.log.Info("model session rotated", zap.String("why", why), zap.Int("carried_frames", carried),
		zap.Duration("waited", waited), zap.Int("rotations", c.ms.rotations))
	c.armRotation(n)
}

// turnsSinceSeed returns the transcript turns after the last one the next
// session was seeded with (none when that turn has been folded away).
func (c *call) turnsSinceSeed() []session.Turn {
	if c.rot.seeded == 0 {
		return c.transcript
	}
	l := c.rot.lastSeed
	for i := len(c.transcript) - 1; i >= 0; i-- {
		if t := c.transcript[i]; t.At.Equal(l.At) && t.Role == l.Role && t.Text == l.Text {
			return c.transcript[i+1:]
		}
	}
	return nil
}

// sendTo queues a client event for the next session; a full queue (the
// session is not reading) drops it.
func (c *call) sendTo(mc *modelConn, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		c.log.Error("encode model event", zap.Error(err))
		return
	}
	select {
	case mc.out <- outFrame{buf: &b}:
	default:
		if c.rot.next == mc {
			c.rotateFailed("the next session is not reading")
		}
	}
}
