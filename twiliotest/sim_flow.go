package twiliotest

import (
	"context"
	"fmt"
	"net/url"
	"path"
	"strconv"
	"time"

	"go.uber.org/zap"
)

// run is the call loop: the only goroutine that acts on the call once it is
// live. It plays hang-ups and REST updates in the order they came and
// notices when the bridge ends the stream, until the call ends or Close.
func (c *SimCall) run() {
	defer c.t.wg.Done()
	for c.Outcome() == "" {
		var streamDone <-chan struct{}
		if c.cur != nil {
			streamDone = c.cur.Done()
		}
		select {
		case <-c.t.ctx.Done():
			c.closeNow()
		case cmd := <-c.cmds:
			c.apply(cmd)
		case <-streamDone:
			select {
			case cmd := <-c.cmds:
				// An update accepted before the socket ended (the bridge
				// closes it after its REST call) replaced the <Connect>:
				// its action is not requested.
				c.apply(cmd)
			default:
				c.streamEnded()
			}
		}
	}
}

// apply plays one command.
func (c *SimCall) apply(cmd simCmd) {
	ctx := c.t.ctx
	switch cmd.kind {
	case cmdHangup:
		c.event("hangup")
		c.stopStream(ctx, "hangup")
		c.end(OutcomeCompleted, true)
	case cmdStatusCompleted:
		c.event("REST update: Status=completed")
		c.stopStream(ctx, "bridge hung up")
		c.end(OutcomeCompleted, true)
	case cmdTwiML:
		name, v := cmd.doc.first()
		what, reason := "REST update: "+verbName(name), "update"
		switch name {
		case "Refer":
			reason = "transfer"
			if len(v.Sips) > 0 {
				what += " " + v.Sips[0]
			}
		case "Hangup":
			reason = "bridge hung up"
		}
		c.event(what)
		c.stopStream(ctx, reason) // Twilio stops the stream for the new TwiML
		c.execute(cmd.doc, c.t.public, OutcomeCompleted)
	case cmdNote:
		c.event(cmd.note)
	}
}

// execute plays a document that base was answered with (relative URLs
// resolve against base), the stream having stopped: <Connect> opens a new
// stream, <Hangup/> (or <Reject>, or nothing) ends the call with
// hangupOutcome, <Refer> transfers and plays what its action answers.
func (c *SimCall) execute(doc *document, base *url.URL, hangupOutcome string) {
	for range maxDocuments {
		name, v := doc.first()
		switch name {
		case "Connect":
			plan, err := v.plan(base)
			if err == nil {
				err = c.openStream(c.t.ctx, plan)
			}
			if err != nil {
				c.fail(err)
			}
			return
		case "Hangup", "Reject", "":
			c.end(hangupOutcome, true)
			return
		case "Refer":
			next, nextBase, outcome, err := c.refer(v, base)
			if err != nil {
				c.fail(err)
				return
			}
			if next == nil { // the call has ended
				return
			}
			doc, base, hangupOutcome = next, nextBase, outcome
		default:
			c.fail(fmt.Errorf("<%s> is not simulated", name))
			return
		}
	}
	c.fail(fmt.Errorf("more than %d TwiML documents in a row without a stream", maxDocuments))
}

// refer plays a <Refer>: the PBX answers (SetReferOutcome), Twilio posts
// the outcome to the action URL and plays its answer, which refer returns
// with the outcome a <Hangup/> would give. Without an action, or when the
// caller hung up during the transfer, the call ends here (nil document).
func (c *SimCall) refer(v verb, base *url.URL) (*document, *url.URL, string, error) {
	plan, err := v.referPlan(base)
	if err != nil {
		return nil, nil, "", err
	}
	out := c.t.referOutcome(c.sid, plan.target)
	status := out.CallStatus
	if status == "" {
		status = "none (no NOTIFY)"
	}
	hangupOutcome := OutcomeCompleted
	if out.CallStatus == "in-progress" {
		hangupOutcome = OutcomeTransferred
	}
	if plan.action == nil {
		c.event("refer " + status + " (no action)")
		c.end(hangupOutcome, true)
		return nil, nil, "", nil
	}
	form := c.standardParams("in-progress")
	if out.CallStatus != "" {
		form.Set("ReferCallStatus", out.CallStatus)
	}
	form.Set("ReferSipResponseCode", out.ReferSIPCode)
	if out.CallStatus != "" && out.NotifySIPCode != "" {
		form.Set("NotifySipResponseCode", out.NotifySIPCode)
	}
	if out.CallStatus == "canceled" { // the caller is gone: the answer does not matter
		c.callback(c.t.ctx, "refer-status canceled (the caller hung up)", plan.action, form)
		c.end(OutcomeCompleted, true)
		return nil, nil, "", nil
	}
	doc, err := c.t.fetch(c.t.ctx, plan.action, form)
	if err != nil {
		return nil, nil, "", fmt.Errorf("refer-status %s: %w", status, err)
	}
	name, _ := doc.first()
	c.event(path.Base(plan.action.Path) + " " + status + " -> " + verbName(name))
	return doc, plan.action, hangupOutcome, nil
}

// streamEnded plays what Twilio does when the stream ends without our `stop`
// (the bridge closed the websocket, or it broke): it requests the <Connect
// action> and plays its answer (without an action the call ends). The
// stream status callback is posted after the action request, the order in
// which the bridge tells a reconnect from an ended stream (the real order is
// not documented).
func (c *SimCall) streamEnded() {
	cur, plan := c.cur, c.curPlan
	c.cur = nil
	ctx := c.t.ctx
	statusForm := c.streamForm(cur.StreamSID(), plan, "stream-stopped")
	switch err := cur.Err(); {
	case cur.ClosedByServer() && err == nil:
		c.event("stream " + cur.StreamSID() + " closed by the bridge")
	case cur.ClosedByServer():
		c.event("stream " + cur.StreamSID() + " closed by the bridge: " + err.Error())
	default:
		what := "closed"
		if err != nil {
			what = err.Error()
		}
		c.event("stream " + cur.StreamSID() + " lost: " + what)
		statusForm.Set("StreamEvent", "stream-error")
		statusForm.Set("StreamError", "stream connection lost: "+what)
	}
	postStatus := func() {
		if plan.statusCB != nil {
			c.callback(ctx, "stream-status "+statusForm.Get("StreamEvent"), plan.statusCB, statusForm)
		}
	}
	if plan.action == nil {
		postStatus()
		c.end(OutcomeCompleted, true)
		return
	}
	doc, err := c.t.fetch(ctx, plan.action, c.standardParams("in-progress"))
	postStatus()
	if err != nil {
		c.fail(fmt.Errorf("connect action: %w", err))
		return
	}
	name, _ := doc.first()
	c.event(path.Base(plan.action.Path) + " -> " + verbName(name))
	c.execute(doc, plan.action, OutcomeCompleted)
}

// openStream opens a media stream for plan, like Twilio on <Connect><Stream>:
// dial the bridge (signed over the TwiML's wss:// URL), then post
// stream-started. When the dial fails it posts stream-error.
func (c *SimCall) openStream(ctx context.Context, plan connectPlan) error {
	sid := NewStreamSID()
	c.mu.Lock()
	n := len(c.streams)
	c.mu.Unlock()
	if n >= maxStreams {
		return fmt.Errorf("more than %d streams on one call", maxStreams)
	}
	scheme := "ws"
	if c.t.bridge.Scheme == "https" {
		scheme = "wss"
	}
	dialURL := url.URL{Scheme: scheme, Host: c.t.bridge.Host, Path: plan.streamURL.Path, RawPath: plan.streamURL.RawPath}
	call, err := Dial(ctx, CallConfig{
		URL: dialURL.String(), SignURL: plan.streamURL.String(), AuthToken: c.t.cfg.AuthToken,
		AccountSID: c.t.cfg.AccountSID, CallSID: c.sid, StreamSID: sid, Parameters: plan.params,
		FrameInterval: c.t.cfg.FrameInterval, DiscardAudio: c.t.cfg.DiscardAudio, Logger: c.t.log,
	})
	if err != nil {
		c.event("stream " + sid + " failed: " + err.Error())
		if plan.statusCB != nil {
			form := c.streamForm(sid, plan, "stream-error")
			form.Set("StreamError", err.Error())
			c.callback(c.t.ctx, "stream-status stream-error", plan.statusCB, form)
		}
		return fmt.Errorf("open stream: %w", err)
	}
	c.cur, c.curPlan = call, plan
	c.mu.Lock()
	c.streams = append(c.streams, call)
	c.mu.Unlock()
	c.event("stream " + sid + " opened")
	if plan.statusCB != nil {
		c.callback(c.t.ctx, "stream-status stream-started", plan.statusCB, c.streamForm(sid, plan, "stream-started"))
	}
	return nil
}

// stopStream ends the live stream with `stop` (Twilio's way), waits until
// it has closed, and posts stream-stopped.
func (c *SimCall) stopStream(ctx context.Context, reason string) {
	cur, plan := c.cur, c.curPlan
	if cur == nil {
		return
	}
	c.cur = nil
	stopAndWait(ctx, cur)
	c.event("stream " + cur.StreamSID() + " stopped (" + reason + ")")
	if plan.statusCB != nil {
		c.callback(ctx, "stream-status stream-stopped", plan.statusCB, c.streamForm(cur.StreamSID(), plan, "stream-stopped"))
	}
}

// stopAndWait sends `stop` and waits for the stream to end: the bridge
// closes it, or after stopWait (or when ctx ends) it is dropped.
func stopAndWait(ctx context.Context, s *Call) {
	s.Stop()
	wait := time.NewTimer(stopWait)
	defer wait.Stop()
	select {
	case <-s.Done():
		return
	case <-ctx.Done():
	case <-wait.C:
	}
	s.Close()
	<-s.Done()
}

// closeNow ends the call for Twilio.Close: `stop` on the stream, no callbacks.
func (c *SimCall) closeNow() {
	if c.cur != nil {
		stopAndWait(context.Background(), c.cur) // bounded by stopWait
		c.event("stream " + c.cur.StreamSID() + " stopped (simulator closed)")
		c.cur = nil
	}
	c.end(OutcomeClosed, false)
}

// fail ends the call after something the simulator cannot play like Twilio.
func (c *SimCall) fail(err error) {
	c.log.Debug("twiliotest: call failed", zap.Error(err))
	c.event("failed: " + err.Error())
	if c.cur != nil { // not reached today: every failure happens between streams
		stopAndWait(c.t.ctx, c.cur)
		c.cur = nil
	}
	c.end(OutcomeFailed, true)
}

// end records the outcome and closes Done, after posting the call status
// callback (completed) when postStatus is set. Once Close has begun the
// outcome is OutcomeClosed and nothing is posted.
func (c *SimCall) end(outcome string, postStatus bool) {
	if outcome != OutcomeRejected && c.t.ctx.Err() != nil {
		outcome, postStatus = OutcomeClosed, false
	}
	if postStatus {
		form := c.standardParams("completed")
		form.Set("CallDuration", strconv.Itoa(int(time.Since(c.answered).Seconds())))
		form.Set("SipResponseCode", "200")
		form.Set("Timestamp", time.Now().UTC().Format(callTimeFormat))
		form.Set("CallbackSource", "call-progress-events")
		form.Set("SequenceNumber", strconv.Itoa(c.seq))
		c.seq++
		target, _ := url.Parse(c.t.public.String() + callStatusPath)
		c.callback(c.t.ctx, "call-status completed", target, form)
	}
	c.t.unregister(c.sid, true)
	if outcome != OutcomeRejected {
		c.t.rest.setCallStatus(c.sid, "completed")
	}
	c.mu.Lock()
	c.outcome = outcome
	c.events = append(c.events, SimEvent{At: time.Now(), What: "call ended: " + outcome})
	c.notifyLocked()
	c.mu.Unlock()
	close(c.done)
}

// callback posts a status callback and logs the result; Twilio does not act
// on the answer, so neither does the simulator.
func (c *SimCall) callback(ctx context.Context, what string, target *url.URL, form url.Values) {
	status, _, err := c.t.post(ctx, target, form)
	switch {
	case err != nil:
		c.event(what + " failed: " + err.Error())
	case status/100 != 2:
		c.event(what + " answered HTTP " + strconv.Itoa(status))
	default:
		c.event(what)
	}
}

// standardParams are the parameters of every TwiML request about the call.
func (c *SimCall) standardParams(callStatus string) url.Values {
	return url.Values{
		"AccountSid": {c.t.cfg.AccountSID},
		"ApiVersion": {"2010-04-01"},
		"CallSid":    {c.sid},
		"CallStatus": {callStatus},
		"Called":     {c.to},
		"Caller":     {c.from},
		"Direction":  {"inbound"},
		"From":       {c.from},
		"To":         {c.to},
	}
}

// voiceForm is the voice webhook of a SIP Domain call (twilio.md §4).
func (c *SimCall) voiceForm(p CallParams) url.Values {
	form := c.standardParams("ringing")
	form.Set("SipCallId", randomHex()+"@"+p.SourceIP)
	form.Set("SipDomain", sipHost(c.to))
	form.Set("SipDomainSid", c.t.domainSID)
	form.Set("SipSourceIp", p.SourceIP)
	for k, vs := range p.Extra {
		if len(vs) == 0 {
			form.Del(k)
			continue
		}
		form[k] = append([]string(nil), vs...)
	}
	return form
}

// streamForm is a stream statusCallback (twilio.md §8.1).
func (c *SimCall) streamForm(streamSID string, plan connectPlan, event string) url.Values {
	name := plan.name
	if name == "" {
		name = streamSID
	}
	return url.Values{
		"AccountSid":  {c.t.cfg.AccountSID},
		"CallSid":     {c.sid},
		"StreamSid":   {streamSID},
		"StreamName":  {name},
		"StreamEvent": {event},
		"Timestamp":   {time.Now().UTC().Format(streamTimeFormat)},
	}
}
