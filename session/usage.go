package session

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
}

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

// Add adds the counts of m (Model and Use name the entry) and returns it.
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
