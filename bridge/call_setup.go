package bridge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/vivi/bridge/session"
)

// setupResult is what the look-ups of a starting stream found.
type setupResult struct {
	claimed  bool
	claimErr error
	sess     *session.Session
	sessErr  error
	agent    Agent
	agentErr error
}

// onStart checks Twilio's start message and its token, then runs the
// look-ups off the loop. The order of the answer path: start arrives right
// after connected (within milliseconds), and the model to dial is known only
// from the token's agent, so the model is dialled as soon as the agent is
// known; caller audio meanwhile is held (see heldAudio).
func (c *call) onStart(m twilioMsg) {
	if c.phase != awaitingStart {
		c.anomaly("start", "duplicate twilio start ignored")
		return
	}
	st := m.start
	streamSID := st.StreamSID
	if streamSID == "" {
		streamSID = m.streamSID
	}
	if !validSID(st.CallSID) || !validSID(streamSID) {
		c.reject(rejectToken, "media stream refused: start without a valid callSid and streamSid")
		return
	}
	c.callSID, c.streamSID = st.CallSID, streamSID
	claims, err := c.srv.deps.Tokens.Verify(st.CustomParameters["token"], c.callSID, c.now())
	if err != nil {
		c.reject(rejectToken, "media stream refused: stream token rejected",
			zap.String("call_sid", c.callSID), zap.String("stream_sid", c.streamSID), zap.Error(err))
		return
	}
	// The per-call logger, made once (before, c.log names only the peer).
	c.log = c.srv.log.With(zap.String("call_sid", c.callSID), zap.String("stream_sid", c.streamSID),
		zap.String("channel_id", claims.ChannelID))
	if enc := st.MediaFormat.Encoding; enc != "" && enc != "audio/x-mulaw" {
		c.log.Warn("twilio media format is not audio/x-mulaw; relaying anyway", zap.String("encoding", clip(enc, 40)))
	}
	c.claims = claims
	c.frames = newStreamFrames(c.streamSID)
	c.phase = settingUp
	callSID, now := c.callSID, c.now()
	c.async(func(ctx context.Context) func() {
		r := c.lookup(ctx, claims, callSID, now)
		return func() { c.onSetup(r) }
	})
}

// lookup claims the token and loads the session and the agent, in
// parallel. It runs off the loop and touches no call state.
func (c *call) lookup(ctx context.Context, claims session.Claims, callSID string, now time.Time) setupResult {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.SetupTimeout)
	defer cancel()
	var r setupResult
	// The claim outlives the token, so a replay within its validity fails.
	ttl := max(time.Unix(claims.ExpiresAt, 0).Sub(now), 0) + time.Minute
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		r.claimed, r.claimErr = c.srv.deps.Claims.ClaimToken(ctx, claims.ID, ttl)
	}()
	go func() {
		defer wg.Done()
		r.sess, r.sessErr = c.srv.deps.Sessions.Session(ctx, callSID)
	}()
	go func() {
		defer wg.Done()
		r.agent, r.agentErr = c.srv.deps.Agents.CallAgent(ctx, claims.ChannelID, claims.AgentID)
	}()
	wg.Wait()
	return r
}

// onSetup accepts or refuses the stream once the look-ups are back.
//
// A store error on the claim does not refuse the stream: the token is
// signed, short-lived and bound to this call, so that a pod can accept a
// stream while the store is slow or down (DESIGN 1.4); a claim that answers
// false (the token was used) always refuses it.
func (c *call) onSetup(r setupResult) {
	switch {
	case r.claimErr == nil && !r.claimed:
		c.reject(rejectReused, "media stream refused: stream token already used")
		return
	case r.agentErr != nil:
		c.reject(rejectAgent, "media stream refused: agent unavailable", zap.String("agent_id", c.claims.AgentID), zap.Error(r.agentErr))
		return
	case r.sessErr == nil && r.sess != nil && r.sess.State.Terminal():
		c.reject(rejectSession, "media stream refused: the call session has already ended", zap.String("state", string(r.sess.State)))
		return
	}
	if r.claimErr != nil {
		c.log.Warn("stream token claim failed (store error): accepting on the signed token", zap.Error(r.claimErr))
	}
	sess := r.sess
	if r.sessErr != nil {
		sess = nil
		if errors.Is(r.sessErr, session.ErrNotFound) {
			c.log.Warn("no session record for the call; relaying without one")
		} else {
			c.log.Warn("session look-up failed; relaying without caller details", zap.Error(r.sessErr))
		}
	}
	c.accept(r.agent, sess)
}

// accept makes the stream a call: the session goes streaming on this pod,
// and the model is dialled.
func (c *call) accept(agent Agent, sess *session.Session) {
	c.accepted = true
	c.phase = live
	callSID := c.callSID // a copy: the pointer is shared with other goroutines
	c.sid.Store(&callSID)
	c.agent = agent
	resumed := false
	if sess != nil {
		c.from = sess.From
		c.transcript = slices.Clone(sess.Transcript)
		c.note = failedTransferNote(sess)
		resumed = sess.State == session.Transferring
	}
	c.writer = newSessionWriter(context.WithoutCancel(c.ctx), c.srv.deps.Sessions, c.callSID, c.log, c.cfg.StoreTimeout)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.writer.run()
	}()
	now, pod, sid := c.now(), c.cfg.PodID, c.streamSID
	c.writer.push(func(s *session.Session) {
		if s.State != session.Streaming && session.CanTransition(s.State, session.Streaming) {
			_ = s.Transition(session.Streaming, now)
		}
		s.PodID, s.StreamSID = pod, sid
		s.Record(now, session.EventStreamStarted, "pod "+pod)
		if resumed {
			s.Record(now, session.EventResumed, "")
		}
	})
	c.log.Info("call accepted", zap.String("agent_id", c.claims.AgentID), zap.String("model", c.modelName()),
		zap.Bool("resumed", resumed), zap.Float64("setup_s", now.Sub(c.startedAt).Seconds()))
	c.dialModel()
}

// failedTransferNote is the system note telling the model that the last
// transfer failed, or "" when it did not.
func failedTransferNote(s *session.Session) string {
	t := s.LastTransfer()
	if t == nil || t.Status == "in-progress" || (t.Status == "" && t.Error == "") {
		return ""
	}
	status := t.Status
	if status == "" {
		status = "error"
	}
	code := t.NotifySIPCode
	if code == "" {
		code = t.ReferSIPCode
	}
	if code != "" {
		status += ", SIP " + code
	}
	return fmt.Sprintf("The transfer to %s failed (%s). Tell the caller and offer another option.", t.Destination, status)
}

// validSID accepts Twilio SIDs: 2-64 letters and digits.
func validSID(s string) bool {
	if len(s) < 2 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= '0' && ch <= '9' || ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z') {
			return false
		}
	}
	return true
}
