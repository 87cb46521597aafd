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

// Errors an Agents implementation wraps when the token's agent can no
// longer answer calls. They are definitive: the stream is refused and the
// session ended (a fresh token would name the same agent), unlike any other
// look-up error, which refuses the stream only (a store blip must not end a
// call that a reconnect could still carry).
var (
	ErrAgentNotFound    = errors.New("bridge: agent not found")
	ErrAgentNotRealtime = errors.New("bridge: agent does not have realtime mode enabled")
)

// End reasons of a session whose stream was refused because of its agent.
const (
	ReasonAgentNotFound    = "agent_not_found"
	ReasonAgentNotRealtime = "agent_not_realtime"
)

// Why the session refused the start of a stream (startStream).
var (
	errSessionEnded = errors.New("the call session has already ended")
	errStreamLive   = errors.New("another media stream of the call is live")
)

// setupResult is what the look-ups of a starting stream found.
type setupResult struct {
	claimed  bool
	claimErr error
	agent    Agent
	agentErr error
	// agentEnd is the end reason when agentErr is definitive, else "".
	agentEnd string
	// started: the session went streaming for this stream in the store,
	// atomically with the checks of startStream; sess is the record after.
	started bool
	resumed bool
	sess    *session.Session
	sessErr error
	// liveStream is the stream the session names when it refused this one.
	liveStream string
	// fence is the fencing token the stream took the call with (started).
	fence int64
	// migrated: the stream continues a call migrated from another pod.
	migrated bool
}

// onStart checks Twilio's start message and its token, then runs the
// look-ups off the loop. Nothing is dialled before the stream is accepted:
// a websocket with a replayed handshake signature and no valid, unused
// token costs no model session (the model pool wins the dial time back).
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
		r := c.lookup(ctx, claims, callSID, streamSID, now)
		return func() { c.onSetup(r) }
	})
}

// lookup claims the token and loads the agent in parallel, then moves the
// session to streaming for this stream in one atomic update that refuses a
// second live stream of the call (across pods: the store's update is a
// check-and-set). It runs off the loop and touches no call state.
func (c *call) lookup(ctx context.Context, claims session.Claims, callSID, streamSID string, now time.Time) setupResult {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.SetupTimeout)
	defer cancel()
	var r setupResult
	// The claim outlives the token, so a replay within its validity fails.
	ttl := max(time.Unix(claims.ExpiresAt, 0).Sub(now), 0) + time.Minute
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		r.claimed, r.claimErr = c.srv.deps.Claims.ClaimToken(ctx, claims.ID, ttl)
	}()
	go func() {
		defer wg.Done()
		r.agent, r.agentErr = c.srv.deps.Agents.CallAgent(ctx, claims.ChannelID, claims.AgentID)
	}()
	wg.Wait()
	switch {
	case errors.Is(r.agentErr, ErrAgentNotRealtime):
		r.agentEnd = ReasonAgentNotRealtime
	case errors.Is(r.agentErr, ErrAgentNotFound):
		r.agentEnd = ReasonAgentNotFound
	}
	if r.claimErr == nil && !r.claimed || r.agentErr != nil && r.agentEnd == "" {
		return r // refused without touching the session (a used token, a store blip)
	}
	pod, leaseTTL := c.cfg.PodID, c.cfg.LeaseTTL
	r.sess, r.sessErr = c.srv.deps.Sessions.UpdateSession(ctx, callSID, func(s *session.Session) error {
		if err := streamAllowed(s, streamSID); err != nil {
			r.liveStream = s.StreamSID
			return err
		}
		if r.agentEnd != "" {
			s.End(r.agentEnd, now)
			return nil
		}
		r.migrated = s.Migration != nil
		r.resumed = startStream(s, pod, streamSID, now)
		r.fence = s.Take(pod, now, leaseTTL)
		return nil
	})
	r.started = r.sessErr == nil && r.agentEnd == ""
	return r
}

// streamAllowed reports why a session may not take streamSID as its stream:
// it ended, or another stream is live. A session waiting for its first
// stream (ringing), for the one after a failed transfer (transferring) or
// after a connect-ended reconnect (streaming with no stream: the callback
// clears it) may.
func streamAllowed(s *session.Session, streamSID string) error {
	switch {
	case s.State.Terminal():
		return errSessionEnded
	case s.State == session.Streaming && s.StreamSID != "" && s.StreamSID != streamSID:
		return errStreamLive
	}
	return nil
}

// startStream makes s streaming on pod with streamSID and reports whether
// it is a resume after a failed transfer.
func startStream(s *session.Session, pod, streamSID string, now time.Time) bool {
	resumed := s.State == session.Transferring
	if s.State != session.Streaming && session.CanTransition(s.State, session.Streaming) {
		_ = s.Transition(session.Streaming, now)
	}
	s.PodID, s.StreamSID = pod, streamSID
	s.Record(now, session.EventStreamStarted, "pod "+pod)
	if resumed {
		s.Record(now, session.EventResumed, "")
	}
	return resumed
}

// onSetup accepts or refuses the stream once the look-ups are back.
//
// A store error on the claim or the session update does not refuse the
// stream: the token is signed, short-lived and bound to this call, so that
// a pod can accept a stream while the store is slow or down (DESIGN 1.4); a
// claim that answers false (the token was used) always refuses it, and so
// does a session that has ended or streams elsewhere.
func (c *call) onSetup(r setupResult) {
	agentID := zap.String("agent_id", c.claims.AgentID)
	switch {
	case r.claimErr == nil && !r.claimed:
		c.reject(rejectReused, "media stream refused: stream token already used")
		return
	case errors.Is(r.sessErr, errSessionEnded):
		c.reject(rejectSession, "media stream refused: the call session has already ended")
		return
	case errors.Is(r.sessErr, errStreamLive):
		c.reject(rejectStreamLive, "media stream refused: another stream of the call is live",
			zap.String("live_stream_sid", r.liveStream))
		return
	case r.agentEnd != "":
		c.reject(r.agentEnd, "media stream refused: the token's agent cannot answer calls; session ended",
			agentID, zap.Bool("session_ended", r.sessErr == nil), zap.Error(r.agentErr))
		return
	case r.agentErr != nil:
		c.reject(rejectAgent, "media stream refused: agent unavailable", agentID, zap.Error(r.agentErr))
		return
	}
	if r.claimErr != nil {
		c.log.Warn("stream token claim failed (store error): accepting on the signed token", zap.Error(r.claimErr))
	}
	if r.sessErr != nil {
		if errors.Is(r.sessErr, session.ErrNotFound) {
			c.log.Warn("no session record for the call; relaying without one")
		} else {
			c.log.Warn("session update failed; relaying without caller details", zap.Error(r.sessErr))
		}
	}
	c.accept(r)
}

// accept makes the stream a call and takes or dials the model. The session
// went streaming in the look-up already; when the store failed there, the
// change is queued on the writer like any other.
func (c *call) accept(r setupResult) {
	c.accepted = true
	c.phase = live
	callSID := c.callSID // a copy: the pointer is shared with other goroutines
	c.sid.Store(&callSID)
	c.agent = r.agent
	sess := r.sess
	if !r.started {
		sess = nil
	}
	if sess != nil {
		c.from = sess.From
		c.transcript = slices.Clone(sess.Transcript)
		c.note = failedTransferNote(sess)
		c.ms.fallbackFailed = fallbackFailedBefore(sess)
	}
	c.writer = newSessionWriter(context.WithoutCancel(c.ctx), c.srv.deps.Sessions, c.callSID, c.log, c.cfg.StoreTimeout)
	c.writer.creator, _ = c.srv.deps.Sessions.(sessionCreator)
	c.writer.seed = c.seedSession(sess)
	c.writer.metrics = c.srv.wmetrics
	c.writer.prices = c.cfg.Prices
	fence := &ownerFence{v: r.fence} // the writer's from here on
	c.writer.guard = fence.guard
	if r.started {
		c.fence = r.fence
		c.migratedIn = r.migrated
		c.greeted = c.greeted || r.migrated // the caller was greeted on the first pod
	}
	c.leaseC = c.cfg.After(c.cfg.LeaseRenew)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.writer.run()
	}()
	now, pod, sid, ttl := c.now(), c.cfg.PodID, c.streamSID, c.cfg.LeaseTTL
	if !r.started && !errors.Is(r.sessErr, session.ErrNotFound) {
		// Adopt the call with the writer's first write: take its fence
		// there, and hand the committed token to the loop (transfers,
		// hang-ups and moves carry it). A call that ended or streams
		// elsewhere meanwhile is not ours: this stream ends.
		c.writer.written = func(ok bool) {
			switch {
			case ok && fence.adopted != 0:
				v := fence.adopted
				fence.v, fence.adopted = v, 0
				c.writer.written = nil // adopted once; the writer's goroutine owns the field
				c.toLoop(func() { c.fence = v })
			case ok && fence.refused:
				c.writer.written = nil
				c.toLoop(c.onFenced)
			}
		}
		c.writer.push(func(s *session.Session) {
			if streamAllowed(s, sid) != nil {
				fence.refused = true
				return
			}
			startStream(s, pod, sid, now)
			fence.adopted = s.Take(pod, now, ttl)
		})
	}
	c.log.Info("call accepted", zap.String("agent_id", c.claims.AgentID), zap.String("model", c.modelName()),
		zap.Bool("resumed", r.resumed), zap.Float64("setup_s", now.Sub(c.startedAt).Seconds()))
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
