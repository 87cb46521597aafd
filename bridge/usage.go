package bridge

import (
	"slices"

	"go.uber.org/zap"

	"github.com/vivi/bridge/bridge/realtime"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/usage"
)

// maxModelName bounds a model name taken from the model's session.created
// (it becomes a metric label and a key of the session's usage).
const maxModelName = 100

// setModel takes session.created's model as the connection's, when it
// names one.
func (mc *modelConn) setModel(model string) {
	if model != "" {
		mc.model = clip(model, maxModelName)
	}
}

// onResponseUsage counts the usage of a response.done of mc: it adds it to
// the stream's running total (owned by the loop, kept across rotations and
// re-dials), counts it in the token metrics and queues the new total for
// the session record, which folds into the write already pending (the
// reply's transcript turn, typically) when there is one.
func (c *call) onResponseUsage(mc *modelConn, r *realtime.ServerResponse) {
	if r == nil || r.Usage == nil || mc == nil {
		return
	}
	d := modelUsage(mc.model, r.Usage)
	if pr, ok := c.cfg.Prices.Lookup(d.Model); ok {
		d.CostUSD, d.Priced = pr.Cost(d), true
	} else if !slices.Contains(c.unpriced, d.Model) {
		c.unpriced = append(c.unpriced, d.Model)
		c.log.Warn("model not in the price table: its tokens are counted, its cost is not estimated (PRICES_FILE)",
			zap.String("model", d.Model))
	}
	c.srv.deps.Usage.Count(d)
	i := slices.IndexFunc(c.usage, func(m session.ModelUsage) bool { return m.Model == d.Model && m.Use == d.Use })
	if i < 0 {
		c.usage = append(c.usage, session.ModelUsage{Model: d.Model, Use: d.Use})
		i = len(c.usage) - 1
	}
	c.usage[i].Add(d)
	if c.writer != nil {
		c.writer.usage(c.streamSID, slices.Clone(c.usage))
	}
}

// modelUsage is one response's usage under model. Input counts include
// the cached tokens; what the details leave unexplained (a usage without
// them) is counted as text, the cached part included, and the cached
// counts never exceed the input counts they are part of. Image tokens are
// not counted (the bridge sends no images).
func modelUsage(model string, u *realtime.Usage) session.ModelUsage {
	in, out := u.Input, u.Output
	m := session.ModelUsage{Model: model, Use: session.UseRealtime, Responses: 1,
		InputTextTokens: in.TextTokens, InputAudioTokens: in.AudioTokens,
		OutputTextTokens: out.TextTokens, OutputAudioTokens: out.AudioTokens,
		CachedTextTokens: in.Cached.TextTokens, CachedAudioTokens: in.Cached.AudioTokens,
	}
	m.InputTextTokens += max(u.InputTokens-in.TextTokens-in.AudioTokens-in.ImageTokens, 0)
	m.OutputTextTokens += max(u.OutputTokens-out.TextTokens-out.AudioTokens, 0)
	m.CachedTextTokens += max(in.CachedTokens-in.Cached.TextTokens-in.Cached.AudioTokens-in.Cached.ImageTokens, 0)
	m.CachedTextTokens = min(m.CachedTextTokens, m.InputTextTokens)
	m.CachedAudioTokens = min(m.CachedAudioTokens, m.InputAudioTokens)
	return m
}

// usage queues the stream's running usage total without blocking; only
// the latest total matters (session.PutStreamUsage adds what is new).
func (w *sessionWriter) usage(stream string, total []session.ModelUsage) {
	w.mu.Lock()
	w.tail().Usage = &session.Usage{Streams: []session.StreamUsage{{Stream: stream, Models: total}}}
	w.mu.Unlock()
	w.signal()
}

// priceBatch re-prices s's usage when batch changed it.
func (w *sessionWriter) priceBatch(s *session.Session, batch []pendingSeg) {
	if s.Usage == nil || !slices.ContainsFunc(batch, func(seg pendingSeg) bool { return seg.adds != nil && seg.adds.Usage != nil }) {
		return
	}
	usage.Apply(s.Usage, w.prices)
}

// putUsage applies the usage totals of the scratch record adds to s.
func putUsage(s, adds *session.Session) {
	if adds.Usage == nil {
		return
	}
	for _, st := range adds.Usage.Streams {
		s.PutStreamUsage(st.Stream, st.Models)
	}
}
