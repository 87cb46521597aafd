package twiliotest

import (
	"bytes"
	"context"
	"slices"
	"time"
)

// pollInterval is how often WaitPlayedBytes looks at the play position,
// which moves with time rather than with events.
const pollInterval = 10 * time.Millisecond

// Messages returns every message received from the server, in order,
// including invalid ones (with Err set).
func (c *Call) Messages() []Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.messages)
}

// ProtocolErrors returns the protocol errors the server caused, in order:
// 31950 for binary frames, 31951 for invalid messages.
func (c *Call) ProtocolErrors() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.protoErrs)
}

// ReceivedAudio returns every valid outbound media payload, decoded and
// concatenated in order.
func (c *Call) ReceivedAudio() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.player.received)
}

// PlayedAudio returns the part of ReceivedAudio that has played so far
// (cleared audio never plays).
func (c *Call) PlayedAudio() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.advanceLocked(time.Now())
	return bytes.Clone(c.player.played)
}

// ReceivedBytes returns how many bytes of valid outbound audio arrived.
func (c *Call) ReceivedBytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.player.recvLen
}

// PlayedBytes returns how many bytes of outbound audio have played.
func (c *Call) PlayedBytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.advanceLocked(time.Now())
	return c.player.total
}

// BufferedBytes returns how much received audio is waiting to play.
func (c *Call) BufferedBytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.advanceLocked(time.Now())
	return c.player.buffered()
}

// SentAudio returns the caller audio of every media frame written,
// including silence, in order.
func (c *Call) SentAudio() []byte {
	c.sentMu.Lock()
	defer c.sentMu.Unlock()
	return bytes.Clone(c.sentAudio)
}

// Sent returns how many media frames have been written.
func (c *Call) Sent() int {
	c.sentMu.Lock()
	defer c.sentMu.Unlock()
	return c.sentFrames
}

// Clears returns what the player saw at each `clear`, in order.
func (c *Call) Clears() []ClearInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]ClearInfo, len(c.player.clears))
	for i, ci := range c.player.clears {
		ci.PendingMarks = slices.Clone(ci.PendingMarks)
		out[i] = ci
	}
	return out
}

// EchoedMarks returns the names of the marks echoed (queued to be sent) to
// the server, in order.
func (c *Call) EchoedMarks() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.echoed)
}

// WaitMessage returns the first message received (since the start of the
// call, not only from now on) for which pred is true, waiting for it until
// ctx ends or the call ends (ErrCallEnded). pred runs without locks held.
func (c *Call) WaitMessage(ctx context.Context, pred func(Message) bool) (Message, error) {
	next := 0
	for {
		c.mu.Lock()
		msgs, changed, ended := c.messages[next:], c.changed, c.ended
		c.mu.Unlock()
		for _, m := range msgs {
			if pred(m) {
				return m, nil
			}
		}
		next += len(msgs)
		if ended {
			return Message{}, ErrCallEnded
		}
		select {
		case <-ctx.Done():
			return Message{}, ctx.Err()
		case <-changed:
		}
	}
}

// WaitPlayedBytes waits until at least n bytes of outbound audio have played
// in total, until ctx ends or the call ends (ErrCallEnded).
func (c *Call) WaitPlayedBytes(ctx context.Context, n int) error {
	return c.wait(ctx, func() bool {
		c.advanceLocked(time.Now())
		return c.player.total >= n
	})
}

// WaitSpoken waits until all audio queued with Say has been put into media
// frames, until ctx ends or the call ends (ErrCallEnded).
func (c *Call) WaitSpoken(ctx context.Context) error {
	return c.wait(ctx, func() bool { return len(c.speech) == 0 })
}

// wait polls cond (run with c.mu held) on every change and every
// pollInterval.
func (c *Call) wait(ctx context.Context, cond func() bool) error {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		c.mu.Lock()
		ok := cond() // may replace c.changed: read it after
		changed, ended := c.changed, c.ended
		c.mu.Unlock()
		if ok {
			return nil
		}
		if ended {
			return ErrCallEnded
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		case <-tick.C:
		}
	}
}

// advanceLocked brings the player up to now while the call runs, echoing
// marks that became due. c.mu must be held.
func (c *Call) advanceLocked(now time.Time) {
	if c.ended {
		return
	}
	if echo := c.player.advance(now); len(echo) > 0 {
		c.echoLocked(echo)
		c.notifyLocked()
	}
}
