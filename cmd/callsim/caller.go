package main

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/vivi/bridge/bridge/realtime"
	"github.com/vivi/bridge/twiliotest"
)

// ringSize is how many recent frames of a call are remembered (10 s): an
// echo later than that is counted stale, i.e. lost.
const ringSize = 512

const (
	setupTimeout = 15 * time.Second // webhook, handshake and first agent audio
	idleTimeout  = 30 * time.Second // nothing received for that long ends a call
	stopWait     = 5 * time.Second  // after stop: how long the bridge may take to close
	writeTimeout = 10 * time.Second
)

// slot is what a call remembers of one frame, written by the pacer (sent),
// the echo model (modelIn, modelOut) and the reader (got), all on one clock.
type slot struct {
	seq      atomic.Uint32
	got      atomic.Bool
	sent     atomic.Int64
	modelIn  atomic.Int64
	modelOut atomic.Int64
}

// pendingMark is a mark waiting for its audio to have played.
type pendingMark struct {
	due  int64
	n    uint8
	name [47]byte
}

// caller is one simulated call. Its goroutine (run) places the call and
// then reads the stream; the pacer of its group writes everything after
// start. Fields are grouped by owner.
type caller struct {
	l         *load
	idx       int
	callSID   string
	streamSID string
	ws        *websocket.Conn // set before the pacer sees the call

	// owned by the writer: run until the call joins its group, then the pacer
	frames    twilioFrames
	chunk     int
	nextDue   int64 // when the next media frame is due
	nextDigit int64

	// owned by the reader (run)
	playEnd int64 // when the audio received so far has played
	buf     []byte

	mu    sync.Mutex // guards marks: the reader adds, the pacer echoes
	marks []pendingMark

	ring       [ringSize]slot
	answeredAt int64        // the webhook was posted; set before the reader starts
	liveAt     atomic.Int64 // first agent audio received (0: none yet)
	stopSent   atomic.Bool
	closed     atomic.Bool // the pacer leaves the call alone
	failure    atomic.Pointer[string]

	sent, echoed, agentFrames, marksEchoed, clears atomic.Int64
	dup, misrouted, stale, other                   atomic.Int64
}

func (c *caller) fail(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	c.failure.CompareAndSwap(nil, &s)
}

// run places the call and reads its stream until it ends.
func (c *caller) run(ctx context.Context) {
	l := c.l
	defer l.callers.Done()
	defer func() { c.closed.Store(true); l.poke() }()
	c.answeredAt = l.now()
	setup, cancel := context.WithTimeout(ctx, setupTimeout)
	streamURL, token, err := c.webhook(setup)
	if err == nil {
		err = c.dial(setup, streamURL, token)
	}
	cancel()
	if err != nil {
		c.fail("%v", err)
		return
	}
	defer c.ws.Close()
	c.nextDue = l.now() + int64(frameInterval) // Twilio sends media right after start
	if l.cfg.DTMF > 0 {
		c.nextDigit = c.nextDue + int64(l.cfg.DTMF)
	}
	l.groups[c.idx%len(l.groups)].add(c)
	err = c.readLoop()
	switch {
	case c.stopSent.Load():
	case c.liveAt.Load() == 0:
		c.fail("stream ended before any agent audio: %s", closeReason(err))
	default:
		c.fail("dropped by the bridge before stop: %s", closeReason(err))
	}
}

func closeReason(err error) string {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return fmt.Sprintf("close %d %s", ce.Code, clip(ce.Text, 60))
	}
	return clip(err.Error(), 80)
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// twimlAnswer is the part of the voice webhook's TwiML callsim follows.
type twimlAnswer struct {
	Reject *struct {
		Reason string `xml:"reason,attr"`
	} `xml:"Reject"`
	Connect *struct {
		Stream struct {
			URL    string `xml:"url,attr"`
			Params []struct {
				Name  string `xml:"name,attr"`
				Value string `xml:"value,attr"`
			} `xml:"Parameter"`
		} `xml:"Stream"`
	} `xml:"Connect"`
}

// webhook posts the signed voice webhook of a SIP Domain call and returns
// the stream URL and token of the <Connect><Stream> answer.
func (c *caller) webhook(ctx context.Context) (streamURL, token string, err error) {
	l := c.l
	from := fmt.Sprintf("sip:+1555%07d@%s", c.idx, l.cfg.SourceIP)
	form := url.Values{
		"AccountSid": {l.accountSID}, "ApiVersion": {"2010-04-01"}, "CallSid": {c.callSID},
		"CallStatus": {"ringing"}, "Called": {l.cfg.To}, "Caller": {from}, "Direction": {"inbound"},
		"From": {from}, "To": {l.cfg.To}, "SipCallId": {c.callSID + "@" + l.cfg.SourceIP},
		"SipDomain": {"vivi.sip.twilio.com"}, "SipDomainSid": {"SD00000000000000000000000000000000"},
		"SipSourceIp": {l.cfg.SourceIP},
	}
	resp, err := twiliotest.PostForm(ctx, l.client, l.bridgeURL, l.publicURL, "/twilio/voice", l.authToken, form)
	if err != nil {
		return "", "", errors.New("webhook: " + clip(err.Error(), 100))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", "", fmt.Errorf("webhook: read answer: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("webhook: HTTP %d", resp.StatusCode)
	}
	var doc twimlAnswer
	if err := xml.Unmarshal(body, &doc); err != nil {
		return "", "", fmt.Errorf("webhook: TwiML: %v", err)
	}
	if doc.Reject != nil {
		return "", "", fmt.Errorf("webhook: <Reject reason=%q>", doc.Reject.Reason)
	}
	if doc.Connect == nil || doc.Connect.Stream.URL == "" {
		return "", "", errors.New("webhook: TwiML has no <Connect><Stream>")
	}
	for _, p := range doc.Connect.Stream.Params {
		if p.Name == "token" {
			token = p.Value
		}
	}
	return doc.Connect.Stream.URL, token, nil
}

// dial opens the media stream as Twilio does (the handshake signed over the
// TwiML's wss:// URL, sent to the bridge's address) and sends connected and
// start.
func (c *caller) dial(ctx context.Context, streamURL, token string) error {
	l := c.l
	u, err := url.Parse(streamURL)
	if err != nil {
		return fmt.Errorf("stream url: %v", err)
	}
	target := strings.Replace(l.bridgeURL, "http", "ws", 1) + u.RequestURI()
	h := http.Header{twiliotest.SignatureHeader: {twiliotest.SignForm(l.authToken, streamURL, nil)}}
	ws, resp, err := l.dialer.DialContext(ctx, target, h)
	if err != nil {
		if resp != nil {
			return fmt.Errorf("stream handshake: HTTP %d", resp.StatusCode)
		}
		return errors.New("stream handshake: " + clip(err.Error(), 100))
	}
	ws.SetReadLimit(1 << 20)
	c.ws = ws
	_ = ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := ws.WriteMessage(websocket.TextMessage, connectedMessage()); err != nil {
		ws.Close()
		return fmt.Errorf("write connected: %v", err)
	}
	start := c.frames.start(l.accountSID, c.callSID, map[string]string{"token": token})
	if err := ws.WriteMessage(websocket.TextMessage, start); err != nil {
		ws.Close()
		return fmt.Errorf("write start: %v", err)
	}
	return nil
}

// readLoop reads what the bridge sends until the stream ends.
func (c *caller) readLoop() error {
	l := c.l
	var refreshed int64
	for {
		now := l.now()
		switch {
		case c.stopSent.Load(): // the pacer set the deadline of the close
		case c.liveAt.Load() == 0: // set-up: bounded as a whole
			_ = c.ws.SetReadDeadline(time.Now().Add(time.Duration(c.answeredAt + int64(setupTimeout) - now)))
		case now-refreshed >= int64(time.Second): // at most once a second, not per frame
			refreshed = now
			_ = c.ws.SetReadDeadline(time.Now().Add(idleTimeout))
		}
		_, r, err := c.ws.NextReader()
		if err == nil {
			c.buf, err = realtime.ReadAll(c.buf[:0], r)
		}
		if err != nil {
			return err
		}
		now = l.now()
		o := parseOutbound(c.buf)
		switch string(o.event) {
		case "media":
			c.onMedia(now, o.payload)
		case "mark":
			c.onMark(now, o.name)
		case "clear":
			c.onClear(now)
		default:
			c.other.Add(1)
		}
	}
}

// onMedia plays a chunk of the bridge's audio and, when it is the echo of
// one of our frames, times it.
func (c *caller) onMedia(now int64, payload []byte) {
	l := c.l
	c.playEnd = max(c.playEnd, now) + int64(decodedLen(payload))*int64(time.Millisecond)/8
	live := c.liveAt.Load()
	if live == 0 {
		live = now
		c.liveAt.Store(now)
		l.answer.add(now - c.answeredAt)
		l.poke()
	}
	h, ok := readHeader(payload)
	if !ok || h.magic != magicCaller {
		c.agentFrames.Add(1)
		return
	}
	if int(h.call) != c.idx&0xFFFF {
		c.misrouted.Add(1)
		return
	}
	s := &c.ring[h.seq%ringSize]
	if s.seq.Load() != h.seq {
		c.stale.Add(1)
		return
	}
	if s.got.Swap(true) {
		c.dup.Add(1)
		return
	}
	c.echoed.Add(1)
	if l.sendUntil.Load() != 0 {
		l.poke() // draining: the drain waits for the last echoes
	}
	sent := s.sent.Load()
	if sent <= live {
		return // held while the call was set up: not the steady state
	}
	l.roundTrip.add(now - sent)
	if in := s.modelIn.Load(); in != 0 {
		l.toModel.add(in - sent)
	}
	if out := s.modelOut.Load(); out != 0 {
		l.toTwilio.add(now - out)
	}
}

// onMark queues the echo of a mark for when the audio before it has played.
func (c *caller) onMark(now int64, name []byte) {
	m := pendingMark{due: max(c.playEnd, now), n: uint8(min(len(name), len(pendingMark{}.name)))}
	copy(m.name[:], name)
	c.mu.Lock()
	c.marks = append(c.marks, m)
	c.mu.Unlock()
}

// onClear empties the playback buffer: Twilio echoes every pending mark.
func (c *caller) onClear(now int64) {
	c.clears.Add(1)
	c.playEnd = now
	c.mu.Lock()
	for i := range c.marks {
		c.marks[i].due = now
	}
	c.mu.Unlock()
}

// dueMarks appends the marks due at now to dst and forgets them.
func (c *caller) dueMarks(dst []pendingMark, now int64) []pendingMark {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for n < len(c.marks) && c.marks[n].due <= now {
		n++
	}
	if n == 0 {
		return dst
	}
	dst = append(dst, c.marks[:n]...)
	c.marks = append(c.marks[:0], c.marks[n:]...)
	return dst
}
