package usage

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vivi/bridge/session"
)

// Kinds of tokens (the kind label of vivi_model_tokens_total). The input
// kinds count the uncached part; the cached kinds the part read from the
// cache, so that the kinds add up to the tokens used.
const (
	KindInputText   = "input_text"
	KindInputAudio  = "input_audio"
	KindCachedText  = "cached_text"
	KindCachedAudio = "cached_audio"
	KindOutputText  = "output_text"
	KindOutputAudio = "output_audio"
)

// Tokens counts the tokens the pod's calls used and their estimated cost,
// by model and use. A nil *Tokens counts nothing.
type Tokens struct {
	tokens *prometheus.CounterVec
	cost   *prometheus.CounterVec
}

// NewTokens returns the counters, registered on reg (nil: kept but not
// exported). A registry that has them already (a second server on the
// same registry in tests) shares its counters; any other registration
// error is a programming error and panics, like MustRegister.
func NewTokens(reg prometheus.Registerer) *Tokens {
	t := &Tokens{
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vivi_model_tokens_total",
			Help: "Tokens the models used, by model, use (realtime, analysis) and kind (input_text, input_audio and cached_text, cached_audio: the uncached and the cached part of the input; output_text, output_audio).",
		}, []string{"model", "use", "kind"}),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vivi_model_cost_usd_total",
			Help: "Estimated cost of the tokens the models used, in US dollars, at the price table's prices (models it does not price are not counted), by model and use.",
		}, []string{"model", "use"}),
	}
	if reg != nil {
		t.tokens = register(reg, t.tokens)
		t.cost = register(reg, t.cost)
	}
	return t
}

func register(reg prometheus.Registerer, c *prometheus.CounterVec) *prometheus.CounterVec {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	switch {
	case err == nil:
		return c
	case errors.As(err, &are):
		if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
			return existing
		}
	}
	panic("usage: register metrics: " + err.Error())
}

// Count adds the tokens of m and, when m is priced, its cost (m.CostUSD,
// see Price.Cost). m is one increment (a response's usage), not a total.
func (t *Tokens) Count(m session.ModelUsage) {
	if t == nil {
		return
	}
	for _, k := range []struct {
		kind string
		n    int64
	}{
		{KindInputText, m.InputTextTokens - m.CachedTextTokens},
		{KindInputAudio, m.InputAudioTokens - m.CachedAudioTokens},
		{KindCachedText, m.CachedTextTokens},
		{KindCachedAudio, m.CachedAudioTokens},
		{KindOutputText, m.OutputTextTokens},
		{KindOutputAudio, m.OutputAudioTokens},
	} {
		if k.n > 0 {
			t.tokens.WithLabelValues(m.Model, m.Use, k.kind).Add(float64(k.n))
		}
	}
	if m.Priced && m.CostUSD > 0 {
		t.cost.WithLabelValues(m.Model, m.Use).Add(m.CostUSD)
	}
}
