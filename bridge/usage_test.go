package bridge

import (
	"context"
	"encoding/json"
	"math"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/usage"
)

// fullUsage is a response.done usage with every field.
var fullUsage = json.RawMessage(`{"total_tokens":1300,"input_tokens":1000,"output_tokens":300,` +
	`"input_token_details":{"text_tokens":400,"audio_tokens":600,"image_tokens":0,"cached_tokens":500,"cached_tokens_details":{"text_tokens":300,"audio_tokens":200,"image_tokens":0}},` +
	`"output_token_details":{"text_tokens":100,"audio_tokens":200}}`)

// sparseUsage lacks most fields: what the details leave out is text.
var sparseUsage = json.RawMessage(`{"input_tokens":50,"output_tokens":20,"output_token_details":{"audio_tokens":20}}`)

// realtimeUsage returns the call's realtime usage of model in the store.
func (h *harness) realtimeUsage(callSID, model string) session.ModelUsage {
	s := h.sessions.get(callSID)
	if s == nil || s.Usage == nil {
		return session.ModelUsage{}
	}
	for _, m := range s.Usage.Models {
		if m.Model == model && m.Use == session.UseRealtime {
			return m
		}
	}
	return session.ModelUsage{}
}

// metricValue reads the counter name with exactly labels, or -1.
func (h *harness) metricValue(name string, labels map[string]string) float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return -1
}

func nearUSD(a, b float64) bool { return math.Abs(a-b) < 1e-12 }

// TestUsageSummedFromResponses: the usage of every response.done is summed
// into the session record under session.created's model (a dated
// snapshot, priced as listed), fields missing from a usage block are
// tolerated, a response.done without usage adds nothing, the cost is the
// table's to the figure, and the token and cost counters agree.
func TestUsageSummedFromResponses(t *testing.T) {
	const model = "gpt-realtime-2025-08-28"
	h := newHarness(t, harnessOpts{model: realtimetest.Options{SessionModel: model, Usage: fullUsage}})
	call, mc := h.call(nil)
	waitEvent(t, mc, "response.create", 1) // the greeting: fullUsage
	mc.Respond(realtimetest.Response{Transcript: "Anything else?", Usage: sparseUsage})
	mc.Respond(realtimetest.Response{Transcript: "One moment.", Usage: json.RawMessage(`null`)})
	// Events of a connection arrive in order: once this one is counted,
	// the one without usage was read, and not counted.
	mc.Respond(realtimetest.Response{Transcript: "Bye.", Usage: sparseUsage})
	waitFor(t, "the four agent turns", func() bool { return len(h.sessions.get(call.CallSID()).Transcript) == 4 })
	waitFor(t, "the usage of three responses", func() bool { return h.realtimeUsage(call.CallSID(), model).Responses == 3 })

	call.Stop()
	s := h.waitEnded(call.CallSID())
	want := session.ModelUsage{Model: model, Use: session.UseRealtime, Responses: 3,
		InputTextTokens: 500, InputAudioTokens: 600, CachedTextTokens: 300, CachedAudioTokens: 200,
		OutputTextTokens: 100, OutputAudioTokens: 240, Priced: true}
	// (500-300)*4 + 300*0.4 + 100*16 + (600-200)*32 + 200*0.4 + 240*64 = 30,760 per 1M tokens.
	const cost = 0.03076
	if s.Usage == nil || len(s.Usage.Models) != 1 {
		t.Fatalf("usage %+v", s.Usage)
	}
	got := s.Usage.Models[0]
	if c := got.CostUSD; !nearUSD(c, cost) {
		t.Errorf("model cost %v, want %v", c, cost)
	}
	got.CostUSD = 0
	if got != want {
		t.Errorf("usage %+v\nwant  %+v", got, want)
	}
	if !nearUSD(s.Usage.CostUSD, cost) || len(s.Usage.Unpriced) != 0 {
		t.Errorf("total %v, unpriced %v", s.Usage.CostUSD, s.Usage.Unpriced)
	}
	if len(s.Usage.Streams) != 1 || s.Usage.Streams[0].Stream != call.StreamSID() {
		t.Errorf("streams %+v", s.Usage.Streams)
	}

	for kind, n := range map[string]float64{
		usage.KindInputText: 200, usage.KindCachedText: 300, usage.KindOutputText: 100,
		usage.KindInputAudio: 400, usage.KindCachedAudio: 200, usage.KindOutputAudio: 240,
	} {
		if v := h.metricValue("vivi_model_tokens_total", map[string]string{"model": model, "use": "realtime", "kind": kind}); v != n {
			t.Errorf("vivi_model_tokens_total{kind=%q} = %v, want %v", kind, v, n)
		}
	}
	if v := h.metricValue("vivi_model_cost_usd_total", map[string]string{"model": model, "use": "realtime"}); !nearUSD(v, cost) {
		t.Errorf("vivi_model_cost_usd_total = %v, want %v", v, cost)
	}
}

// TestUsageKeptAcrossRotationAndRedial: a call whose model session is
// rotated, then dropped and re-dialled, keeps summing its usage over the
// three connections, in one entry of the one stream; a model the price
// table lacks is counted, listed as unpriced and costs nothing.
func TestUsageKeptAcrossRotationAndRedial(t *testing.T) {
	const life = time.Minute
	timers := newFakeAfter()
	agent := testAgent()
	agent.Model = "gpt-unlisted"
	h := newHarness(t, harnessOpts{model: realtimetest.Options{ExpiresIn: life, Usage: sparseUsage}, agent: agent, cfg: faultCfg(timers, nil)})
	call, mc := h.call(nil)
	waitEvent(t, mc, "response.create", 1)
	waitFor(t, "the greeting played", func() bool { return call.PlayedBytes() >= 1600 })
	waitFor(t, "the greeting's usage", func() bool { return h.realtimeUsage(call.CallSID(), "gpt-unlisted").Responses == 1 })
	awaitRotateTimer(t, timers, life).fire()
	mc2 := h.nextConn()
	waitEvent(t, mc2, "session.update", 1)
	waitFor(t, "the switch", func() bool { return h.logs.FilterMessage("model session rotated").Len() == 1 })
	mc2.Respond(realtimetest.Response{Transcript: "After the rotation.", Usage: fullUsage})
	waitFor(t, "the usage on the next session", func() bool { return h.realtimeUsage(call.CallSID(), "gpt-unlisted").Responses == 2 })
	mc2.CloseWith(1011, "internal error")
	mc3 := h.nextConn()
	waitEvent(t, mc3, "response.create", 1) // the continuation: sparseUsage
	waitFor(t, "the usage after the re-dial", func() bool { return h.realtimeUsage(call.CallSID(), "gpt-unlisted").Responses == 3 })

	got := h.realtimeUsage(call.CallSID(), "gpt-unlisted")
	want := session.ModelUsage{Model: "gpt-unlisted", Use: session.UseRealtime, Responses: 3,
		InputTextTokens: 400 + 2*50, InputAudioTokens: 600, CachedTextTokens: 300, CachedAudioTokens: 200,
		OutputTextTokens: 100, OutputAudioTokens: 200 + 2*20}
	if got != want {
		t.Errorf("usage %+v\nwant  %+v", got, want)
	}
	s := h.sessions.get(call.CallSID())
	if len(s.Usage.Models) != 1 || s.Usage.CostUSD != 0 || len(s.Usage.Unpriced) != 1 || s.Usage.Unpriced[0] != "gpt-unlisted" || len(s.Usage.Streams) != 1 {
		t.Errorf("usage %+v", s.Usage)
	}
	if v := h.metricValue("vivi_model_tokens_total", map[string]string{"model": "gpt-unlisted", "use": "realtime", "kind": usage.KindOutputAudio}); v != 240 {
		t.Errorf("output audio tokens counted %v", v)
	}
	if v := h.metricValue("vivi_model_cost_usd_total", map[string]string{"model": "gpt-unlisted", "use": "realtime"}); v != -1 {
		t.Errorf("an unpriced model's cost counted: %v", v)
	}
	if n := h.logs.FilterMessage("model not in the price table: its tokens are counted, its cost is not estimated (PRICES_FILE)").Len(); n != 1 {
		t.Errorf("%d warnings of the unpriced model, want 1", n)
	}
}

// TestSessionWriterPutsUsageOnce: a usage total whose write landed but
// was reported failed is re-applied without counting twice, and a newer
// total queued meanwhile adds only its difference; the record is priced.
func TestSessionWriterPutsUsageOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &maybeWrittenSessions{memSessions: memSessions{m: map[string]*session.Session{}}}
		store.put(session.New("CA1", "ch", "ag", time.Unix(0, 0)))
		w := newSessionWriter(context.Background(), store, "CA1", zap.NewNop(), time.Second)
		w.prices = usage.Default()
		done := make(chan struct{})
		go func() {
			defer close(done)
			w.run()
		}()
		total := func(responses int, out int64) []session.ModelUsage {
			return []session.ModelUsage{{Model: "gpt-realtime", Use: session.UseRealtime, Responses: responses, OutputAudioTokens: out}}
		}
		w.usage("MZ1", total(1, 1000))
		synctest.Wait() // written, reported failed: the retry waits
		w.usage("MZ1", total(2, 3000))
		time.Sleep(time.Minute) // fake time: the retry
		s := store.get("CA1")
		if m := s.Usage.Models; len(m) != 1 || m[0].Responses != 2 || m[0].OutputAudioTokens != 3000 {
			t.Fatalf("after the retry: %+v", s.Usage)
		}
		w.usage("MZ1", total(3, 4000))
		w.finish(func(s *session.Session) { s.End("caller_hangup", time.Unix(4, 0)) })
		<-done
		s = store.get("CA1")
		if m := s.Usage.Models; len(m) != 1 || m[0].Responses != 3 || m[0].OutputAudioTokens != 4000 || !m[0].Priced ||
			!nearUSD(s.Usage.CostUSD, 0.256) { // 4000 audio output tokens at $64 per 1M
			t.Fatalf("at the end: %+v", s.Usage)
		}
	})
}
