package analysis

import (
	"github.com/vivi/bridge/session"
)

// End reasons the facts know (set by the bridge; see bridge/deps.go).
const (
	reasonAgentHangup      = "agent_hangup"
	reasonModelUnavailable = "model_unavailable"
)

// facts is what the session itself says about the call's outcome; a fact
// outcome overrides the model's.
type facts struct {
	outcome     string // "" when the model decides
	destination string
}

// factsOf reads the outcome a session records: a transfer the PBX took, a
// last transfer that failed before the call ended (a caller who hung up
// during it included), a model that was unavailable, an agent that hung up.
func factsOf(s *session.Session) facts {
	last := s.LastTransfer()
	switch {
	case s.State == session.Transferred:
		f := facts{outcome: session.OutcomeTransferred}
		if last != nil {
			f.destination = last.Destination
		}
		return f
	case s.State == session.Ended && last != nil && transferFailed(last):
		return facts{outcome: session.OutcomeTransferFailed, destination: last.Destination}
	case s.EndReason == reasonModelUnavailable:
		return facts{outcome: session.OutcomeModelFailure}
	case s.EndReason == reasonAgentHangup:
		return facts{outcome: session.OutcomeAgentEnded}
	}
	return facts{}
}

// transferFailed reports whether the attempt has an outcome that is not
// the PBX taking the call (in-progress), or failed to start at all.
func transferFailed(t *session.Transfer) bool {
	if t.Error != "" {
		return true
	}
	return t.Status != "" && t.Status != "in-progress"
}

// result is the analysis of a call with nothing said: the facts, else
// abandoned.
func (f facts) result() session.AnalysisResult {
	r := session.AnalysisResult{Outcome: f.outcome, Destination: f.destination, FollowUps: []string{}}
	if r.Outcome == "" {
		r.Outcome = session.OutcomeAbandoned
	}
	return r
}

// outcomes is the enum the model chooses from.
func (f facts) outcomes() []string {
	out := []string{session.OutcomeResolved, session.OutcomeAbandoned}
	if f.outcome != "" {
		out = append(out, f.outcome)
	}
	return out
}

// spoken reports whether the transcript holds any caller or agent text.
func spoken(s *session.Session) bool {
	for _, t := range s.Transcript {
		if (t.Role == session.RoleCaller || t.Role == session.RoleAgent) && t.Text != "" {
			return true
		}
	}
	return false
}
