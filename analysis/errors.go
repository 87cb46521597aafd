package analysis

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	openai "github.com/sashabaranov/go-openai"
)

// Error is a failed analysis. Status is the HTTP status of the API's
// answer (0 when none came). Retryable errors (the network, a timeout, 408,
// 409, 429, 5xx) may succeed later; others will not. Refusal is an answer
// the model gave but that cannot be used (refused, filtered, cut, not the
// schema's JSON). Msg never holds the API key or the transcript.
type Error struct {
	Status    int
	Retryable bool
	Refusal   bool
	Msg       string
}

func (e *Error) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("analysis: status %d: %s", e.Status, e.Msg)
	}
	return "analysis: " + e.Msg
}

// classify turns an error of the chat completion into an *Error.
func (a *Analyzer) classify(ctx context.Context, err error) *Error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		if errors.Is(ctxErr, context.DeadlineExceeded) {
			return &Error{Retryable: true, Msg: fmt.Sprintf("no answer within %s", a.timeout)}
		}
		return &Error{Retryable: true, Msg: "canceled"}
	}
	var apiErr *openai.APIError
	var reqErr *openai.RequestError
	switch {
	case errors.As(err, &apiErr):
		e := &Error{Status: apiErr.HTTPStatusCode, Retryable: retryableStatus(apiErr.HTTPStatusCode)}
		e.Msg = "the API refused the request"
		if apiErr.Type != "" {
			e.Msg += " (" + clip(apiErr.Type, 64) + ")"
		}
		// An authentication error's message quotes part of the key.
		if s := apiErr.HTTPStatusCode; s != http.StatusUnauthorized && s != http.StatusForbidden && apiErr.Message != "" {
			e.Msg += ": " + a.redact.Text(clip(apiErr.Message, 300))
		}
		return e
	case errors.As(err, &reqErr):
		// No body: it is not an API error document and may be anything.
		return &Error{Status: reqErr.HTTPStatusCode, Retryable: retryableStatus(reqErr.HTTPStatusCode),
			Msg: "the API answered " + http.StatusText(reqErr.HTTPStatusCode)}
	case errors.Is(err, openai.ErrChatCompletionInvalidModel), errors.Is(err, openai.ErrReasoningModelMaxTokensDeprecated):
		return &Error{Msg: a.redact.Error(err)}
	}
	// The network, or a body that could not be read or decoded.
	return &Error{Retryable: true, Msg: a.redact.Error(err)}
}

func retryableStatus(status int) bool {
	switch {
	case status == http.StatusRequestTimeout, status == http.StatusConflict, status == http.StatusTooManyRequests:
		return true
	case status >= 500:
		return true
	}
	return false
}
