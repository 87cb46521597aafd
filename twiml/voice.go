package twiml

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"go.uber.org/zap"

	"github.com/vivi/bridge/session"
)

// Reasons logged by the voice webhook besides the Router's refusal reasons.
const (
	reasonAnswered        = "answered"
	reasonWebhookRetry    = "webhook_retry" // Twilio retried; the ringing session is reused
	reasonUnknownSourceIP = "unknown_source_ip"
	reasonUnknownExt      = "unknown_extension"
	reasonBusy            = "busy"
	reasonStoreDown       = "store_unavailable"
	reasonDuplicateCall   = "duplicate_call" // a session past ringing exists for the SID
	reasonTokenExpired    = "token_expired"  // still ringing after the token's validity: the stream never came
)

// maxRecorded bounds From and To as stored on the session and logged.
const maxRecorded = 512

// voice answers POST /twilio/voice: a <Connect><Stream> with a stream token
// when exactly one channel takes the call, <Reject reason="rejected"/> when
// none does, <Reject reason="busy"/> at the pod's call limit.
//
// The router and the sessions may keep working while the shared store is
// down (cmd routes from an in-process copy and buffers the ringing session's
// create). When routing or the store still fails (not a refusal: we cannot
// tell) the answer is also <Reject reason="busy"/>, logged at error with reason
// store_unavailable: Twilio gives the PBX a 486 and it can fail over, where an
// HTTP 5xx would make Twilio fail the call with an application error.
func (h *Handler) voice(w http.ResponseWriter, r *http.Request) {
	form, sid, ok := h.readForm(w, r)
	if !ok {
		return
	}
	log := h.log.With(zap.String("call_sid", sid))
	now := h.now()

	ip, ok := sourceIP(form.Get("SipSourceIp"))
	if !ok {
		h.refuse(w, log, Rejected, reasonUnknownSourceIP, zap.String("sip_source_ip", clip(form.Get("SipSourceIp"), 64)))
		return
	}
	to := form.Get("To")
	ext, err := ParseExtension(to)
	if err != nil {
		h.refuse(w, log, Rejected, reasonUnknownExt, zap.String("to", clip(to, maxRecorded)), zap.Error(err))
		return
	}
	log = log.With(zap.String("source_ip", ip), zap.String("extension", ext))
	// The limit counts open streams and calls answered but not streaming
	// yet; the place is taken atomically, so a burst cannot overshoot it.
	active := h.calls.ActiveCalls()
	place, ok, n := h.answered.reserve(sid, active, h.maxCalls)
	if !ok {
		h.refuse(w, log, Busy, reasonBusy, zap.Int("active_calls", active), zap.Int("answered_calls", n-active),
			zap.Int("max_calls", h.maxCalls))
		return
	}
	answered := false
	defer func() {
		if !answered {
			h.answered.release(place, sid)
		}
	}()

	ctx, cancel := context.WithTimeout(r.Context(), storeTimeout)
	defer cancel()
	route, err := h.router.Route(ctx, ip, ext)
	if err == nil && (route.ChannelID == "" || route.AgentID == "") {
		err = errors.New("twiml: router returned a route without channel or agent")
	}
	var rej Rejection
	if errors.As(err, &rej) {
		h.refuse(w, log, Rejected, rej.RejectReason())
		return
	}
	if err != nil {
		h.unavailable(w, log, err)
		return
	}
	log = log.With(zap.String("channel_id", route.ChannelID))

	s, retried, err := h.openSession(ctx, sid, route, form, ip, now)
	if errors.Is(err, errStreamToken) {
		log.Error("call refused", zap.String("reason", "stream_token"), zap.Error(err))
		writeTwiML(w, rejectDoc(Busy))
		return
	}
	if err != nil {
		h.unavailable(w, log, err)
		return
	}
	// A webhook for a call past ringing is a replay (Twilio's retries come
	// before it has our answer, so before any stream): <Reject> answers the
	// requester and changes nothing; Twilio does not execute it for the call.
	if s.State != session.Ringing {
		h.refuse(w, log, Rejected, reasonDuplicateCall, zap.String("state", string(s.State)))
		return
	}
	// A token past its expiry can connect nothing, and minting another would
	// hand a replayer a fresh one: the call never streamed, so refuse.
	if now.Unix() >= s.Connect.ExpiresAt {
		h.refuse(w, log, Rejected, reasonTokenExpired)
		return
	}
	doc, err := h.connectStream(s)
	if err != nil {
		log.Error("call refused", zap.String("reason", "stream_token"), zap.Error(err))
		writeTwiML(w, rejectDoc(Busy))
		return
	}
	h.answered.commit(place, sid, s.Connect.ID)
	answered = true
	reason := reasonAnswered
	if retried {
		reason = reasonWebhookRetry
	}
	log.Info("call answered", zap.String("reason", reason), zap.String("agent_id", s.AgentID))
	writeTwiML(w, doc)
}

// errStreamToken marks a failure to issue a stream token (not the store's).
var errStreamToken = errors.New("stream token")

// openSession stores a new ringing session for the call with its connect
// generation, or returns the existing one when the webhook came again
// (retried is then true). A repeated webhook answers the stored generation:
// the same token, never a new one, so a replay mints nothing; a true retry
// (Twilio never got our answer, so never used the token) still connects.
func (h *Handler) openSession(ctx context.Context, sid string, route Route, form url.Values, ip string, now time.Time) (s *session.Session, retried bool, err error) {
	s, err = h.sessions.Session(ctx, sid)
	if err == nil {
		if s.State == session.Ringing && s.Connect == nil {
			s, err = h.adoptConnect(ctx, sid, now)
		}
		return s, true, err
	}
	// A store error here is not a refusal: go on to create the session, so
	// that a store that buffers creates while it is down (cmd wires one)
	// still lets the call be answered; a create that fails too refuses it.
	// A session that exists after all makes CreateSession fail, and the
	// look-up below finds it.
	s = session.New(sid, route.ChannelID, route.AgentID, now)
	s.From = clip(form.Get("From"), maxRecorded)
	s.To = clip(form.Get("To"), maxRecorded)
	s.SourceIP = ip
	if err := h.newConnect(s, now); err != nil {
		return nil, false, fmt.Errorf("%w: %w", errStreamToken, err)
	}
	if err := h.sessions.CreateSession(ctx, s); err != nil {
		// A concurrent retry of the same webhook may have created it first;
		// whatever the store's error for that, the session is then there.
		if prev, gerr := h.sessions.Session(ctx, sid); gerr == nil {
			return prev, true, nil
		}
		return nil, false, err
	}
	return s, false, nil
}

// adoptConnect gives a ringing session stored without a connect generation
// (by a pod of an earlier version) one, atomically: concurrent retries agree
// on one token.
func (h *Handler) adoptConnect(ctx context.Context, sid string, now time.Time) (*session.Session, error) {
	var tokErr error
	s, err := h.sessions.UpdateSession(ctx, sid, func(s *session.Session) error {
		tokErr = nil
		if s.State != session.Ringing || s.Connect != nil {
			return errUnchanged
		}
		if err := h.newConnect(s, now); err != nil {
			tokErr = err
			return errUnchanged
		}
		return nil
	})
	switch {
	case tokErr != nil:
		return nil, fmt.Errorf("%w: %w", errStreamToken, tokErr)
	case errors.Is(err, errUnchanged):
		return h.sessions.Session(ctx, sid)
	}
	return s, err
}

// refuse answers <Reject reason=twimlReason/> and logs the decision once.
func (h *Handler) refuse(w http.ResponseWriter, log *zap.Logger, twimlReason, reason string, fields ...zap.Field) {
	log.Info("call refused", append(fields, zap.String("reason", reason), zap.String("reject", twimlReason))...)
	writeTwiML(w, rejectDoc(twimlReason))
}

// unavailable refuses as busy a call we could not route because the store
// (or the router behind it) failed.
func (h *Handler) unavailable(w http.ResponseWriter, log *zap.Logger, err error) {
	log.Error("call refused", zap.String("reason", reasonStoreDown), zap.String("reject", Busy), zap.Error(err))
	writeTwiML(w, rejectDoc(Busy))
}

// sourceIP parses the signed SipSourceIp parameter (never the HTTP peer,
// which is Twilio). An IPv4-mapped IPv6 address is returned as IPv4; a zone
// is not accepted.
func sourceIP(s string) (string, bool) {
	addr, err := netip.ParseAddr(s)
	if err != nil || addr.Zone() != "" {
		return "", false
	}
	return addr.Unmap().String(), true
}
