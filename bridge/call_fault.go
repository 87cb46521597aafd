package bridge

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/vivi/bridge/bridge/realtime"
	"github.com/vivi/bridge/internal/redact"
	"github.com/vivi/bridge/session"
)

// ReasonModelUnavailable ends a call whose model could not be reached
// within Config.ModelWait (or whose drop budget ran out) and that had no
// fallback transfer: the caller heard the apology.
const ReasonModelUnavailable = "model_unavailable"

// apologyTwiML is what a caller hears when no model session can be had and
// the agent has no fallbackDestination (or the fallback transfer failed).
const apologyTwiML = `<?xml version="1.0" encoding="UTF-8"?><Response><Say>We are sorry, we cannot take your call right now. Please try again later. Goodbye.</Say><Hangup/></Response>`

// modelState is how a call gets and keeps its model session: the bound on
// the current dial, the backoff between failed dials, the bound on the
// whole outage, the drop budget and the fallback. Owned by the loop.
type modelState struct {
	dialCancel context.CancelFunc // the in-flight dial of gen, nil when none
	readyC     <-chan time.Time   // the dial (or connection) not ready in time
	retryC     <-chan time.Time   // the backoff before the next dial
	downC      <-chan time.Time   // no ready session for ModelWait: the fallback
	failures   int                // failed dials in a row
	lostReady  bool               // the connection closeModel dropped was ready
	drops      dropBudget
	// unavailable: the model is given up on (fallback or apology under way).
	unavailable bool
	apology     bool // the apology TwiML was asked for
	// fallbackFailed: the session's last transfer was a fallback that
	// failed, so a new outage ends with the apology, not the same transfer.
	fallbackFailed bool
	heldWarn       warnLimit
	rotations      int
}

// fatalModelCodes are the error codes after which a model session is of no
// use (the account cannot be billed, the key is refused, the model is not
// there): the session is closed and counted as a failed dial. Any other
// error event leaves the session usable (the reference: "most errors are
// recoverable and the session stays open").
var fatalModelCodes = map[string]bool{
	"insufficient_quota":           true,
	"invalid_api_key":              true,
	"account_deactivated":          true,
	"model_not_found":              true,
	"billing_hard_limit_reached":   true,
	realtime.CodeBetaShapeDisabled: true,
}

// armDial bounds a dial that starts now: it must bring a ready session
// (session.updated) within ModelReadyTimeout; and while no session is
// ready, the whole outage is bounded by ModelWait.
func (c *call) armDial(cancel context.CancelFunc) {
	c.ms.dialCancel = cancel
	c.ms.readyC = c.cfg.After(c.cfg.ModelReadyTimeout)
	if c.ms.downC == nil {
		c.ms.downC = c.cfg.After(c.cfg.ModelWait)
	}
}

// modelReady: the current connection accepted the session configuration.
func (c *call) modelReady() {
	c.ms.readyC, c.ms.downC, c.ms.retryC = nil, nil, nil
	if c.ms.dialCancel != nil {
		c.ms.dialCancel() // the dial is over: its context is released
		c.ms.dialCancel = nil
	}
	c.ms.failures = 0
}

// dialFailed counts a failed dial (refused, timed out, not ready in time,
// a fatal error, closed before ready) and re-dials after the backoff.
func (c *call) dialFailed(detail string) {
	c.ms.readyC = nil
	if c.ms.dialCancel != nil {
		c.ms.dialCancel()
		c.ms.dialCancel = nil
	}
	if c.endReason != "" || c.ms.unavailable {
		return
	}
	c.ms.failures++
	c.srv.metrics.redials.Inc()
	delay := redialDelay(c.ms.failures, jitter())
	c.record(session.EventModelError, clip(detail, 300))
	c.log.Warn("model dial failed: re-dialling after a backoff", zap.String("error", clip(detail, 300)),
		zap.Int("failures", c.ms.failures), zap.Float64("retry_in_s", delay.Seconds()))
	if c.hangup.pending {
		return // the goodbye is out; the hang-up goes on without a model
	}
	if c.ms.downC == nil {
		c.ms.downC = c.cfg.After(c.cfg.ModelWait)
	}
	c.ms.retryC = c.cfg.After(delay)
}

// onRetry dials again once the backoff has passed.
func (c *call) onRetry() {
	c.ms.retryC = nil
	if c.endReason != "" || c.ms.unavailable || c.model != nil {
		return
	}
	c.dialModel()
}

// onReadyTimeout: the dial or the connection it brought did not bring a
// ready session in time; it is dropped (a late result of the dial is
// closed by the generation check) and counted as a failed dial.
func (c *call) onReadyTimeout() {
	c.ms.readyC = nil
	if c.model != nil && c.model.ready {
		return
	}
	c.gen++
	c.closeModel()
	c.dialFailed(fmt.Sprintf("model session not ready within %s", c.cfg.ModelReadyTimeout))
}

// onModelLost decides what a lost connection is: a failed dial when it was
// never ready, a drop (within the budget: re-dialled at once) otherwise.
// An expiry is neither: it never counts against the budget.
func (c *call) onModelLost(expired bool) {
	if c.endReason != "" || c.ms.unavailable {
		return
	}
	if n := c.rot.next; n != nil && n.ready {
		c.switchModel("the current session was lost") // the next one is ready: no re-dial
		return
	}
	c.abortRotation("the current session was lost")
	if !c.ms.lostReady && !expired {
		c.dialFailed("model connection lost before it was ready")
		return
	}
	if !expired && !c.ms.drops.take(c.now()) {
		c.log.Warn("model connection lost and the drop budget is spent: giving up on the model",
			zap.Int("drops", len(c.ms.drops.at)), zap.Float64("window_s", c.ms.drops.window.Seconds()))
		c.modelUnavailable(fmt.Sprintf("%d drops within %s", len(c.ms.drops.at)+1, c.ms.drops.window))
		return
	}
	c.redials++
	c.srv.metrics.redials.Inc()
	c.log.Info("re-dialling the model", zap.Int("attempt", c.redials), zap.Bool("expired", expired))
	c.dialModel()
}

// onModelFatal: an error event that leaves the session unusable.
func (c *call) onModelFatal(e *realtime.Error) {
	c.log.Warn("model session unusable: reconnecting", zap.String("code", clip(e.Code, 64)),
		zap.String("message", clip(redact.Text(e.Message), 300)))
	c.record(session.EventModelError, clip(redact.Text(e.Code+": "+e.Message), 500))
	c.closeModel()
	if c.hangup.pending {
		return
	}
	c.onModelLost(false)
}

// onModelDown: no ready session within ModelWait.
func (c *call) onModelDown() {
	c.ms.downC = nil
	if c.model != nil && c.model.ready {
		return
	}
	c.modelUnavailable(fmt.Sprintf("no model session within %s", c.cfg.ModelWait))
}

// modelUnavailable gives up on the model: no caller is left in silence.
// The call is transferred to the agent's fallbackDestination when it has
// one (the normal transfer path, with via "fallback"); otherwise, or when
// that fallback already failed, the caller hears a short apology and the
// call ends with ReasonModelUnavailable.
func (c *call) modelUnavailable(why string) {
	if c.ms.unavailable || c.endReason != "" {
		return
	}
	c.ms.unavailable = true
	c.ms.readyC, c.ms.retryC, c.ms.downC = nil, nil, nil
	if c.ms.dialCancel != nil {
		c.ms.dialCancel()
		c.ms.dialCancel = nil
	}
	c.gen++ // a dial still in flight is closed when it returns
	c.closeModel()
	c.abortRotation("the model is unavailable")
	c.srv.metrics.modelUnavailable.Inc()
	c.record(session.EventModelError, "model unavailable: "+why)
	if c.hangup.pending {
		c.log.Warn("model unavailable during the goodbye: hanging up", zap.String("why", why))
		c.hangupNow("model unavailable")
		return
	}
	if c.transfer {
		c.log.Warn("model unavailable while a transfer is in flight: its outcome decides", zap.String("why", why))
		return
	}
	name := c.agent.FallbackDestination
	d, ok := c.agent.Destination(name)
	switch {
	case name == "" || !ok:
		c.log.Warn("model unavailable and no fallback destination: apologising and ending the call", zap.String("why", why))
	case c.ms.fallbackFailed:
		c.log.Warn("model unavailable and the fallback transfer failed before: apologising and ending the call",
			zap.String("why", why), zap.String("destination", d.Name))
	case c.srv.deps.Transfers == nil:
		c.log.Warn("model unavailable and transfers are not enabled: apologising and ending the call", zap.String("why", why))
	default:
		c.log.Warn("model unavailable: transferring to the fallback destination", zap.String("why", why), zap.String("destination", d.Name))
		c.record(session.EventModelError, "fallback transfer to "+d.Name)
		c.startTransfer(d, ViaFallback, "")
		return
	}
	c.sayApology(why)
}

// onFallbackFailed: the fallback transfer failed; the caller hears the apology.
func (c *call) onFallbackFailed() {
	c.ms.fallbackFailed = true
	c.sayApology("the fallback transfer failed")
}

// sayApology replaces the call's TwiML with a short apology and a hang-up
// (Twilio REST), after recording why the call ends; then the stream ends.
func (c *call) sayApology(why string) {
	if c.ms.apology {
		return
	}
	c.ms.apology = true
	calls := c.srv.deps.Calls
	if calls == nil {
		c.log.Warn("no call control configured: closing the stream without the apology")
		c.end(ReasonModelUnavailable)
		return
	}
	callSID, timeout := c.callSID, c.cfg.StoreTimeout
	end := c.endMutation(ReasonModelUnavailable, c.now())
	detail := clip("apology: "+why, 300)
	now, fence := c.now(), c.fence
	c.async(func(ctx context.Context) func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		// Recorded before Twilio is asked: the update makes Twilio stop the
		// stream and post its callbacks, which must find the call ended.
		// A stream that lost the call (fenced) neither records nor hangs up.
		if _, err := c.srv.deps.Sessions.UpdateSession(ctx, callSID, func(s *session.Session) error {
			if err := s.CheckFence(fence); err != nil {
				return err
			}
			s.Record(now, session.EventModelError, detail)
			end(s)
			return nil
		}); isFenced(err) {
			return c.onFenced
		} else if err != nil {
			c.log.Warn("recording the model outage failed; apologising anyway", zap.Error(err))
		}
		err := calls.UpdateTwiML(ctx, callSID, apologyTwiML)
		return func() {
			if err != nil {
				c.log.Warn("the apology request failed: closing the stream", zap.Error(err))
				c.closeCode, c.closeText = 1011, "model unavailable"
			} else {
				c.log.Info("apology played instead of the stream; the call ends")
			}
			c.end(ReasonModelUnavailable)
		}
	})
}

// endByApology maps the stream's end after the apology to its reason.
func (c *call) endByApology(reason string) string {
	if c.ms.apology && (reason == ReasonCallerHangup || reason == ReasonTwilioDisconnected) {
		return ReasonModelUnavailable
	}
	return reason
}

// fallbackFailedBefore reports whether the session's last transfer was a
// fallback that did not succeed.
func fallbackFailedBefore(s *session.Session) bool {
	t := s.LastTransfer()
	return t != nil && t.Via == ViaFallback && failedTransferNote(s) != ""
}

// onHeldDropped logs, at most once per warnEvery, that caller audio was
// held too long while the model was not ready (the oldest dropped).
func (c *call) onHeldDropped() {
	now := c.now()
	if !c.ms.heldWarn.allow(now) {
		return
	}
	c.log.Warn("caller audio held too long while the model was not ready: oldest dropped",
		zap.Int("dropped_frames", c.held.dropped), zap.Int("dropped_ms", c.held.droppedBytes/bytesPerMs),
		zap.Int("suppressed", c.ms.heldWarn.take()))
	c.held.dropped, c.held.droppedBytes = 0, 0
}
