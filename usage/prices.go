// Package usage prices what a call's models consumed (session.Usage) and
// counts it in Prometheus. The price table is the public list price of
// each model, which operators replace or extend with a prices file
// (PRICES_FILE, LoadFile); the figures it gives are estimates, not a bill.
package usage

import (
	"math"
	"regexp"
	"slices"

	"github.com/vivi/bridge/session"
)

// Price is what one model costs, in US dollars per 1M tokens. A cached
// price applies to the part of the input read from the model's cache.
type Price struct {
	TextInput        float64 `yaml:"textInput"`
	TextCachedInput  float64 `yaml:"textCachedInput"`
	TextOutput       float64 `yaml:"textOutput"`
	AudioInput       float64 `yaml:"audioInput"`
	AudioCachedInput float64 `yaml:"audioCachedInput"`
	AudioOutput      float64 `yaml:"audioOutput"`
}

// Prices is a price table by model name.
type Prices map[string]Price

// Default returns the public list prices (standard tier) of the models the
// bridge uses, as OpenAI published them on its pricing and model pages,
// read on 2026-12-01. They change: operators override them with a prices
// file (LoadFile), which also adds models missing here. Image tokens are
// not priced (the bridge sends no images). A new map each call.
func Default() Prices {
	realtime := Price{TextInput: 4, TextCachedInput: 0.40, TextOutput: 16, AudioInput: 32, AudioCachedInput: 0.40, AudioOutput: 64}
	return Prices{
		"gpt-realtime":            realtime,
		"gpt-realtime-2025-08-28": realtime,
		"gpt-realtime-mini":       {TextInput: 0.60, TextCachedInput: 0.06, TextOutput: 2.40, AudioInput: 10, AudioCachedInput: 0.30, AudioOutput: 20},
		"gpt-4o-realtime-preview": {TextInput: 5, TextCachedInput: 2.50, TextOutput: 20, AudioInput: 40, AudioCachedInput: 2.50, AudioOutput: 80},
		"gpt-4o-mini-realtime-preview": {TextInput: 0.60, TextCachedInput: 0.30, TextOutput: 2.40,
			AudioInput: 10, AudioCachedInput: 0.30, AudioOutput: 20},
		// Text models (the post-call analysis): no audio.
		"gpt-4o-mini":  {TextInput: 0.15, TextCachedInput: 0.075, TextOutput: 0.60},
		"gpt-4.1-mini": {TextInput: 0.40, TextCachedInput: 0.10, TextOutput: 1.60},
		"gpt-4.1":      {TextInput: 2, TextCachedInput: 0.50, TextOutput: 8},
		"gpt-4o":       {TextInput: 2.50, TextCachedInput: 1.25, TextOutput: 10},
	}
}

// snapshot is the date suffix of a model snapshot (gpt-4o-2024-08-06).
var snapshot = regexp.MustCompile(`-\d{4}-\d{2}-\d{2}$`)

// Lookup returns the price of model: its own entry, or else the entry of
// the model without its snapshot date (gpt-realtime-mini-2025-10-06 is
// priced as gpt-realtime-mini).
func (p Prices) Lookup(model string) (Price, bool) {
	if pr, ok := p[model]; ok {
		return pr, true
	}
	if base := snapshot.ReplaceAllString(model, ""); base != model {
		pr, ok := p[base]
		return pr, ok
	}
	return Price{}, false
}

// Cost returns what m cost at p, in US dollars. Cached tokens are part of
// the input counts: (input-cached)*input + cached*cachedInput + output*output,
// for text and for audio.
func (p Price) Cost(m session.ModelUsage) float64 {
	uncached := func(in, cached int64) float64 { return float64(max(in-cached, 0)) }
	c := uncached(m.InputTextTokens, m.CachedTextTokens)*p.TextInput +
		float64(m.CachedTextTokens)*p.TextCachedInput +
		float64(m.OutputTextTokens)*p.TextOutput +
		uncached(m.InputAudioTokens, m.CachedAudioTokens)*p.AudioInput +
		float64(m.CachedAudioTokens)*p.AudioCachedInput +
		float64(m.OutputAudioTokens)*p.AudioOutput
	return roundUSD(c / 1e6)
}

// roundUSD rounds to a billionth of a dollar, so that sums of prices read
// as the figures they are (0.3, not 0.30000000000000004).
func roundUSD(v float64) float64 { return math.Round(v*1e9) / 1e9 }

// Apply prices every model of u at p: each ModelUsage's CostUSD and Priced,
// the total CostUSD and the sorted names of the models p does not know
// (Unpriced; their tokens stay counted). Costs are computed from the token
// totals, so applying again gives the same figures. A nil u is left alone.
func Apply(u *session.Usage, p Prices) {
	if u == nil {
		return
	}
	total := 0.0
	u.Unpriced = nil
	for i := range u.Models {
		m := &u.Models[i]
		pr, ok := p.Lookup(m.Model)
		m.Priced = ok
		m.CostUSD = 0
		if ok {
			m.CostUSD = pr.Cost(*m)
			total += m.CostUSD
		} else if !slices.Contains(u.Unpriced, m.Model) {
			u.Unpriced = append(u.Unpriced, m.Model)
		}
	}
	slices.Sort(u.Unpriced)
	u.CostUSD = roundUSD(total)
}
