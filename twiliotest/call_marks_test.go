package twiliotest

import (
	"bytes"
	"testing"
	"time"
)

// MarkEchoes is Twilio's mark clock: each echo with when it was queued, a
// mark behind 100 ms of audio about 100 ms after one with nothing before it.
func TestMarkEchoesCarryTheirTimes(t *testing.T) {
	b := newFakeBridge(t, 0)
	c, bc := dial(t, b, CallConfig{})
	skipHandshakeMessages(t, bc)
	sid := c.StreamSID()
	bc.sendMark(t, sid, "idle")
	bc.nextEvent(t)
	bc.sendMedia(t, sid, bytes.Repeat([]byte{0x10}, 800))
	bc.sendMark(t, sid, "m1")
	bc.nextEvent(t)
	echoes := c.MarkEchoes()
	if len(echoes) != 2 || echoes[0].Name != "idle" || echoes[1].Name != "m1" {
		t.Fatalf("MarkEchoes = %+v", echoes)
	}
	if d := echoes[1].At.Sub(echoes[0].At); d < 80*time.Millisecond {
		t.Errorf("m1 echoed %v after idle, want about the 100 ms of audio before it", d)
	}
	if c.Started().IsZero() || echoes[0].At.Before(c.Started()) {
		t.Errorf("Started %v, first echo %v", c.Started(), echoes[0].At)
	}
}
