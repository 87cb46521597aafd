package twiliotest

import (
	"bytes"
	"encoding/base64"
	"strconv"
	"testing"
	"time"

	"github.com/vivi/bridge/internal/testwait"
)

// mediaPayload decodes the payload of a media message from the client.
func mediaPayload(t *testing.T, m map[string]any) []byte {
	t.Helper()
	p, err := base64.StdEncoding.DecodeString(m["media"].(map[string]any)["payload"].(string))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// skipHandshakeMessages reads connected and start.
func skipHandshakeMessages(t *testing.T, bc *bridgeConn) {
	t.Helper()
	for _, want := range []string{"connected", "start"} {
		if m, _ := bc.next(t); m["event"] != want {
			t.Fatalf("got %v, want %s", m, want)
		}
	}
}

func TestMediaCadenceIsAbout20ms(t *testing.T) {
	b := newFakeBridge(t, 0)
	_, bc := dial(t, b, CallConfig{})
	skipHandshakeMessages(t, bc)
	_, first := bc.next(t)
	const window = 500 * time.Millisecond
	count := 1
	for {
		m, at := bc.next(t)
		if at.Sub(first) > window {
			break
		}
		if m["event"] == "media" {
			count++
		}
	}
	// 500 ms at 20 ms is 25 frames; the bounds only catch a wrong cadence.
	if count < 15 || count > 40 {
		t.Errorf("%d media frames in %v, want about 25", count, window)
	}
}

func TestSayIsSentInOrderInPaddedFrames(t *testing.T) {
	b := newFakeBridge(t, 0)
	c, bc := dial(t, b, CallConfig{})
	skipHandshakeMessages(t, bc)
	first := make([]byte, 400) // 2.5 frames
	for i := range first {
		first[i] = byte(i % 127)
	}
	second := bytes.Repeat([]byte{0x42}, FrameBytes)
	c.Say(first)
	c.Say(second)
	want := append(append(append([]byte{}, first...), bytes.Repeat([]byte{Silence}, 80)...), second...)

	var got []byte
	for len(got) < len(want) {
		m, _ := bc.next(t)
		if m["event"] != "media" {
			continue
		}
		p := mediaPayload(t, m)
		if len(p) != FrameBytes {
			t.Fatalf("frame of %d bytes", len(p))
		}
		if len(got) == 0 && bytes.Equal(p, bytes.Repeat([]byte{Silence}, FrameBytes)) {
			continue // silence before the speech
		}
		got = append(got, p...)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("speech frames = %x\nwant %x", got, want)
	}
	if err := c.WaitSpoken(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "SentAudio holds the speech", func() bool { return bytes.Contains(c.SentAudio(), want) })
	if sent := c.Sent(); len(c.SentAudio()) < sent*FrameBytes-FrameBytes || sent == 0 {
		t.Errorf("Sent() = %d frames for %d bytes", sent, len(c.SentAudio()))
	}
}

func TestDigitSendsDTMFEvent(t *testing.T) {
	b := newFakeBridge(t, 0)
	c, bc := dial(t, b, CallConfig{StreamSID: "MZdtmf"})
	skipHandshakeMessages(t, bc)
	c.Digit("5")
	m, _ := bc.nextEvent(t)
	if got := keys(t, m); got != "dtmf,event,sequenceNumber,streamSid" {
		t.Errorf("dtmf keys = %s", got)
	}
	d := m["dtmf"].(map[string]any)
	if got := keys(t, d); got != "digit,track" {
		t.Errorf("dtmf.dtmf keys = %s", got)
	}
	if m["event"] != "dtmf" || m["streamSid"] != "MZdtmf" || d["track"] != "inbound_track" || d["digit"] != "5" {
		t.Errorf("dtmf = %v", m)
	}
	if _, ok := m["sequenceNumber"].(string); !ok {
		t.Errorf("sequenceNumber = %#v, want a string", m["sequenceNumber"])
	}
}

func TestMarkIsEchoedAfterItsAudioPlayed(t *testing.T) {
	b := newFakeBridge(t, 0)
	c, bc := dial(t, b, CallConfig{})
	skipHandshakeMessages(t, bc)
	sid := c.StreamSID()

	bc.sendMark(t, sid, "idle") // nothing buffered: echoed at once
	m, _ := bc.nextEvent(t)
	if m["event"] != "mark" || m["mark"].(map[string]any)["name"] != "idle" {
		t.Fatalf("got %v, want the echo of mark idle", m)
	}

	audio := bytes.Repeat([]byte{0x10}, 800) // 100 ms
	bc.sendMedia(t, sid, audio)
	bc.sendMark(t, sid, "m1")
	sent := time.Now()
	m, at := bc.nextEvent(t)
	if got := keys(t, m); got != "event,mark,sequenceNumber,streamSid" {
		t.Errorf("mark echo keys = %s", got)
	}
	if got := keys(t, m["mark"]); got != "name" {
		t.Errorf("mark echo mark keys = %s", got)
	}
	if m["event"] != "mark" || m["streamSid"] != sid || m["mark"].(map[string]any)["name"] != "m1" {
		t.Fatalf("got %v, want the echo of mark m1", m)
	}
	if _, ok := m["sequenceNumber"].(string); !ok {
		t.Errorf("sequenceNumber = %#v, want a string", m["sequenceNumber"])
	}
	if d := at.Sub(sent); d < 80*time.Millisecond {
		t.Errorf("mark echoed %v after its 100 ms of audio was sent, want >= ~100ms", d)
	}
	if got := c.PlayedAudio(); !bytes.Equal(got, audio) {
		t.Errorf("PlayedAudio = %d bytes, want the 800 sent", len(got))
	}
	if got := c.EchoedMarks(); len(got) != 2 || got[0] != "idle" || got[1] != "m1" {
		t.Errorf("EchoedMarks = %q", got)
	}
}

func TestClearEchoesPendingMarksAndDropsAudio(t *testing.T) {
	b := newFakeBridge(t, 0)
	c, bc := dial(t, b, CallConfig{})
	skipHandshakeMessages(t, bc)
	sid := c.StreamSID()

	part := make([]byte, 16000) // 2 s each
	for i := range part {
		part[i] = byte(i % 200)
	}
	bc.sendMedia(t, sid, part)
	bc.sendMark(t, sid, "a")
	bc.sendMedia(t, sid, part)
	bc.sendMark(t, sid, "b")
	if err := c.WaitPlayedBytes(ctxT(t), 1600); err != nil {
		t.Fatal(err)
	}
	bc.send(t, map[string]any{"event": "clear", "streamSid": sid})
	var names []string
	for len(names) < 2 {
		m, _ := bc.nextEvent(t)
		if m["event"] == "mark" {
			names = append(names, m["mark"].(map[string]any)["name"].(string))
		}
	}
	if names[0] != "a" || names[1] != "b" {
		t.Errorf("echoed %q, want [a b]", names)
	}
	clears := c.Clears()
	if len(clears) != 1 {
		t.Fatalf("Clears = %+v", clears)
	}
	ci := clears[0]
	if len(ci.PendingMarks) != 2 || ci.PendingMarks[0] != "a" || ci.PendingMarks[1] != "b" {
		t.Errorf("PendingMarks = %q", ci.PendingMarks)
	}
	if ci.PlayedBytesTotal < 1600 || ci.PlayedBytesTotal >= len(part) ||
		ci.PlayedBytesOfSinceLastIdle != ci.PlayedBytesTotal || ci.PlayedBytesTotal+ci.ClearedBytes != 2*len(part) {
		t.Errorf("clear = %+v", ci)
	}
	// Nothing more may play: the clear emptied the buffer (what the player
	// plays from), so the played audio is final, not a snapshot.
	if n := c.BufferedBytes(); n != 0 {
		t.Fatalf("BufferedBytes = %d after the clear", n)
	}
	played := c.PlayedAudio()
	if len(played) != ci.PlayedBytesTotal || !bytes.Equal(played, part[:len(played)]) {
		t.Errorf("PlayedAudio = %d bytes, want the %d played before the clear", len(played), ci.PlayedBytesTotal)
	}
	if got := c.ReceivedAudio(); len(got) != 2*len(part) {
		t.Errorf("ReceivedAudio = %d bytes", len(got))
	}
}

func TestSequenceNumbersFollowTheWireOrder(t *testing.T) {
	b := newFakeBridge(t, 0)
	c, bc := dial(t, b, CallConfig{})
	bc.next(t) // connected has none
	m, _ := bc.next(t)
	last, _ := strconv.Atoi(m["sequenceNumber"].(string))
	bc.sendMark(t, c.StreamSID(), "x")
	c.Digit("#")
	var events []string
	for {
		m, _ := bc.next(t)
		n, err := strconv.Atoi(m["sequenceNumber"].(string))
		if err != nil || n != last+1 {
			t.Fatalf("%s sequenceNumber %v after %d", m["event"], m["sequenceNumber"], last)
		}
		last = n
		if m["event"] != "media" {
			events = append(events, m["event"].(string))
		}
		if len(events) == 2 {
			break
		}
	}
	if len(events) != 2 {
		t.Errorf("events = %q", events)
	}
}

// waitFor waits until cond holds or waitTime passes (see testwait.Until).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.Until(t, waitTime, "until "+what, cond)
}

func TestDiscardAudioKeepsCountsOnly(t *testing.T) {
	b := newFakeBridge(t, 0)
	c, bc := dial(t, b, CallConfig{DiscardAudio: true})
	skipHandshakeMessages(t, bc)
	bc.sendMedia(t, c.StreamSID(), make([]byte, 800))
	bc.sendMark(t, c.StreamSID(), "m")
	if _, err := c.WaitMessage(ctxT(t), func(m Message) bool { return m.Mark == "m" }); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitPlayedBytes(ctxT(t), 800); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the mark is echoed", func() bool { return len(c.EchoedMarks()) == 1 })
	waitFor(t, "a frame is sent", func() bool { return c.Sent() > 0 })
	if c.ReceivedBytes() != 800 || c.PlayedBytes() != 800 {
		t.Errorf("ReceivedBytes %d, PlayedBytes %d, want 800 each", c.ReceivedBytes(), c.PlayedBytes())
	}
	if len(c.ReceivedAudio())+len(c.PlayedAudio())+len(c.SentAudio()) != 0 || c.Messages()[0].Payload != nil {
		t.Error("audio kept despite DiscardAudio")
	}
}
