package main

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/vivi/bridge/analysis"
	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/delivery"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/store"
	"github.com/vivi/bridge/usage"
)

// Bounds of the post-call analysis of one call.
const (
	analysisAttempts = 3               // model requests before it is recorded as failed
	analysisBackoff  = 2 * time.Second // before the second attempt; doubled after
	// analysisReleaseTimeout bounds the writes that store a result or give
	// a claim back, which are done even when the pod stops meanwhile.
	analysisReleaseTimeout = 2 * time.Second
)

// analyzeJobType is the outbox job of a call that ended (delivery.Entries).
const analyzeJobType = delivery.JobAnalyze

// newAnalyzeJob returns the job of the pod's post-call analyses; with
// OPENAI_SUMMARY_MODEL=off it records each call's analysis as disabled.
func newAnalyzeJob(c config, st storeAPI, agents configLookup, prices usage.Prices, tokens *usage.Tokens,
	pod string, log *zap.Logger) (*analyzeJob, error) {
	j := &analyzeJob{sessions: st, agents: agents, modelID: c.SummaryModel, timeout: c.AnalysisTimeout,
		prices: prices, tokens: tokens, pod: pod, now: time.Now, log: log}
	if c.SummaryModel == "" {
		return j, nil
	}
	a, err := analysis.New(analysis.Config{APIKey: c.OpenAIAPIKey, BaseURL: c.OpenAIBaseURL, Model: c.SummaryModel, Timeout: c.AnalysisTimeout})
	if err != nil {
		return nil, errConfig("OPENAI_BASE_URL / OPENAI_SUMMARY_MODEL: %v", err)
	}
	j.model = a
	return j, nil
}

// analyzer is the model side of the analysis (analysis.Analyzer).
type analyzer interface {
	Analyze(ctx context.Context, in analysis.Input) (analysis.Output, error)
}

// analyzeJob runs the post-call analysis of the job entries "analyze" the
// outbox holds for every call that ended. The deliverer hands a call's job
// to the one pod that owns its shard, and the session's claim
// (Analysis.Pod until ClaimUntil) makes it exactly one pod at a time even
// when a shard changes hands in the middle: a pod that stops gives its
// claim back (or it runs out), and the pod that reclaims the entry finishes
// the job.
type analyzeJob struct {
	sessions interface {
		Session(ctx context.Context, callSID string) (*session.Session, error)
		UpdateSession(ctx context.Context, callSID string, fn func(*session.Session) error) (*session.Session, error)
	}
	agents  configLookup
	model   analyzer // nil: analysis off on this pod (OPENAI_SUMMARY_MODEL=off)
	modelID string
	timeout time.Duration // of one request; the claim lasts twice as long
	prices  usage.Prices
	tokens  *usage.Tokens
	pod     string
	now     func() time.Time
	log     *zap.Logger
}

// errAnalysisSettled stops the claim write when there is nothing to do.
var errAnalysisSettled = errors.New("analysis settled")

// Run does the analysis of e's call, or tells when to try again.
func (j *analyzeJob) Run(ctx context.Context, e store.OutboxEntry) delivery.JobResult {
	log := j.log.With(zap.String("call_sid", e.CallSID), zap.String("channel_id", e.ChannelID))
	cur, err := j.sessions.Session(ctx, e.CallSID)
	if errors.Is(err, session.ErrNotFound) {
		return delivery.JobResult{Done: true} // expired: nothing left to analyse
	}
	if err != nil {
		return delivery.JobResult{RetryAfter: analysisBackoff, Err: err}
	}
	settings := channel.AgentAnalysis{}
	// An agent deleted since the call is analysed with the defaults.
	if agent, err := j.agents.Agent(ctx, cur.AgentID); err == nil && agent.Analysis != nil {
		settings = *agent.Analysis
	}
	off := j.model == nil || !settings.On()

	// Claim the analysis (or find it done, or claimed by a live pod).
	now := j.now()
	var wait time.Duration
	s, err := j.sessions.UpdateSession(ctx, e.CallSID, func(s *session.Session) error {
		a := s.Analysis
		switch {
		case a != nil && (a.State == session.AnalysisDone || a.State == session.AnalysisFailed || a.State == session.AnalysisDisabled):
			return errAnalysisSettled
		case a != nil && a.Pod != "" && a.Pod != j.pod && a.ClaimUntil != nil && now.Before(*a.ClaimUntil):
			wait = a.ClaimUntil.Sub(now)
			return errAnalysisSettled
		case off:
			s.Analysis = &session.Analysis{State: session.AnalysisDisabled}
			return nil
		}
		if a == nil {
			a = &session.Analysis{}
			s.Analysis = a
		}
		until := now.Add(2 * j.timeout)
		a.State, a.Pod, a.ClaimUntil, a.Model = session.AnalysisRunning, j.pod, &until, j.modelID
		a.Attempts++
		return nil
	})
	switch {
	case errors.Is(err, errAnalysisSettled) && wait > 0:
		return delivery.JobResult{RetryAfter: wait}
	case errors.Is(err, errAnalysisSettled), errors.Is(err, session.ErrNotFound):
		return delivery.JobResult{Done: true}
	case err != nil:
		return delivery.JobResult{RetryAfter: analysisBackoff, Err: err}
	case off:
		log.Debug("post-call analysis off")
		return delivery.JobResult{Done: true}
	}
	attempt := s.Analysis.Attempts

	rctx, cancel := context.WithTimeout(ctx, j.timeout)
	out, aerr := j.model.Analyze(rctx, analysis.Input{Session: s, Settings: settings})
	cancel()
	if aerr != nil && ctx.Err() != nil {
		// The pod stops: give the claim back so that the pod that takes the
		// entry over need not wait for it to run out.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), analysisReleaseTimeout)
		defer cancel()
		_, _ = j.sessions.UpdateSession(rctx, e.CallSID, func(s *session.Session) error {
			if a := s.Analysis; a != nil && a.State == session.AnalysisRunning && a.Pod == j.pod {
				a.Pod, a.ClaimUntil = "", nil
				a.Attempts-- // this one was not the model's fault
				return nil
			}
			return errAnalysisSettled
		})
		return delivery.JobResult{RetryAfter: analysisBackoff, Err: ctx.Err()}
	}
	var ae *analysis.Error
	retry := aerr != nil && errors.As(aerr, &ae) && ae.Retryable && attempt < analysisAttempts
	if aerr != nil && !errors.As(aerr, &ae) {
		retry = attempt < analysisAttempts // a transport error of unknown kind
	}

	// Store what came of it, if the claim is still ours: even when the pod
	// stops meanwhile (the answer is paid for).
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), analysisReleaseTimeout)
	defer wcancel()
	done := j.now()
	lost := false
	_, err = j.sessions.UpdateSession(wctx, e.CallSID, func(s *session.Session) error {
		a := s.Analysis
		if a == nil || a.State != session.AnalysisRunning || a.Pod != j.pod {
			lost = true
			return errAnalysisSettled
		}
		if out.Requested {
			s.AddUsage(out.Usage)
			usage.Apply(s.Usage, j.prices)
		}
		switch {
		case aerr == nil:
			res := out.Result
			a.State, a.Result, a.Error = session.AnalysisDone, &res, ""
			a.Pod, a.ClaimUntil, a.CompletedAt = "", nil, &done
			s.Record(done, session.EventAnalyzed, res.Outcome)
		case retry:
			a.Error = aerr.Error()
			a.Pod, a.ClaimUntil = "", nil
		default:
			a.State, a.Error = session.AnalysisFailed, aerr.Error()
			a.Pod, a.ClaimUntil, a.CompletedAt = "", nil, &done
			s.Record(done, session.EventAnalyzed, "failed")
		}
		return nil
	})
	if lost {
		log.Warn("post-call analysis: claim lost before the result was stored; another pod has it")
		return delivery.JobResult{Done: true}
	}
	if err != nil {
		// The result is not stored: the claim runs out and the job is done again.
		return delivery.JobResult{RetryAfter: analysisBackoff, Err: err}
	}
	if out.Requested {
		j.tokens.Count(out.Usage)
	}
	switch {
	case aerr == nil:
		log.Info("post-call analysis done", zap.String("outcome", out.Result.Outcome), zap.Bool("model", out.Requested))
		return delivery.JobResult{Done: true}
	case retry:
		log.Warn("post-call analysis failed; retrying", zap.Int("attempt", attempt), zap.Error(aerr))
		return delivery.JobResult{RetryAfter: analysisBackoff << (attempt - 1), Err: aerr}
	default:
		log.Warn("post-call analysis failed", zap.Int("attempts", attempt), zap.Error(aerr))
		return delivery.JobResult{Done: true, Err: aerr}
	}
}
