package twiliotest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// CallParams describes the INVITE a PBX sends to the SIP Domain.
type CallParams struct {
	// CallSID defaults to NewCallSID().
	CallSID string
	// From is the INVITE's From URI; default sip:+15555550100@<SIP domain>.
	From string
	// To is the INVITE's request URI, e.g.
	// sip:1001@vivi.sip.twilio.com;transport=tls (required); its host is the
	// SipDomain.
	To string
	// SourceIP is the address the INVITE came from: SipSourceIp (required).
	SourceIP string
	// Extra adds parameters to the voice webhook or replaces the defaults
	// (e.g. SipHeader_X-Foo); a name with no values removes the parameter.
	Extra url.Values
}

// SimEvent is one entry of a call's log of what Twilio did.
type SimEvent struct {
	At   time.Time
	What string
}

// String formats the event as "15:04:05.000 what".
func (e SimEvent) String() string { return e.At.Format("15:04:05.000") + " " + e.What }

// SimCall is one call placed through a Twilio simulator.
type SimCall struct {
	t        *Twilio
	log      *zap.Logger
	sid      string
	from, to string
	cmds     chan simCmd   // REST updates and hang-ups for the loop; never closed
	done     chan struct{} // closed when the call has ended

	// Owned by the call loop (by PlaceCall before the loop starts).
	cur      *Call       // the live stream, nil between streams
	curPlan  connectPlan // the <Connect> of cur
	answered time.Time
	seq      int // SequenceNumber of call progress events

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every change, for waiters
	streams  []*Call
	events   []SimEvent
	rejected string
	outcome  string
}

// simCmd is something that happens to a call from outside its loop.
type simCmd struct {
	kind cmdKind
	doc  *document // cmdTwiML
	note string    // cmdNote
}

type cmdKind int

const (
	cmdHangup          cmdKind = iota // the caller hangs up
	cmdStatusCompleted                // REST update Status=completed
	cmdTwiML                          // REST update Twiml=...
	cmdNote                           // a REST update that changes nothing: recorded
)

// PlaceCall plays an INVITE arriving at the SIP Domain: it posts the signed
// voice webhook with the parameters a SIP Domain sends, and follows the
// TwiML answer. <Reject reason> gives a call that has ended (Rejected,
// OutcomeRejected); <Connect><Stream> opens the media stream (Stream) and
// posts the stream-started status callback; the call then lives until it is
// hung up by either side or transferred away. Any other answer is an error,
// as is a webhook that does not answer 2xx (*WebhookError) and a stream that
// does not open (a *HandshakeError when the bridge refused the websocket;
// stream-error is posted first). ctx bounds the webhook and the handshake
// only; the call itself lives until it ends or Close.
func (t *Twilio) PlaceCall(ctx context.Context, p CallParams) (*SimCall, error) {
	if t.cfgErr != nil {
		return nil, t.cfgErr
	}
	if p.To == "" || p.SourceIP == "" {
		return nil, errors.New("twiliotest: place call: To and SourceIP are required")
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, ErrTwilioClosed
	}
	t.wg.Add(1) // handed to the call loop when the call goes live
	t.mu.Unlock()
	live := false
	defer func() {
		if !live {
			t.wg.Done()
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(t.ctx, cancel)() // Close cancels the webhook too

	c := newSimCall(t, p)
	voiceURL, _ := url.Parse(t.public.String() + voicePath) // the public URL parsed already
	doc, err := t.fetch(ctx, voiceURL, c.voiceForm(p))
	if err != nil {
		return nil, fmt.Errorf("twiliotest: place call %s: voice webhook: %w", c.sid, err)
	}
	switch name, v := doc.first(); name {
	case "Reject":
		reason := v.Reason
		if reason == "" {
			reason = "rejected"
		}
		c.event("webhook -> Reject " + reason)
		c.mu.Lock()
		c.rejected = reason
		c.mu.Unlock()
		c.end(OutcomeRejected, false)
		return c, nil
	case "Connect":
		plan, err := v.plan(voiceURL)
		if err != nil {
			return nil, fmt.Errorf("twiliotest: place call %s: voice webhook: %w", c.sid, err)
		}
		c.event("webhook -> Connect")
		if err := t.register(c); err != nil {
			return nil, err
		}
		c.answered = time.Now()
		if err := c.openStream(ctx, plan); err != nil {
			t.unregister(c.sid, false)
			return nil, fmt.Errorf("twiliotest: place call %s: %w", c.sid, err)
		}
		t.rest.setCallStatus(c.sid, "in-progress")
		live = true
		go c.run()
		return c, nil
	default:
		return nil, fmt.Errorf("twiliotest: place call %s: voice webhook answered %s, want <Connect> or <Reject>", c.sid, verbName(name))
	}
}

func newSimCall(t *Twilio, p CallParams) *SimCall {
	if p.CallSID == "" {
		p.CallSID = NewCallSID()
	}
	if p.From == "" {
		p.From = "sip:+15555550100@" + sipHost(p.To)
	}
	return &SimCall{
		t:       t,
		log:     t.log.With(zap.String("call_sid", p.CallSID)),
		sid:     p.CallSID,
		from:    p.From,
		to:      p.To,
		cmds:    make(chan simCmd, cmdQueueSize),
		done:    make(chan struct{}),
		changed: make(chan struct{}),
	}
}

// sipHost returns the host of a SIP URI: sip:1001@vivi.sip.twilio.com;transport=tls
// -> vivi.sip.twilio.com.
func sipHost(uri string) string {
	uri = strings.Trim(uri, "<>")
	if _, rest, ok := strings.Cut(uri, "@"); ok {
		uri = rest
	} else if _, rest, ok := strings.Cut(uri, ":"); ok {
		uri = rest
	}
	host, _, _ := strings.Cut(uri, ";")
	host, _, _ = strings.Cut(host, "?")
	host, _, _ = strings.Cut(host, ":") // a port
	return strings.Trim(host, ">")
}

// CallSID returns the call SID.
func (c *SimCall) CallSID() string { return c.sid }

// Rejected returns the reason of the <Reject> that refused the call
// ("rejected" or "busy"), or "" when the call was answered.
func (c *SimCall) Rejected() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rejected
}

// Stream returns the call's current media stream: the last one opened (it
// changes when the call resumes after a failed transfer or a reconnect), or
// nil for a rejected call.
func (c *SimCall) Stream() *Call {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.streams) == 0 {
		return nil
	}
	return c.streams[len(c.streams)-1]
}

// Streams returns every media stream of the call, in order.
func (c *SimCall) Streams() []*Call {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.streams)
}

// WaitStream waits until the n-th (from 1) stream of the call has opened and
// returns it; ErrCallEnded when the call ended before.
func (c *SimCall) WaitStream(ctx context.Context, n int) (*Call, error) {
	if n < 1 {
		return nil, fmt.Errorf("twiliotest: WaitStream(%d): n counts from 1", n)
	}
	for {
		c.mu.Lock()
		var s *Call
		if len(c.streams) >= n {
			s = c.streams[n-1]
		}
		changed, ended := c.changed, c.outcome != ""
		c.mu.Unlock()
		switch {
		case s != nil:
			return s, nil
		case ended:
			return nil, ErrCallEnded
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		}
	}
}

// Hangup plays the caller hanging up: `stop` on the stream, then the
// stream-stopped status callback and the call status callback (completed).
// It returns when the call has ended or ctx ends; on a call that has ended
// already it does nothing.
func (c *SimCall) Hangup(ctx context.Context) {
	select {
	case <-c.done:
		return
	case <-ctx.Done():
		return
	case c.cmds <- simCmd{kind: cmdHangup}:
	}
	select {
	case <-c.done:
	case <-ctx.Done():
	}
}

// Done is closed when the call has ended: hung up by either side,
// transferred away, rejected, failed or closed.
func (c *SimCall) Done() <-chan struct{} { return c.done }

// Outcome returns how the call ended (OutcomeCompleted, OutcomeTransferred,
// OutcomeRejected, OutcomeFailed, OutcomeClosed), or "" while it is live.
func (c *SimCall) Outcome() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.outcome
}

// Events returns the log of what Twilio did on this call, in order, e.g.
// "webhook -> Connect", "stream MZ... opened", "REST update: Refer sip:...",
// "stream MZ... stopped (transfer)", "refer-status busy -> Connect",
// "hangup", "call-status completed", "call ended: completed".
func (c *SimCall) Events() []SimEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.events)
}

// event appends to the log.
func (c *SimCall) event(what string) {
	c.log.Debug("twiliotest: call event", zap.String("event", what))
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, SimEvent{At: time.Now(), What: what})
	c.notifyLocked()
}

func (c *SimCall) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// verbName names a document's first verb for the log.
func verbName(name string) string {
	if name == "" {
		return "empty <Response>"
	}
	return name
}
