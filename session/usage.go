package session

import "slices"

// Uses of a model, in ModelUsage.Use.
const (
	UseRealtime = "realtime" // the voice conversation (response.done usage)
	UseAnalysis = "analysis" // the post-call analysis (chat completion usage)
)

// Usage is what a call's models consumed, by model and use, with the
// estimated cost of the call.
type Usage struct {
	Models []ModelUsage `json:"models"`
	// CostUSD is the estimated cost of every priced model of the call, in
	// US dollars; Unpriced names the models the price table does not know
	// (their tokens are counted, not priced).
	CostUSD  float64  `json:"costUsd"`
	Unpriced []string `json:"unpriced,omitempty"`
	// Streams is what the call's latest media streams (at most
	// MaxUsageStreams) have added to Models, each as its running total:
	// the bookkeeping that lets a stream write its total again (a write
	// re-applied after an unknown outcome) without counting it twice
	// (PutStreamUsage).
	Streams []StreamUsage `json:"streams,omitempty"`
}

// StreamUsage is the running total of the usage one media stream (named
// by its stream SID) added to the call's Usage.
type StreamUsage struct {
	Stream string       `json:"stream"`
	Models []ModelUsage `json:"models"`
}

// MaxUsageStreams bounds Usage.Streams: only the live stream writes (older
// ones are fenced), so the few latest are more than enough.
const MaxUsageStreams = 4

// ModelUsage is the token count of one model in one use. Input tokens
// include the cached ones (as the API reports them); Cached* are the part
// of the input read from the model's cache, billed at the cached price.
type ModelUsage struct {
	Model             string  `json:"model"`
	Use               string  `json:"use"`
	Responses         int     `json:"responses"`
	InputTextTokens   int64   `json:"inputTextTokens"`
	InputAudioTokens  int64   `json:"inputAudioTokens"`
	CachedTextTokens  int64   `json:"cachedTextTokens"`
	CachedAudioTokens int64   `json:"cachedAudioTokens"`
	OutputTextTokens  int64   `json:"outputTextTokens"`
	OutputAudioTokens int64   `json:"outputAudioTokens"`
	CostUSD           float64 `json:"costUsd"`
	// Priced is false when the price table has no entry for Model.
	Priced bool `json:"priced"`
}

// Add adds the counts of m to u (u's Model and Use stay).
func (u *ModelUsage) Add(m ModelUsage) {
	u.Responses += m.Responses
	u.InputTextTokens += m.InputTextTokens
	u.InputAudioTokens += m.InputAudioTokens
	u.CachedTextTokens += m.CachedTextTokens
	u.CachedAudioTokens += m.CachedAudioTokens
	u.OutputTextTokens += m.OutputTextTokens
	u.OutputAudioTokens += m.OutputAudioTokens
}

// AddUsage adds m to the session's usage entry of the same model and use
// (creating it). Costs are not computed here (see the usage package).
func (s *Session) AddUsage(m ModelUsage) *ModelUsage {
	if s.Usage == nil {
		s.Usage = &Usage{}
	}
	for i := range s.Usage.Models {
		if e := &s.Usage.Models[i]; e.Model == m.Model && e.Use == m.Use {
			e.Add(m)
			return e
		}
	}
	s.Usage.Models = append(s.Usage.Models, ModelUsage{Model: m.Model, Use: m.Use})
	e := &s.Usage.Models[len(s.Usage.Models)-1]
	e.Add(m)
	return e
}

// PutStreamUsage makes the session's usage include total, the running
// total of stream's usage: it adds to Models what total has beyond what
// the stream had added before (Usage.Streams), and records total as the
// stream's. Putting the same total again adds nothing, so a write that is
// re-applied after an unknown outcome counts once. Counts that went down
// (which a stream's running total never does) add nothing. Costs are not
// computed here (see the usage package).
func (s *Session) PutStreamUsage(stream string, total []ModelUsage) {
	if s.Usage == nil {
		s.Usage = &Usage{}
	}
	u := s.Usage
	var before []ModelUsage
	if i := slices.IndexFunc(u.Streams, func(st StreamUsage) bool { return st.Stream == stream }); i >= 0 {
		before = u.Streams[i].Models
		u.Streams = slices.Delete(u.Streams, i, i+1)
	}
	for _, m := range total {
		var prev ModelUsage
		if j := slices.IndexFunc(before, func(b ModelUsage) bool { return b.Model == m.Model && b.Use == m.Use }); j >= 0 {
			prev = before[j]
		}
		d := ModelUsage{Model: m.Model, Use: m.Use,
			Responses:         max(m.Responses-prev.Responses, 0),
			InputTextTokens:   max(m.InputTextTokens-prev.InputTextTokens, 0),
			InputAudioTokens:  max(m.InputAudioTokens-prev.InputAudioTokens, 0),
			CachedTextTokens:  max(m.CachedTextTokens-prev.CachedTextTokens, 0),
			CachedAudioTokens: max(m.CachedAudioTokens-prev.CachedAudioTokens, 0),
			OutputTextTokens:  max(m.OutputTextTokens-prev.OutputTextTokens, 0),
			OutputAudioTokens: max(m.OutputAudioTokens-prev.OutputAudioTokens, 0),
		}
		if d != (ModelUsage{Model: m.Model, Use: m.Use}) {
			s.AddUsage(d)
		}
	}
	kept := make([]ModelUsage, len(total))
	for i, m := range total {
		kept[i] = ModelUsage{Model: m.Model, Use: m.Use, Responses: m.Responses,
			InputTextTokens: m.InputTextTokens, InputAudioTokens: m.InputAudioTokens,
			CachedTextTokens: m.CachedTextTokens, CachedAudioTokens: m.CachedAudioTokens,
			OutputTextTokens: m.OutputTextTokens, OutputAudioTokens: m.OutputAudioTokens}
	}
	u.Streams = append(u.Streams, StreamUsage{Stream: stream, Models: kept})
	if n := len(u.Streams); n > MaxUsageStreams {
		u.Streams = slices.Delete(u.Streams, 0, n-MaxUsageStreams)
	}
}
