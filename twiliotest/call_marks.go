package twiliotest

import "time"

// MarkEcho is a mark the simulated Twilio echoed, and when: Twilio's mark
// clock, since a mark is echoed when the audio sent before it has played.
type MarkEcho struct {
	Name string
	At   time.Time
}

// MarkEchoes returns the marks echoed (queued to be sent) so far with their
// times, in order.
func (c *Call) MarkEchoes() []MarkEcho {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]MarkEcho, len(c.echoed))
	for i, name := range c.echoed {
		out[i] = MarkEcho{Name: name, At: c.echoedAt[i]}
	}
	return out
}

// Started is when the stream started: from then on the caller's frames
// flow, one every FrameInterval.
func (c *Call) Started() time.Time { return c.started }
