package twiml

import (
	"context"
	"errors"
	"net/http"

	"go.uber.org/zap"

	"github.com/vivi/bridge/internal/redact"
	"github.com/vivi/bridge/session"
)

// Timeline event types recorded by the callbacks (session's own types are
// used where they fit).
const (
	// EventStreamStatus records a stream statusCallback that changes nothing
	// (stream-started, or a stop that does not end the call).
	EventStreamStatus = "stream_status"
	// EventReconnect records a fresh <Connect><Stream> answered on
	// connect-ended; its detail is the stream SID it replaces (may be empty).
	EventReconnect = "reconnect"
)

// MaxReconnects is how many times connect-ended reconnects one call before
// it answers <Hangup/>.
const MaxReconnects = 3

// maxStreamError bounds the StreamError text kept in an end reason.
const maxStreamError = 200

// streamStatus handles the <Stream statusCallback>: stream-stopped and
// stream-error end the session (idempotently, the first reason wins) unless
// the stop is expected: the session is transferring (Twilio stops the stream
// for the REFER) or the stream is one a reconnect or a newer stream already
// replaced. stream-started is recorded only. Answers 204, or 500 when the
// store write fails.
func (h *Handler) streamStatus(w http.ResponseWriter, r *http.Request) {
	form, sid, ok := h.readForm(w, r)
	if !ok {
		return
	}
	event, streamSID := form.Get("StreamEvent"), clip(form.Get("StreamSid"), 64)
	log := h.log.With(zap.String("call_sid", sid), zap.String("stream_sid", streamSID), zap.String("stream_event", clip(event, 32)))
	var endReason string
	switch event {
	case "stream-started":
	case "stream-stopped":
		endReason = "stream_stopped"
	case "stream-error":
		endReason = "stream_error:" + clip(redact.Text(form.Get("StreamError")), maxStreamError) // remote text
	default:
		log.Debug("stream status ignored", zap.String("reason", "unknown_event"))
		w.WriteHeader(http.StatusNoContent)
		return
	}
	now := h.now()
	h.answerCallback(r.Context(), w, log, sid, "stream status", func(s *session.Session) (string, bool) {
		switch {
		case endReason == "":
			s.Record(now, EventStreamStatus, event+" "+streamSID)
			return "recorded", true
		case s.State.Terminal():
			return "already_" + string(s.State), false
		case s.State == session.Transferring:
			s.Record(now, EventStreamStatus, event+" "+streamSID+" during transfer")
			return "transferring", true
		case replacedStream(s, streamSID):
			s.Record(now, EventStreamStatus, event+" "+streamSID+" replaced")
			return "replaced_stream", true
		}
		s.End(endReason, now)
		return endReason, true
	})
}

// replacedStream reports whether streamSID names a stream that is no longer
// the call's: a newer stream is live, or a reconnect replaced it.
func replacedStream(s *session.Session, streamSID string) bool {
	if streamSID == "" {
		return false
	}
	if s.StreamSID != "" && s.StreamSID != streamSID {
		return true
	}
	if s.Migration != nil && s.Migration.FromStream == streamSID {
		return true // a drain moved the call off it (MigrateConnect)
	}
	for _, e := range s.Timeline {
		if e.Type == EventReconnect && e.Detail == streamSID {
			return true
		}
	}
	return false
}

// terminalCallStatus lists the CallStatus values after which the call is gone.
var terminalCallStatus = map[string]bool{
	"completed": true, "busy": true, "failed": true, "no-answer": true, "canceled": true,
}

// callStatus handles the SIP Domain's call status callback: a terminal
// CallStatus ends the session with reason call_<status> (idempotently; a
// transferring session whose caller hung up ends as ended, a transferred one
// is left as is). Answers 204, or 500 when the store write fails.
func (h *Handler) callStatus(w http.ResponseWriter, r *http.Request) {
	form, sid, ok := h.readForm(w, r)
	if !ok {
		return
	}
	status := form.Get("CallStatus")
	log := h.log.With(zap.String("call_sid", sid), zap.String("call_status", clip(status, 32)))
	if !terminalCallStatus[status] {
		log.Debug("call status ignored", zap.String("reason", "not_terminal"))
		w.WriteHeader(http.StatusNoContent)
		return
	}
	reason := "call_" + status
	now := h.now()
	h.answerCallback(r.Context(), w, log, sid, "call status", func(s *session.Session) (string, bool) {
		if !s.End(reason, now) {
			return "already_" + string(s.State), false
		}
		return reason, true
	})
}

// answerCallback applies d to the call's session and answers a status
// callback: 204 when done or when the call is unknown (debug log), 500 when
// the store fails (Twilio does not retry status callbacks reliably, but the
// error shows in its debugger and in our logs).
func (h *Handler) answerCallback(ctx context.Context, w http.ResponseWriter, log *zap.Logger, sid, msg string, d decision) {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	s, outcome, err := h.decide(ctx, sid, d)
	switch {
	case errors.Is(err, session.ErrNotFound):
		log.Debug(msg, zap.String("reason", "unknown_call"))
	case err != nil:
		log.Error(msg, zap.String("reason", reasonStoreDown), zap.Error(err))
		http.Error(w, "session store unavailable", http.StatusInternalServerError)
		return
	default:
		log.Info(msg, zap.String("channel_id", s.ChannelID), zap.String("reason", outcome))
	}
	w.WriteHeader(http.StatusNoContent)
}

// decision looks at a stored session, may change it, and returns the
// outcome to log and whether it changed the session.
type decision func(s *session.Session) (outcome string, changed bool)

// errUnchanged makes UpdateSession write nothing: the decision left the
// session as it was (stores return an error from fn unchanged).
var errUnchanged = errors.New("twiml: session unchanged")

// decide runs d on the call's session atomically (UpdateSession may run it
// more than once; the last run is the one that counts) and returns the
// session as decided and the outcome. An unchanged session is not written.
func (h *Handler) decide(ctx context.Context, sid string, d decision) (*session.Session, string, error) {
	var outcome string
	var seen *session.Session
	s, err := h.sessions.UpdateSession(ctx, sid, func(s *session.Session) error {
		var changed bool
		outcome, changed = d(s)
		seen = s
		if !changed {
			return errUnchanged
		}
		return nil
	})
	if errors.Is(err, errUnchanged) {
		return seen, outcome, nil
	}
	return s, outcome, err
}

// connectEnded handles the <Connect action>: Twilio requests it when our
// <Connect><Stream> ended, i.e. the websocket closed while the call is up.
// A session still ours and not transferring (the pod holding the stream
// died, or the bridge closed the socket without ending the call) gets a
// fresh <Connect><Stream> so the caller is not dropped, at most
// MaxReconnects times per call; then, or when the session is ended,
// transferred, transferring or unknown, the answer is <Hangup/>.
//
// Twilio requests the action once per <Connect>, after its stream ended, so
// a callback about another connect generation than the session's current
// one (the action URL's ConnectParam), or about another stream than the
// session's (a StreamSid, when Twilio sends one), is stale: a replay, or a
// duplicate of one already answered. It gets an empty <Response/> and the
// session is not touched: no token is minted, the live stream is not
// forgotten and no reconnect is counted. Twilio executes no answer to a
// callback it did not make, so the empty document ends nothing. So is a
// callback about the current <Connect> of a streaming call whose pod says
// its stream is still live (streamLive). A store failure answers 500.
func (h *Handler) connectEnded(w http.ResponseWriter, r *http.Request) {
	form, sid, ok := h.readForm(w, r)
	if !ok {
		return
	}
	gen, streamSID := clip(r.URL.Query().Get(ConnectParam), 64), clip(form.Get("StreamSid"), 64)
	log := h.log.With(zap.String("call_sid", sid))
	if streamSID != "" {
		log = log.With(zap.String("stream_sid", streamSID))
	}
	now := h.now()
	ctx, cancel := context.WithTimeout(r.Context(), storeTimeout)
	defer cancel()
	if h.streamLive(ctx, log, sid, gen, streamSID) {
		writeTwiML(w, Empty())
		return
	}

	var tokErr error
	s, outcome, err := h.decide(ctx, sid, func(s *session.Session) (string, bool) {
		tokErr = nil
		switch n := countEvents(s, EventReconnect); {
		case s.State.Terminal():
			return "already_" + string(s.State), false
		case s.State == session.Transferring:
			return "transferring", false // the refer outcome decides
		case staleConnect(s, gen, streamSID):
			return outcomeStale, false
		case n >= MaxReconnects:
			s.End("reconnect_limit", now)
			return "reconnect_limit", true
		}
		if err := h.newConnect(s, now); err != nil {
			tokErr = err
			return "stream_token", false
		}
		s.Record(now, EventReconnect, s.StreamSID)
		s.StreamSID = "" // no stream is live until the new one starts
		return "reconnect", true
	})
	switch {
	case errors.Is(err, session.ErrNotFound):
		log.Info("connect ended", zap.String("reason", "unknown_call"))
		writeTwiML(w, Hangup())
		return
	case err != nil:
		log.Error("connect ended", zap.String("reason", reasonStoreDown), zap.Error(err))
		http.Error(w, "session store unavailable", http.StatusInternalServerError)
		return
	}
	log = log.With(zap.String("channel_id", s.ChannelID))
	var doc string
	switch {
	case outcome == outcomeStale:
		log.Warn("connect ended ignored", zap.String("reason", outcome), zap.String("state", string(s.State)),
			zap.String("session_stream_sid", s.StreamSID))
		writeTwiML(w, Empty())
		return
	case tokErr != nil:
		log.Error("connect ended", zap.String("reason", outcome), zap.Error(tokErr))
	case outcome != "reconnect":
		log.Info("connect ended", zap.String("reason", outcome))
	default:
		if doc, err = h.connectStream(s); err != nil {
			log.Error("connect ended", zap.String("reason", "stream_token"), zap.Error(err))
		}
	}
	if doc == "" {
		writeTwiML(w, Hangup())
		return
	}
	log.Info("connect ended", zap.String("reason", outcome), zap.Int("attempt", countEvents(s, EventReconnect)))
	writeTwiML(w, doc)
}

// streamLive reports whether a connect-ended about the current <Connect>
// (generation gen) of a streaming call contradicts the pod that holds its
// stream: asked, the pod says the stream is live, so the callback is stale
// (a replay) and must not reconnect a caller who is talking. Only a "live"
// answer counts: the pod answers it only after Twilio sent on the stream
// since the question, and Twilio posts a real connect-ended after it closed
// the socket. No answer (the pod died) or "not live" reconnects as before.
func (h *Handler) streamLive(ctx context.Context, log *zap.Logger, sid, gen, streamSID string) bool {
	if h.prober == nil {
		return false
	}
	s, err := h.sessions.Session(ctx, sid)
	if err != nil || s.State != session.Streaming || s.PodID == "" || staleConnect(s, gen, streamSID) {
		return false // decided below, as without a prober
	}
	want := s.StreamSID
	if want == "" {
		want = streamSID
	}
	log = log.With(zap.String("channel_id", s.ChannelID), zap.String("pod_id", s.PodID))
	if streamSID == "" {
		log = log.With(zap.String("stream_sid", want))
	}
	live, err := h.prober.ProbeStream(ctx, s.PodID, sid, want)
	switch {
	case err != nil:
		log.Info("connect ended: the stream's pod did not answer the probe", zap.Error(err))
	case live:
		log.Warn("connect ended ignored", zap.String("reason", outcomeStale), zap.String("probe", "live"))
	default:
		log.Info("connect ended: the stream's pod says it is not live")
	}
	return live && err == nil
}

// outcomeStale is the outcome of a <Connect action> callback that does not
// match what the session knows.
const outcomeStale = "stale_callback"

// staleConnect reports whether a <Connect action> callback about connect
// generation gen and stream streamSID (either may be empty) is not about
// the call's current <Connect>. A callback without a generation (posted to
// the bare path, as DESIGN's contract shows it, or for a session stored by
// an earlier version) is judged by the stream and the owning pod alone: a
// replayed Twilio request cannot drop the generation, because the signature
// covers the URL with its query.
func staleConnect(s *session.Session, gen, streamSID string) bool {
	if gen != "" && s.Connect != nil && gen != s.Connect.ID {
		return true
	}
	return streamSID != "" && s.StreamSID != "" && streamSID != s.StreamSID
}

func countEvents(s *session.Session, typ string) int {
	n := 0
	for _, e := range s.Timeline {
		if e.Type == typ {
			n++
		}
	}
	return n
}
