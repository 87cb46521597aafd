package main

import (
	"context"
	"net/http"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/vivi/bridge/analysis/chattest"
	"github.com/vivi/bridge/delivery"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/store"
	"github.com/vivi/bridge/usage"
)

// jobWorld is one ended call in a memory store and the job of pod-a.
type jobWorld struct {
	st   *store.Memory
	chat *chattest.Server
	job  *analyzeJob
	sid  string
	now  time.Time
}

func newJobWorld(t *testing.T, said bool) *jobWorld {
	t.Helper()
	w := &jobWorld{st: store.NewMemory(store.Options{}), chat: chattest.New(), sid: "CAjob1",
		now: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	t.Cleanup(w.chat.Close)
	s := session.New(w.sid, "ch1", "agent1", w.now)
	if said {
		s.AddTurn(w.now, session.RoleAgent, "Hello, reception.")
		s.AddTurn(w.now, session.RoleCaller, "I would like to book a cleaning.")
	}
	s.End("caller_hangup", w.now.Add(time.Minute))
	if err := w.st.CreateSession(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	c := config{OpenAIAPIKey: "sk-test", OpenAIBaseURL: w.chat.URL, SummaryModel: "gpt-4o-mini", AnalysisTimeout: 5 * time.Second}
	job, err := newAnalyzeJob(c, w.st, w.st, usage.Default(), nil, "pod-a", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	job.now = func() time.Time { return w.now }
	w.job = job
	return w
}

func (w *jobWorld) run(t *testing.T) delivery.JobResult {
	t.Helper()
	return w.job.Run(context.Background(), store.OutboxEntry{CallSID: w.sid, ChannelID: "ch1", Type: analyzeJobType})
}

func (w *jobWorld) session(t *testing.T) *session.Session {
	t.Helper()
	s, err := w.st.Session(context.Background(), w.sid)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func analyzedEvents(s *session.Session) int {
	n := 0
	for _, ev := range s.Timeline {
		if ev.Type == session.EventAnalyzed {
			n++
		}
	}
	return n
}

// A model error that may pass is retried with backoff; the result, its
// usage and one analyzed event are stored once it succeeds; running the
// job again (a redelivered entry) changes nothing and asks no model.
func TestAnalyzeJobRetriesThenStoresOnce(t *testing.T) {
	w := newJobWorld(t, true)
	w.chat.FailNext(1, http.StatusServiceUnavailable)
	r := w.run(t)
	if r.Done || r.RetryAfter != analysisBackoff {
		t.Fatalf("first run %+v, want a retry after %v", r, analysisBackoff)
	}
	s := w.session(t)
	if a := s.Analysis; a == nil || a.State != session.AnalysisRunning || a.Pod != "" || a.Attempts != 1 || a.Error == "" {
		t.Fatalf("after a 503 the claim is given back with the error: %+v", a)
	}
	if r := w.run(t); !r.Done || r.Err != nil {
		t.Fatalf("second run %+v", r)
	}
	s = w.session(t)
	a := s.Analysis
	if a.State != session.AnalysisDone || a.Result == nil || a.Result.Outcome == "" || a.Attempts != 2 || a.Error != "" || a.Pod != "" {
		t.Fatalf("analysis %+v", a)
	}
	if analyzedEvents(s) != 1 || s.Usage == nil || s.Usage.CostUSD <= 0 {
		t.Fatalf("analyzed events %d, usage %+v", analyzedEvents(s), s.Usage)
	}
	if r := w.run(t); !r.Done {
		t.Fatalf("third run %+v", r)
	}
	if n := len(w.chat.Requests()); n != 2 || analyzedEvents(w.session(t)) != 1 {
		t.Fatalf("%d requests, %d analyzed events after a redelivered job", n, analyzedEvents(w.session(t)))
	}
}

// A refusal is recorded as failed at once, with its reason, and never
// asked again; the attempts stop at analysisAttempts for errors that pass.
func TestAnalyzeJobFailuresRecorded(t *testing.T) {
	w := newJobWorld(t, true)
	w.chat.RefuseNext(1)
	if r := w.run(t); !r.Done || r.Err == nil {
		t.Fatalf("refused run %+v", r)
	}
	a := w.session(t).Analysis
	if a.State != session.AnalysisFailed || a.Error == "" || a.Result != nil {
		t.Fatalf("refusal recorded as %+v", a)
	}
	if r := w.run(t); !r.Done || len(w.chat.Requests()) != 1 {
		t.Fatalf("a failed analysis was asked again: %+v, %d requests", r, len(w.chat.Requests()))
	}

	w = newJobWorld(t, true)
	w.chat.FailNext(analysisAttempts, http.StatusInternalServerError)
	var r delivery.JobResult
	for range analysisAttempts {
		r = w.run(t)
	}
	if !r.Done || w.session(t).Analysis.State != session.AnalysisFailed || len(w.chat.Requests()) != analysisAttempts {
		t.Fatalf("after %d errors: %+v, %+v", analysisAttempts, r, w.session(t).Analysis)
	}
}

// Another pod's live claim is waited for; once it has run out the call is
// taken over.
func TestAnalyzeJobWaitsForALiveClaim(t *testing.T) {
	w := newJobWorld(t, true)
	until := w.now.Add(40 * time.Second)
	if _, err := w.st.UpdateSession(context.Background(), w.sid, func(s *session.Session) error {
		s.Analysis = &session.Analysis{State: session.AnalysisRunning, Pod: "pod-b", ClaimUntil: &until, Attempts: 1}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if r := w.run(t); r.Done || r.RetryAfter != 40*time.Second || len(w.chat.Requests()) != 0 {
		t.Fatalf("run under pod-b's claim: %+v, %d requests", r, len(w.chat.Requests()))
	}
	w.now = until.Add(time.Second)
	if r := w.run(t); !r.Done {
		t.Fatalf("run after the claim ran out: %+v", r)
	}
	if a := w.session(t).Analysis; a.State != session.AnalysisDone || a.Attempts != 2 {
		t.Fatalf("taken over: %+v", a)
	}
}

// Nothing said: an outcome without a model request. Analysis off: the
// call is recorded as disabled.
func TestAnalyzeJobWithoutModel(t *testing.T) {
	w := newJobWorld(t, false)
	if r := w.run(t); !r.Done {
		t.Fatalf("run %+v", r)
	}
	a := w.session(t).Analysis
	if a.State != session.AnalysisDone || a.Result == nil || a.Result.FromModel || a.Result.Outcome != session.OutcomeAbandoned || len(w.chat.Requests()) != 0 {
		t.Fatalf("silent call analysed as %+v (result %+v), %d requests", a, a.Result, len(w.chat.Requests()))
	}

	w = newJobWorld(t, true)
	w.job.model = nil
	if r := w.run(t); !r.Done {
		t.Fatalf("run %+v", r)
	}
	if a := w.session(t).Analysis; a.State != session.AnalysisDisabled || len(w.chat.Requests()) != 0 {
		t.Fatalf("analysis off recorded as %+v", a)
	}
}
