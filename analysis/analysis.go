// Package analysis produces the post-call analysis of a session: the facts
// the session records (a transfer, a model failure, the agent's hang-up)
// and, when something was said, one structured chat completion
// (go-openai, JSON schema, strict) for the summary, the caller's intent, the
// outcome, follow-ups, the language and the agent's own fields.
//
// The package does no storage: the caller claims the call, runs Analyze
// and stores its Output.
package analysis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/internal/redact"
	"github.com/vivi/bridge/session"
)

// Defaults of Config.
const (
	DefaultBaseURL = "https://api.openai.com/v1"
	DefaultModel   = "gpt-4o-mini"
	DefaultTimeout = 30 * time.Second
	// AzureAPIVersion is the Azure OpenAI API version asked for unless the
	// BaseURL names one (?api-version=): the first GA version with
	// structured outputs.
	AzureAPIVersion = "2024-10-21"
)

// maxResponseBytes bounds the body of a chat completion read.
const maxResponseBytes = 1 << 20

// maxCompletionTokens bounds the model's answer (a summary and a few fields).
const maxCompletionTokens = 2000

// Config configures an Analyzer.
type Config struct {
	APIKey string
	// BaseURL is the API root, https://api.openai.com/v1 by default. An
	// Azure OpenAI host (*.openai.azure.com, *.cognitiveservices.azure.com)
	// is called the Azure way: api-key header, Model as the deployment name.
	BaseURL string
	// Model is the chat model, or the Azure deployment name (unchanged).
	Model string
	// Timeout bounds one Analyze call, DefaultTimeout when zero.
	Timeout time.Duration
	// HTTPClient is the client used, http.DefaultClient's transport when nil.
	HTTPClient *http.Client
}

// Analyzer analyses ended calls. It is safe for concurrent use.
type Analyzer struct {
	client  *openai.Client
	model   string
	timeout time.Duration
	redact  *redact.Redactor
}

// New returns an Analyzer for cfg.
func New(cfg Config) (*Analyzer, error) {
	if cfg.APIKey == "" {
		return nil, errors.New("analysis: no API key")
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	if cfg.Model == "" {
		cfg.Model = DefaultModel
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("analysis: base URL %q is not an http(s) URL", cfg.BaseURL)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{}
	}
	var oc openai.ClientConfig
	if isAzure(u.Hostname()) {
		// The resource's root: go-openai adds /openai/deployments/{model}.
		oc = openai.DefaultAzureConfig(cfg.APIKey, u.Scheme+"://"+u.Host)
		oc.APIVersion = AzureAPIVersion
		if v := u.Query().Get("api-version"); v != "" {
			oc.APIVersion = v
		}
		// The default mapper strips characters; the deployment is named as
		// configured.
		oc.AzureModelMapperFunc = func(model string) string { return model }
	} else {
		oc = openai.DefaultConfig(cfg.APIKey)
		oc.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	}
	oc.HTTPClient = limitedDoer{hc}
	return &Analyzer{
		client:  openai.NewClientWithConfig(oc),
		model:   cfg.Model,
		timeout: cfg.Timeout,
		redact:  redact.New(cfg.APIKey),
	}, nil
}

func isAzure(host string) bool {
	host = strings.ToLower(host)
	return strings.HasSuffix(host, ".openai.azure.com") || strings.HasSuffix(host, ".cognitiveservices.azure.com")
}

// limitedDoer bounds the response bodies go-openai reads.
type limitedDoer struct{ c *http.Client }

func (d limitedDoer) Do(req *http.Request) (*http.Response, error) {
	res, err := d.c.Do(req)
	if err != nil {
		return nil, err
	}
	res.Body = &limitedBody{r: io.LimitReader(res.Body, maxResponseBytes+1), c: res.Body}
	return res, nil
}

type limitedBody struct {
	r io.Reader
	c io.Closer
	n int64
}

var errResponseTooLarge = errors.New("response body too large")

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.n > maxResponseBytes {
		return 0, errResponseTooLarge
	}
	return n, err
}

func (b *limitedBody) Close() error { return b.c.Close() }

// Input is one call to analyse.
type Input struct {
	Session  *session.Session
	Settings channel.AgentAnalysis
}

// Output is the analysis of a call. Usage counts the model's response (the
// zero ModelUsage when none was asked for, also set with a Refusal error:
// the tokens were spent). Requested reports whether a request was sent.
type Output struct {
	Result    session.AnalysisResult
	Usage     session.ModelUsage
	Requested bool
}

// Analyze analyses the ended call of in.Session. A call with nothing said
// is analysed from its facts alone, without a request. The error is an
// *Error.
func (a *Analyzer) Analyze(ctx context.Context, in Input) (Output, error) {
	if in.Session == nil {
		return Output{}, &Error{Msg: "no session"}
	}
	f := factsOf(in.Session)
	if !spoken(in.Session) {
		return Output{Result: f.result()}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	req := a.request(in, f)
	resp, err := a.client.CreateChatCompletion(ctx, req)
	out := Output{Requested: true}
	if err != nil {
		return out, a.classify(ctx, err)
	}
	out.Usage = a.usage(resp)
	if len(resp.Choices) == 0 {
		return out, &Error{Retryable: true, Msg: "the response has no choice"}
	}
	ch := resp.Choices[0]
	switch {
	case ch.Message.Refusal != "":
		return out, &Error{Refusal: true, Msg: "the model refused: " + a.redact.Text(clip(ch.Message.Refusal, 300))}
	case ch.FinishReason == openai.FinishReasonContentFilter:
		return out, &Error{Refusal: true, Msg: "the answer was stopped by the content filter"}
	case ch.FinishReason == openai.FinishReasonLength:
		return out, &Error{Refusal: true, Msg: "the answer was cut at the token limit"}
	}
	res, err := parseResult(ch.Message.Content, in.Settings.Fields, f)
	if err != nil {
		return out, &Error{Refusal: true, Msg: "the answer does not follow the schema: " + err.Error()}
	}
	out.Result = res
	return out, nil
}

func (a *Analyzer) usage(resp openai.ChatCompletionResponse) session.ModelUsage {
	model := resp.Model
	if model == "" {
		model = a.model
	}
	u := session.ModelUsage{
		Model:            model,
		Use:              session.UseAnalysis,
		Responses:        1,
		InputTextTokens:  int64(resp.Usage.PromptTokens),
		OutputTextTokens: int64(resp.Usage.CompletionTokens),
	}
	if d := resp.Usage.PromptTokensDetails; d != nil {
		u.CachedTextTokens = int64(d.CachedTokens)
	}
	return u
}
