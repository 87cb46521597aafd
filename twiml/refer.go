package twiml

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/vivi/bridge/session"
)

// referStatus handles the <Refer action>: Twilio posts the outcome of the
// SIP REFER here, on whichever pod. ReferCallStatus=in-progress means the PBX
// took the call: the session becomes transferred and the answer is <Hangup/>.
// canceled means the caller hung up during the transfer: the session ends.
// Anything else (busy, failed, no NOTIFY at all) is recorded on the attempt
// and the answer reconnects the caller to the agent with a fresh one-time
// token; the new stream, on any pod, restores the conversation from the
// session and tells the model what happened.
//
// Only a transfer in flight is ended by its outcome: for a call that is not
// transferring (a replayed or late callback) the answer is an empty
// <Response/> and the session is left as it is; for an unknown call it is
// <Hangup/> (there is nothing of ours to keep up). The action URL names the
// attempt (session.TransferParam): an outcome about another attempt than
// the one in flight (a replay of an earlier transfer's signed callback) is
// stale and answered the same way, with the session untouched. An attempt
// stored without an id (by an earlier version) is judged by state alone.
func (h *Handler) referStatus(w http.ResponseWriter, r *http.Request) {
	form, sid, ok := h.readForm(w, r)
	if !ok {
		return
	}
	attempt := clip(r.URL.Query().Get(session.TransferParam), 64)
	status := clip(form.Get("ReferCallStatus"), 32)
	referCode := clip(form.Get("ReferSipResponseCode"), 8)
	notifyCode := clip(form.Get("NotifySipResponseCode"), 8)
	if status == "" {
		status = "no-notify"
	}
	log := h.log.With(zap.String("call_sid", sid), zap.String("refer_status", status),
		zap.String("refer_sip_code", referCode), zap.String("notify_sip_code", notifyCode))
	now := h.now()
	ctx, cancel := context.WithTimeout(r.Context(), storeTimeout)
	defer cancel()

	var tokErr error
	s, outcome, err := h.decide(ctx, sid, func(s *session.Session) (string, bool) {
		tokErr = nil
		if s.State != session.Transferring {
			return outcomeNotTransferring + string(s.State), false
		}
		if staleRefer(s, attempt) {
			return outcomeStale, false
		}
		if t := s.LastTransfer(); t != nil {
			t.Status, t.ReferSIPCode, t.NotifySIPCode = status, referCode, notifyCode
			at := now
			t.CompletedAt = &at
		}
		switch status {
		case "in-progress":
			if err := s.MarkTransferred(now); err != nil {
				return "invalid_state", false
			}
			return "transferred", true
		case "canceled":
			s.Record(now, session.EventTransferFailed, describeRefer(status, referCode, notifyCode))
			s.End("caller_hangup_during_transfer", now)
			return "caller_hangup", true
		}
		s.Record(now, session.EventTransferFailed, describeRefer(status, referCode, notifyCode))
		// The resume is a new connect generation: its token and action URL.
		if tokErr = h.newConnect(s, now); tokErr != nil {
			return "resume_failed", true // the outcome is recorded; the caller gets <Hangup/>
		}
		return "resume", true
	})
	switch {
	case errors.Is(err, session.ErrNotFound):
		log.Warn("refer status", zap.String("reason", "unknown_call"))
		writeTwiML(w, Hangup())
		return
	case err != nil:
		log.Error("refer status", zap.String("reason", reasonStoreDown), zap.Error(err))
		http.Error(w, "session store unavailable", http.StatusInternalServerError)
		return
	}
	log = log.With(zap.String("channel_id", s.ChannelID))
	if strings.HasPrefix(outcome, outcomeNotTransferring) {
		log.Warn("refer status ignored", zap.String("reason", outcome))
		writeTwiML(w, Empty())
		return
	}
	if outcome == outcomeStale {
		var current string
		if t := s.LastTransfer(); t != nil {
			current = t.ID
		}
		log.Warn("refer status ignored", zap.String("reason", outcome),
			zap.String("transfer_id", attempt), zap.String("current_transfer_id", current))
		writeTwiML(w, Empty())
		return
	}
	if tokErr != nil {
		log.Error("refer status", zap.String("reason", "stream_token"), zap.Error(tokErr))
		writeTwiML(w, Hangup())
		return
	}
	if outcome != "resume" {
		log.Info("refer status", zap.String("reason", outcome))
		writeTwiML(w, Hangup())
		return
	}
	doc, err := h.connectStream(s)
	if err != nil {
		log.Error("refer status", zap.String("reason", "stream_token"), zap.Error(err))
		writeTwiML(w, Hangup())
		return
	}
	log.Info("refer status", zap.String("reason", "transfer_failed_resume"))
	writeTwiML(w, doc)
}

// outcomeNotTransferring prefixes the outcome of a refer status for a call
// that has no transfer in flight.
const outcomeNotTransferring = "not_transferring_"

// staleRefer reports whether a refer outcome about transfer attempt id (may
// be empty) is not about the attempt in flight, the session's last one. An
// outcome without an id (posted to the bare path, as DESIGN's contract shows
// it) or an attempt recorded without one (an earlier version) is not judged
// by id: a replayed Twilio request cannot drop the id, because the signature
// covers the URL with its query.
func staleRefer(s *session.Session, id string) bool {
	t := s.LastTransfer()
	return id != "" && t != nil && t.ID != "" && id != t.ID
}

// describeRefer is the timeline detail of a failed refer, e.g. "busy (REFER 202, NOTIFY 486)".
func describeRefer(status, referCode, notifyCode string) string {
	d := status + " (REFER " + orDash(referCode)
	if notifyCode != "" {
		d += ", NOTIFY " + notifyCode
	}
	return d + ")"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
