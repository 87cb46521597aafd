package realtime

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// Usage is the token usage of one response (response.done's
// response.usage). Input counts include the cached tokens, as the API
// reports them.
//
// It is read leniently: any field may be absent, and a field of the wrong
// type (a string, a fraction, a negative or oversized number, an array
// where an object belongs) reads as zero instead of failing the whole
// event, so that an odd usage block never costs the bridge a response.done
// (which drives the call's turn-taking). A usage that is not an object at
// all reads as absent (ServerResponse.Usage nil).
type Usage struct {
	TotalTokens  int64              `json:"total_tokens"`
	InputTokens  int64              `json:"input_tokens"`
	OutputTokens int64              `json:"output_tokens"`
	Input        InputTokenDetails  `json:"input_token_details"`
	Output       OutputTokenDetails `json:"output_token_details"`
}

// InputTokenDetails splits a response's input tokens by modality; Cached
// is the part read from the model's cache.
type InputTokenDetails struct {
	TextTokens   int64        `json:"text_tokens"`
	AudioTokens  int64        `json:"audio_tokens"`
	ImageTokens  int64        `json:"image_tokens"`
	CachedTokens int64        `json:"cached_tokens"`
	Cached       TokenDetails `json:"cached_tokens_details"`
}

// TokenDetails splits a token count by modality.
type TokenDetails struct {
	TextTokens  int64 `json:"text_tokens"`
	AudioTokens int64 `json:"audio_tokens"`
	ImageTokens int64 `json:"image_tokens"`
}

// OutputTokenDetails splits a response's output tokens by modality.
type OutputTokenDetails struct {
	TextTokens  int64 `json:"text_tokens"`
	AudioTokens int64 `json:"audio_tokens"`
}

// UnmarshalJSON reads the response with its usage read leniently (Usage).
func (r *ServerResponse) UnmarshalJSON(b []byte) error {
	type plain ServerResponse // without this method
	var w struct {
		plain
		Usage json.RawMessage `json:"usage"` // shadows plain.Usage
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*r = ServerResponse(w.plain)
	r.Usage = parseUsage(w.Usage)
	return nil
}

// parseUsage reads a usage object (valid JSON: the event decoded), or nil.
func parseUsage(raw json.RawMessage) *Usage {
	if !isObject(raw) {
		return nil
	}
	var w struct {
		Total  count           `json:"total_tokens"`
		Input  count           `json:"input_tokens"`
		Output count           `json:"output_tokens"`
		InRaw  json.RawMessage `json:"input_token_details"`
		OutRaw json.RawMessage `json:"output_token_details"`
	}
	if json.Unmarshal(raw, &w) != nil {
		return nil // cannot happen: every member reads leniently
	}
	u := &Usage{TotalTokens: int64(w.Total), InputTokens: int64(w.Input), OutputTokens: int64(w.Output)}
	if isObject(w.InRaw) {
		var in struct {
			Text    count           `json:"text_tokens"`
			Audio   count           `json:"audio_tokens"`
			Image   count           `json:"image_tokens"`
			Cached  count           `json:"cached_tokens"`
			Details json.RawMessage `json:"cached_tokens_details"`
		}
		if json.Unmarshal(w.InRaw, &in) == nil {
			u.Input = InputTokenDetails{TextTokens: int64(in.Text), AudioTokens: int64(in.Audio),
				ImageTokens: int64(in.Image), CachedTokens: int64(in.Cached)}
			if isObject(in.Details) {
				var d struct {
					Text  count `json:"text_tokens"`
					Audio count `json:"audio_tokens"`
					Image count `json:"image_tokens"`
				}
				if json.Unmarshal(in.Details, &d) == nil {
					u.Input.Cached = TokenDetails{TextTokens: int64(d.Text), AudioTokens: int64(d.Audio), ImageTokens: int64(d.Image)}
				}
			}
		}
	}
	if isObject(w.OutRaw) {
		var out struct {
			Text  count `json:"text_tokens"`
			Audio count `json:"audio_tokens"`
		}
		if json.Unmarshal(w.OutRaw, &out) == nil {
			u.Output = OutputTokenDetails{TextTokens: int64(out.Text), AudioTokens: int64(out.Audio)}
		}
	}
	return u
}

func isObject(raw json.RawMessage) bool {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	return len(raw) > 0 && raw[0] == '{'
}

// count is a token count read leniently: a non-negative integer that fits
// in an int64, anything else zero.
type count int64

func (n *count) UnmarshalJSON(b []byte) error {
	if v, err := strconv.ParseInt(string(b), 10, 64); err == nil && v >= 0 {
		*n = count(v)
	} else {
		*n = 0
	}
	return nil
}
