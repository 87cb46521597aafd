package main

import (
	"context"
	"time"

	"github.com/gorilla/websocket"
)

// frameInterval is Twilio's media cadence.
const frameInterval = 20 * time.Millisecond

// pacerGroups is how many pacers share the calls: one per millisecond of
// the frame interval, so that the frames of all calls are spread over it
// as they are from independent calls, not sent in one burst.
const pacerGroups = 20

// maxCatchUp bounds the frames one call sends in one tick when the pacer
// was late; beyond it frames are skipped and counted (the load tool, not
// the bridge, was too slow: see Report.LoadTool.LateFrames).
const maxCatchUp = 5

// group is one pacer: a goroutine that, every frame interval at its own
// offset, writes what is due on each of its calls: the media frame, the
// echoes of marks whose audio has played, a DTMF digit, and finally stop.
// It is the only writer of its calls' sockets once they have started.
type group struct {
	l       *load
	offset  time.Duration
	joins   chan *caller
	calls   []*caller
	scratch []pendingMark
}

func newGroup(l *load, offset time.Duration, calls int) *group {
	return &group{l: l, offset: offset, joins: make(chan *caller, calls)}
}

// add hands a started call to the pacer (never blocks: the channel holds
// every call the group will get).
func (g *group) add(c *caller) { g.joins <- c }

// run paces until ctx ends.
func (g *group) run(ctx context.Context) {
	l := g.l
	next := l.now() + int64(g.offset)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		timer.Reset(time.Duration(next - l.now()))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
	join:
		for {
			select {
			case c := <-g.joins:
				g.calls = append(g.calls, c)
			default:
				break join
			}
		}
		now := l.now()
		keep := g.calls[:0]
		for _, c := range g.calls {
			if g.tick(c, now) {
				keep = append(keep, c)
			}
		}
		clear(g.calls[len(keep):])
		g.calls = keep
		next += int64(frameInterval)
		if late := l.now() - next; late > 0 {
			next += (late/int64(frameInterval) + 1) * int64(frameInterval)
		}
	}
}

// tick does what is due on c at now and reports whether c stays.
func (g *group) tick(c *caller, now int64) bool {
	l := g.l
	if c.closed.Load() {
		return false
	}
	_ = c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	sendUntil, drainUntil := l.sendUntil.Load(), l.drainUntil.Load()
	sending := sendUntil == 0 || now < sendUntil
	if sending {
		for n := 0; c.nextDue <= now && n < maxCatchUp; n++ {
			if !g.media(c) {
				return false
			}
			c.nextDue += int64(frameInterval)
		}
		if c.nextDue <= now {
			skip := (now-c.nextDue)/int64(frameInterval) + 1
			c.nextDue += skip * int64(frameInterval)
			l.lateFrames.Add(skip)
		}
		if c.nextDigit != 0 && c.nextDigit <= now {
			c.nextDigit += int64(l.cfg.DTMF)
			if !g.write(c, c.frames.dtmf('5')) {
				return false
			}
		}
	}
	g.scratch = c.dueMarks(g.scratch[:0], now)
	for i := range g.scratch {
		m := &g.scratch[i]
		if !g.write(c, c.frames.mark(m.name[:m.n])) {
			return false
		}
		c.marksEchoed.Add(1)
	}
	if drainUntil != 0 && now >= drainUntil {
		// Marked before the write: the bridge answers stop by closing, and
		// the reader may see that close before this goroutine runs again.
		c.stopSent.Store(true)
		if g.write(c, c.frames.stop(l.accountSID, c.callSID)) {
			_ = c.ws.SetReadDeadline(time.Now().Add(stopWait))
		}
		return false
	}
	return true
}

// media writes the next frame of c: speech or silence by the talk pattern,
// headed with the call and the frame's sequence number, its send time
// taken just before the write.
func (g *group) media(c *caller) bool {
	l := g.l
	c.chunk++
	if c.chunk > maxSeq {
		c.fail("more than %d frames in one call", maxSeq)
		return false
	}
	seq := uint32(c.chunk)
	tmpl := l.tmpl.speech
	if (time.Duration(c.chunk)*frameInterval/l.cfg.Talk)%2 == 1 {
		tmpl = l.tmpl.silence
	}
	msg := c.frames.media(c.chunk, tmpl, frameHeader{magic: magicCaller, call: uint16(c.idx), seq: seq})
	s := &c.ring[seq%ringSize]
	s.seq.Store(seq)
	s.got.Store(false)
	s.modelIn.Store(0)
	s.modelOut.Store(0)
	s.sent.Store(l.now())
	if !g.write(c, msg) {
		return false
	}
	c.sent.Add(1)
	return true
}

func (g *group) write(c *caller, msg []byte) bool {
	if err := c.ws.WriteMessage(websocket.TextMessage, msg); err != nil {
		c.fail("write: %s", clip(err.Error(), 80))
		_ = c.ws.Close() // ends the reader
		return false
	}
	return true
}
