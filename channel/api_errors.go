package channel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"go.uber.org/zap"
)

// requestError is a request the API cannot read: bad JSON, unknown fields,
// an oversize body.
type requestError struct {
	status  int
	code    string
	message string
}

func (e *requestError) Error() string { return e.code + ": " + e.message }

func badRequest(code, format string, args ...any) *requestError {
	return &requestError{status: http.StatusBadRequest, code: code, message: fmt.Sprintf(format, args...)}
}

// decodeBody reads one JSON value of at most MaxRequestBody bytes into v,
// refusing unknown fields and trailing data.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return jsonError(err)
		}
		return badRequest("invalid_json", "the body must hold exactly one JSON value")
	}
	return nil
}

func jsonError(err error) error {
	var (
		tooLarge *http.MaxBytesError
		syntax   *json.SyntaxError
		typ      *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &tooLarge):
		return &requestError{status: http.StatusRequestEntityTooLarge, code: "body_too_large",
			message: fmt.Sprintf("the body is larger than %d bytes", MaxRequestBody)}
	case errors.Is(err, io.EOF):
		return badRequest("invalid_json", "the body is empty; a JSON object is required")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return badRequest("unknown_field", "%s", strings.TrimPrefix(err.Error(), "json: "))
	case errors.As(err, &syntax):
		return badRequest("invalid_json", "malformed JSON at byte %d: %v", syntax.Offset, err)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return badRequest("invalid_json", "field %s: a JSON %s is not a %s", typ.Field, typ.Value, typ.Type)
		}
		return badRequest("invalid_json", "a JSON %s is not a %s", typ.Value, typ.Type)
	default:
		return badRequest("invalid_json", "malformed JSON: %v", err)
	}
}

// fail answers err as a JSON error: 400/413 for unreadable requests, 404,
// 409, 422 for validation, 500 (logged) for anything else.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	var (
		req   *requestError
		val   *ValidationError
		nf    *NotFoundError
		inUse interface{ InUseChannels() []string }
	)
	switch {
	case errors.As(err, &req):
		WriteError(w, req.status, req.code, req.message)
	case errors.As(err, &val):
		msg := val.Message
		if val.Field != "" {
			msg = val.Field + ": " + msg
		}
		writeJSON(w, http.StatusUnprocessableEntity, errorBody{Error: errorDetail{Code: val.Code, Message: msg, Field: val.Field}})
	case errors.As(err, &nf):
		WriteError(w, http.StatusNotFound, "not_found", nf.Error())
	case errors.Is(err, ErrNotFound):
		WriteError(w, http.StatusNotFound, "not_found", "not found")
	case errors.As(err, &inUse):
		WriteError(w, http.StatusConflict, "agent_in_use",
			"the agent is used by channels "+strings.Join(inUse.InUseChannels(), ", ")+"; move or delete them first")
	case errors.Is(err, ErrConflict):
		WriteError(w, http.StatusConflict, CodeChannelConflict, conflictMessage(err))
	case errors.Is(err, ErrExists):
		WriteError(w, http.StatusConflict, "already_exists", err.Error())
	case errors.Is(err, ErrStale):
		WriteError(w, http.StatusConflict, "conflict", "changed by another request meanwhile; nothing was written: read it again and retry")
	case errors.Is(err, ErrPreconditionFailed):
		WriteError(w, http.StatusPreconditionFailed, "precondition_failed", "If-Match does not name the current version; nothing was written")
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
	default:
		a.log.Error("admin api", zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Error(err))
		WriteError(w, http.StatusInternalServerError, "internal_error", "internal error; see the server log")
	}
}
