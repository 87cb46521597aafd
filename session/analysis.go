package session

import "time"

// States of a call's post-call analysis.
const (
	AnalysisRunning  = "running"  // claimed by Analysis.Pod until ClaimUntil
	AnalysisDone     = "done"     // Result is set
	AnalysisFailed   = "failed"   // Error says why; not retried again
	AnalysisDisabled = "disabled" // the agent or the pod turned it off
)

// Outcomes of a call (Analysis.Outcome).
const (
	OutcomeResolved       = "resolved"
	OutcomeTransferred    = "transferred"
	OutcomeTransferFailed = "transfer_failed"
	OutcomeAbandoned      = "abandoned"
	OutcomeAgentEnded     = "agent_ended"
	OutcomeModelFailure   = "model_failure"
)

// EventAnalyzed is the timeline event recorded when the analysis is done
// (or failed); it is delivered as the call event "call.analyzed".
const EventAnalyzed = "analyzed"

// Analysis is the post-call analysis of a session and the claim of the pod
// producing it (exactly one pod at a time: Pod until ClaimUntil).
type Analysis struct {
	State      string     `json:"state"`
	Pod        string     `json:"pod,omitempty"`
	ClaimUntil *time.Time `json:"claimUntil,omitempty"`
	Attempts   int        `json:"attempts"`
	Model      string     `json:"model,omitempty"`
	// Error is the last model error or refusal.
	Error       string          `json:"error,omitempty"`
	CompletedAt *time.Time      `json:"completedAt,omitempty"`
	Result      *AnalysisResult `json:"result,omitempty"`
}

// AnalysisResult is what the analysis found.
type AnalysisResult struct {
	Summary string `json:"summary"`
	Intent  string `json:"intent"`
	Outcome string `json:"outcome"`
	// Destination is the transfer destination of outcome transferred or
	// transfer_failed.
	Destination string   `json:"destination,omitempty"`
	FollowUps   []string `json:"followUps"`
	// Language is the BCP 47 tag of the caller's language ("" when unknown).
	Language string `json:"language"`
	// Extra holds the agent's own fields (Agent.Analysis.Fields).
	Extra map[string]any `json:"extra,omitempty"`
	// Model is false when no model was asked (an empty transcript).
	FromModel bool `json:"fromModel"`
}
