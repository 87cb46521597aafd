package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/vivi/bridge/bridge/realtime"
	"github.com/vivi/bridge/internal/redact"
	"github.com/vivi/bridge/session"
)

// Tool names offered to the model.
const (
	toolTransfer = "transfer_call"
	toolEndCall  = "end_call"
)

// maxDropItems bounds the list of interrupted items whose late audio is dropped.
const maxDropItems = 8

// onSpeechStarted is the barge-in: when the agent's audio is still playing,
// Twilio's buffer is cleared and the model's item is cut where the caller
// stopped hearing it. Nothing is sent when nothing is playing.
func (c *call) onSpeechStarted() {
	cuts := c.play.interrupt(c.now())
	// Audio held back by pacing was never sent: dropped, and its items
	// (not already cut) cut at 0, as nothing of them was heard.
	for _, item := range c.dropHeldAudio() {
		if !slices.ContainsFunc(cuts, func(t truncation) bool { return t.item == item }) {
			cuts = append(cuts, truncation{item: item})
		}
	}
	if cuts == nil {
		return
	}
	b := c.srv.pool.get()
	*b = append(*b, c.frames.clear...)
	c.toTwilio(outFrame{buf: b})
	for _, cut := range cuts {
		c.toModelJSON(realtime.Truncate(cut.item, cut.audioEndMs))
		if !slices.Contains(c.dropItems, cut.item) {
			c.dropItems = append(c.dropItems, cut.item)
		}
	}
	if n := len(c.dropItems); n > maxDropItems {
		c.dropItems = slices.Delete(c.dropItems, 0, n-maxDropItems)
	}
	c.srv.metrics.bargeIns.Inc()
	c.record(session.EventBargeIn, fmt.Sprintf("audio_end_ms=%d item=%s", cuts[0].audioEndMs, cuts[0].item))
	c.log.Info("barge-in", zap.String("item", cuts[0].item), zap.Int("audio_end_ms", cuts[0].audioEndMs))
	c.checkWaits()
}

func (c *call) onResponseDone() {
	c.respActive = false
	if c.respWanted {
		c.respWanted = false
		c.createResponse("")
	}
	c.hangup.responseDone(c.cfg.After, c.cfg.HangupWait)
	c.xferWait.responseDone(c.cfg.After, c.cfg.HangupWait)
	c.checkWaits()
}

// requestResponse asks the model to speak, after the active response if any
// (a second response.create would be refused). At most one response.create
// is outstanding: requests meanwhile fold into one, sent when the response
// ends.
func (c *call) requestResponse() {
	if c.respActive || c.respAsked {
		c.respWanted = true
		return
	}
	c.createResponse("")
}

// createResponse sends a response.create and remembers that it is
// outstanding until the model's response.created (or an error) answers it.
func (c *call) createResponse(instructions string) {
	if c.model == nil {
		return
	}
	c.respAsked = true
	c.toModelJSON(realtime.CreateResponse(instructions))
}

// onResponseCreated: a response runs, ours or one the model's turn
// detection started.
func (c *call) onResponseCreated() {
	c.respActive, c.respAsked = true, false
}

// onToolCall acts on one tool call (onFunctionCall makes it once per
// call_id, when its name and arguments are known).
func (c *call) onToolCall(callID, name, args string) {
	c.tools.acted++
	if c.tools.acted <= maxRecordedToolCalls {
		c.record(session.EventToolCall, clip(name+" "+args, 500))
		c.log.Info("tool call", zap.String("tool", clip(name, 40)))
	} else {
		// Whatever the model sends, the timeline (Redis writes) and the
		// log get a bounded share of it.
		c.anomaly("tool_calls", "model keeps calling tools: not recorded", zap.String("tool", clip(name, 40)))
	}
	switch name {
	case toolEndCall:
		c.toModelJSON(c.functionOutput(callID, `{"ok":true}`))
		c.startHangup()
	case toolTransfer:
		var a struct {
			Destination string `json:"destination"`
		}
		_ = json.Unmarshal([]byte(args), &a)
		d, ok := c.agent.Destination(a.Destination)
		if !ok {
			c.log.Info("transfer_call to an unknown destination refused", zap.String("destination", clip(a.Destination, 80)))
			c.record(session.EventTransferFailed, "refused unknown destination "+strconv.Quote(clip(a.Destination, 80))+" (via tool)")
			c.toolOutput(callID, `{"ok":false,"error":"unknown destination"}`)
			return
		}
		c.startTransfer(d, ViaTool, callID)
	default:
		c.toolOutput(callID, `{"ok":false,"error":"unknown tool"}`)
	}
}

// toolOutput answers a tool call and lets the model speak about it, within
// the round budget (toolRound).
func (c *call) toolOutput(callID, output string) { c.toolRound(callID, output) }

// startTransfer hands the call to d once the agent's current speech (the
// announcement, "transferring you to the front desk") has finished playing:
// the response carrying it done and the mark of its last audio echoed, each
// wait bounded by HangupWait. callID is the tool call to answer, or "" for a
// DTMF or operator transfer.
func (c *call) startTransfer(d Destination, via, callID string) {
	if c.srv.deps.Transfers == nil {
		c.log.Info("transfer requested (transfers not enabled)", zap.String("destination", d.Name), zap.String("via", via))
		if callID != "" {
			c.toolOutput(callID, `{"ok":false,"error":"transfers are not available"}`)
		}
		return
	}
	if c.migr.started {
		// The REST update moving the call may win over the REFER's: the
		// caller asks again on the new pod.
		c.log.Info("transfer requested while the call moves to another pod; refused", zap.String("destination", d.Name))
		if callID != "" {
			c.toolOutput(callID, `{"ok":false,"error":"the call is being moved; try again in a moment"}`)
		}
		return
	}
	if c.transfer {
		c.log.Info("transfer requested while another is in flight; refused", zap.String("destination", d.Name))
		if callID != "" {
			c.toolOutput(callID, `{"ok":false,"error":"a transfer is already in progress"}`)
		}
		return
	}
	c.transfer = true
	c.xferReq = TransferRequest{CallSID: c.callSID, ChannelID: c.claims.ChannelID, AgentID: c.claims.AgentID, Destination: d, Via: via, Fence: c.fence}
	c.xferCallID = callID
	c.log.Info("transfer requested; waiting for the announcement to finish", zap.String("destination", d.Name), zap.String("via", via))
	c.xferWait.begin(c.cfg.After, c.respActive, c.cfg.HangupWait)
	c.checkWaits()
}

// transferNow calls the Transferer off the loop, once the announcement has
// played (or its wait timed out).
func (c *call) transferNow(why string) {
	if c.xferWait.started {
		return
	}
	c.xferWait.started = true
	c.xferWait.stop()
	req, callID, timeout := c.xferReq, c.xferCallID, c.cfg.StoreTimeout
	c.log.Info("transferring", zap.String("destination", req.Destination.Name), zap.String("via", req.Via), zap.String("why", why))
	c.async(func(ctx context.Context) func() {
		// Not cancelled with the call: Twilio stops the stream as a
		// result of the transfer, possibly before the request returns.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		err := c.srv.deps.Transfers.Transfer(ctx, req)
		return func() { c.onTransferDone(req, callID, err) }
	})
}

func (c *call) onTransferDone(req TransferRequest, callID string, err error) {
	c.transfer = false
	c.xferWait = speechWait{}
	if isFenced(err) {
		c.onFenced()
		return
	}
	if err != nil {
		c.log.Warn("transfer failed", zap.String("destination", req.Destination.Name), zap.Error(err))
		if req.Via == ViaFallback || c.ms.unavailable {
			c.onFallbackFailed() // no model to tell: the caller hears the apology
			return
		}
		if callID != "" {
			c.toolOutput(callID, `{"ok":false,"error":"transfer failed"}`)
		} else if c.model != nil {
			c.toModelJSON(realtime.Message("system", "The transfer to "+req.Destination.Name+" failed. Tell the caller and offer another option."))
			c.requestResponse()
		}
		return
	}
	c.transferOK = true
	c.log.Info("transfer under way", zap.String("destination", req.Destination.Name))
	if callID != "" {
		c.toModelJSON(c.functionOutput(callID, `{"ok":true,"status":"transferring"}`))
	}
}

// onDigit transfers on a bound digit; any other digit is told to the model.
func (c *call) onDigit(d string) {
	if len(d) != 1 || !strings.Contains("0123456789*#ABCD", d) {
		c.anomaly("dtmf", "invalid dtmf digit ignored", zap.String("digit", clip(d, 8)))
		return
	}
	if c.phase != live {
		c.anomaly("early_dtmf", "dtmf before the call was accepted; ignored")
		return
	}
	c.log.Debug("dtmf", zap.String("digit", d))
	if name, ok := c.agent.DTMF[d]; ok {
		c.record(session.EventDigit, d+" -> "+name)
		if dest, ok := c.agent.Destination(name); ok {
			c.startTransfer(dest, ViaDTMF, "")
			return
		}
		c.log.Warn("dtmf digit bound to an unknown destination; told to the model instead", zap.String("destination", name))
	} else {
		c.record(session.EventDigit, d)
	}
	if c.model == nil {
		c.anomaly("dtmf_no_model", "dtmf while the model is reconnecting; not told to the model")
		return
	}
	c.tools.newTurn() // a digit is the caller's turn
	c.toModelJSON(realtime.Message("user", "The caller pressed "+d+"."))
	c.requestResponse()
}

// onModelError sorts error events: known races are benign, an expired
// session is re-dialled, anything else is logged and recorded.
func (c *call) onModelError(e *realtime.Error) {
	if e == nil {
		c.anomaly("model_error", "model error event without error object")
		return
	}
	if e.Code == realtime.CodeActiveResponse {
		// Our response.create (the one outstanding) was refused: a response
		// runs that we may have taken for its answer (one the model's turn
		// detection started, or the greeting's). Ask again when it ends.
		c.respAsked, c.respWanted = false, true
	} else if c.respAsked && !c.respActive {
		// It may be what was refused: never wait for its response.created
		// forever.
		c.respAsked = false
	}
	switch {
	case e.Code == realtime.CodeActiveResponse, e.Code == realtime.CodeCancelNotActive,
		strings.Contains(e.Message, "already shorter"):
		c.log.Debug("benign model race", zap.String("code", e.Code), zap.String("message", clip(redact.Text(e.Message), 200)))
	case e.Code == realtime.CodeSessionExpired:
		c.log.Info("model session expired: re-dialling")
		c.record(session.EventModelError, realtime.CodeSessionExpired)
		c.closeModel()
		if !c.hangup.pending {
			c.onModelLost(true) // an expiry is not a drop
		}
	case fatalModelCodes[e.Code]:
		c.onModelFatal(e)
	default:
		// The model's text is remote: scrubbed of credentials before it is logged or stored.
		c.log.Warn("model error", zap.String("code", clip(e.Code, 64)), zap.String("type", clip(e.Type, 64)), zap.String("message", clip(redact.Text(e.Message), 300)))
		c.record(session.EventModelError, clip(redact.Text(e.Code+": "+e.Message), 500))
	}
}

// addTurn keeps a transcript turn for re-seeding and records it.
func (c *call) addTurn(role, text string) {
	text = strings.TrimSpace(text)
	if text == "" || c.writer == nil {
		return
	}
	now := c.now()
	c.transcript = append(c.transcript, session.Turn{At: now, Role: role, Text: text})
	if n := len(c.transcript); n > session.MaxTranscriptTurns {
		c.transcript = slices.Delete(c.transcript, 0, n-session.MaxTranscriptTurns)
	}
	c.writer.turn(now, role, text)
}

// speechWait is an action (end_call's hang-up, a transfer) waiting for the
// agent's current speech to finish playing: first the response that carries
// it done (bounded by twice the wait), then its last mark echoed (bounded by
// the wait). Its timer comes from Config.After.
type speechWait struct {
	pending   bool // the action was asked for
	afterDone bool // the response that carried it is done
	started   bool // the action is under way
	timeout   <-chan time.Time
}

// begin starts waiting; respActive says whether a response is still running.
func (w *speechWait) begin(after func(time.Duration) <-chan time.Time, respActive bool, d time.Duration) {
	w.pending = true
	if respActive {
		w.timeout = after(2 * d)
		return
	}
	w.afterDone = true
	w.timeout = after(d)
}

// responseDone moves on to waiting for the playout to drain.
func (w *speechWait) responseDone(after func(time.Duration) <-chan time.Time, d time.Duration) {
	if w.pending && !w.afterDone {
		w.afterDone = true
		w.timeout = after(d) // replaces the response's timer
	}
}

// ready reports whether the action may run now that playout is idle or not.
func (w *speechWait) ready(idle bool) bool {
	return w.pending && w.afterDone && !w.started && idle
}

func (w *speechWait) timerC() <-chan time.Time {
	if w.started {
		return nil
	}
	return w.timeout
}

// stop drops the timer: once started, the action no longer times out.
func (w *speechWait) stop() { w.timeout = nil }

// startHangup hangs up once the goodbye has played.
func (c *call) startHangup() {
	if c.hangup.pending {
		return
	}
	c.hangup.begin(c.cfg.After, c.respActive, c.cfg.HangupWait)
	c.checkWaits()
}

// checkWaits sends held agent audio that Twilio has room for, then runs
// the actions whose speech has finished playing. It runs after every
// change of the playout (an echo, a barge-in, the end of a response).
func (c *call) checkWaits() {
	c.pumpAudio()
	idle := c.play.idle() && c.ahead.len() == 0
	if c.hangup.ready(idle) {
		c.hangupNow("goodbye played")
	}
	if c.xferWait.ready(idle) {
		c.transferNow("announcement played")
	}
	c.maybeSwitch()
}

// hangupNow ends the call through Twilio's REST API, then closes the stream.
func (c *call) hangupNow(why string) {
	if c.hangup.started {
		return
	}
	c.hangup.started = true
	c.hangup.stop()
	c.log.Info("hanging up (end_call)", zap.String("why", why))
	calls := c.srv.deps.Calls
	if calls == nil {
		c.log.Warn("end_call: no call control configured; closing the stream only")
		c.end(c.hangupReason())
		return
	}
	callSID, timeout, fence := c.callSID, c.cfg.StoreTimeout, c.fence
	// The session ends with our reason before Twilio is asked: the hang-up
	// makes Twilio stop the stream and post its own callbacks, which must
	// find the call already ended for this reason. A stream that lost the
	// call (fenced) hangs nothing up.
	end := c.endMutation(c.hangupReason(), c.now())
	c.async(func(ctx context.Context) func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		_, err := c.srv.deps.Sessions.UpdateSession(ctx, callSID, func(s *session.Session) error {
			if err := s.CheckFence(fence); err != nil {
				return err
			}
			end(s)
			return nil
		})
		if isFenced(err) {
			return c.onFenced
		}
		if err != nil {
			c.log.Warn("recording the hang-up failed; hanging up anyway", zap.Error(err))
		}
		err = calls.Hangup(ctx, callSID)
		return func() {
			if err != nil {
				c.log.Warn("hang-up request failed; closing the stream", zap.Error(err))
			}
			c.end(c.hangupReason())
		}
	})
}

// hangupReason is the end reason of a hang-up we asked for.
func (c *call) hangupReason() string {
	if c.byOperator {
		return ReasonOperatorHangup
	}
	return ReasonAgentHangup
}

// operatorTransfer is an operator's transfer request (POST
// /v1/calls/{sid}/transfer on any pod), delivered to the call's owner.
func (c *call) operatorTransfer(name string) {
	if c.phase != live {
		c.log.Warn("operator transfer ignored: the call is not live")
		return
	}
	d, ok := c.agent.Destination(name)
	if !ok {
		c.log.Warn("operator transfer to an unknown destination refused", zap.String("destination", clip(name, 80)))
		c.record(session.EventTransferFailed, "refused unknown destination "+clip(name, 80)+" (via operator)")
		return
	}
	c.record(session.EventOperator, "transfer to "+d.Name+" requested")
	c.startTransfer(d, ViaOperator, "")
}

// operatorHangup ends the call at once through Twilio's REST API.
func (c *call) operatorHangup() {
	if c.phase != live || c.hangup.started {
		return
	}
	c.byOperator = true
	c.hangup.pending, c.hangup.afterDone = true, true
	c.record(session.EventOperator, "hang-up requested")
	c.hangupNow("operator request")
}
