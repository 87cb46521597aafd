package twiliotest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// maxTwiml is the longest Twiml parameter Twilio accepts (error 32018).
const maxTwiml = 4000

// maxRESTBody bounds the request bodies the fake reads.
const maxRESTBody = 1 << 20

// ErrRESTClosed is returned by REST.WaitRequest after Close.
var ErrRESTClosed = errors.New("twiliotest: REST fake closed")

// RESTOptions configures the REST API fake.
type RESTOptions struct {
	// AccountSID and AuthToken are the only credentials accepted (Basic auth).
	// twilio-go refuses non-alphanumeric credentials before sending anything,
	// so use values like "ACtest" and "token123".
	AccountSID, AuthToken string
	// Logger defaults to zap.NewNop().
	Logger *zap.Logger
}

// RESTRequest is one request the fake received.
type RESTRequest struct {
	Method, Path string
	// Query is the URL query.
	Query url.Values
	// Form is the form-encoded body, nil when the body is not a form.
	Form url.Values
	// Body is the raw body.
	Body   []byte
	Header http.Header
	// BasicUser is the Basic auth user name, empty without Basic auth.
	BasicUser string
	// Status is the HTTP status the fake answered.
	Status int
	// At is when the request arrived.
	At time.Time
}

// REST is a fake of the Twilio REST API listening on 127.0.0.1, recording
// every request. It serves POST (update) and GET (fetch) of
// /2010-04-01/Accounts/{AccountSid}/Calls/{Sid}.json, checks Basic auth on
// every request (401, code 20003) and answers unknown paths 404 (code 20404),
// all with Twilio's JSON error shape.
type REST struct {
	opts   RESTOptions
	log    *zap.Logger
	ln     net.Listener
	srv    *http.Server
	mux    *http.ServeMux
	served chan struct{}
	once   sync.Once

	mu           sync.Mutex
	requests     []RESTRequest
	changed      chan struct{} // closed and replaced on every request
	closed       bool
	onCallUpdate func(callSID string, form url.Values) (int, string)
	updater      callUpdater       // set by Twilio: plays updates of its calls
	calls        map[string]string // call SID -> status
}

// callUpdater applies a call update to a call the simulator placed (see
// Twilio). known is false for a call it did not place; a non-nil refusal is
// answered instead of the call resource; status is the call's status after
// the update.
type callUpdater func(callSID string, form url.Values) (status string, refusal *apiError, known bool)

// apiError is one of Twilio's REST errors.
type apiError struct {
	status, code int
	message      string
}

// NewREST starts the fake on 127.0.0.1 on a free port. Like
// httptest.NewServer it panics if it cannot listen. Close it when done.
func NewREST(opts RESTOptions) *REST {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("twiliotest: REST fake: listen: %v", err))
	}
	r := newREST(opts)
	r.ln = ln
	r.srv = &http.Server{
		Handler:           http.HandlerFunc(r.serve),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          zap.NewStdLog(r.log),
	}
	go func() {
		defer close(r.served)
		_ = r.srv.Serve(ln) // returns http.ErrServerClosed after Close
	}()
	return r
}

// newREST returns the fake with its routes and no listener.
func newREST(opts RESTOptions) *REST {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	r := &REST{
		opts:    opts,
		log:     opts.Logger,
		mux:     http.NewServeMux(),
		served:  make(chan struct{}),
		changed: make(chan struct{}),
		calls:   map[string]string{},
	}
	r.mux.HandleFunc("/2010-04-01/Accounts/{AccountSid}/Calls/{file}", r.handleCall)
	r.mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) { notFound(w, req) })
	return r
}

// URL returns the base URL of the fake, e.g. http://127.0.0.1:41234, or
// http://twilio.invalid for NewMemREST (nothing listens).
func (r *REST) URL() string {
	if r.ln == nil {
		return "http://twilio.invalid"
	}
	return "http://" + r.ln.Addr().String()
}

// Close stops the fake and closes every connection. It is idempotent.
func (r *REST) Close() {
	r.once.Do(func() {
		if r.srv != nil { // nil for NewMemREST
			_ = r.srv.Close()
			<-r.served
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		r.closed = true
		r.notifyLocked()
	})
}

// Requests returns every request received so far, in order.
func (r *REST) Requests() []RESTRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.requests)
}

// WaitRequest returns the first request received (since the start, not only
// from now on) for which pred is true, waiting for it until ctx ends or the
// fake is closed (ErrRESTClosed). pred runs without locks held.
func (r *REST) WaitRequest(ctx context.Context, pred func(RESTRequest) bool) (RESTRequest, error) {
	next := 0
	for {
		r.mu.Lock()
		reqs, changed, closed := r.requests[next:], r.changed, r.closed
		r.mu.Unlock()
		for _, req := range reqs {
			if pred(req) {
				return req, nil
			}
		}
		next += len(reqs)
		if closed {
			return RESTRequest{}, ErrRESTClosed
		}
		select {
		case <-ctx.Done():
			return RESTRequest{}, ctx.Err()
		case <-changed:
		}
	}
}

// OnCallUpdate replaces the answer to call updates (POST .../Calls/{Sid}.json)
// with fn's status and JSON body. nil restores the default: 200
// {"sid":...,"status":"in-progress"}, or "completed" when Status=completed.
// For a call placed through a Twilio simulator, a 2xx answer from fn means
// the update took effect (the simulator plays it); any other status means it
// did not.
func (r *REST) OnCallUpdate(fn func(callSID string, form url.Values) (status int, body string)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onCallUpdate = fn
}

// SetHandler adds a route (a net/http.ServeMux pattern) behind the same
// Basic auth check and recording as the built-in routes. It panics if the
// pattern conflicts with a registered one, like ServeMux.
func (r *REST) SetHandler(pattern string, h http.HandlerFunc) { r.mux.HandleFunc(pattern, h) }

// serve records the request, checks Basic auth and dispatches.
func (r *REST) serve(w http.ResponseWriter, req *http.Request) {
	rec := RESTRequest{
		Method: req.Method, Path: req.URL.Path, Query: req.URL.Query(),
		Header: req.Header.Clone(), At: time.Now(),
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxRESTBody))
	if err != nil {
		writeError(w, http.StatusBadRequest, 20001, "Unable to read the request body")
		return
	}
	rec.Body = body
	req.Body = io.NopCloser(bytes.NewReader(body)) // handlers may parse it again
	if mt, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type")); mt == "application/x-www-form-urlencoded" {
		rec.Form, _ = url.ParseQuery(string(body))
	}
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	user, pass, ok := req.BasicAuth()
	rec.BasicUser = user
	if !ok || user != r.opts.AccountSID || pass != r.opts.AuthToken {
		sw.Header().Set("WWW-Authenticate", `Basic realm="Twilio API"`)
		writeError(sw, http.StatusUnauthorized, 20003, "Authenticate")
	} else {
		r.mux.ServeHTTP(sw, req)
	}
	rec.Status = sw.status
	r.log.Debug("twiliotest: REST request",
		zap.String("method", rec.Method), zap.String("path", rec.Path), zap.Int("status", rec.Status))
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = append(r.requests, rec)
	r.notifyLocked()
}

// handleCall serves /2010-04-01/Accounts/{AccountSid}/Calls/{Sid}.json.
func (r *REST) handleCall(w http.ResponseWriter, req *http.Request) {
	sid, ok := strings.CutSuffix(req.PathValue("file"), ".json")
	if !ok || sid == "" || req.PathValue("AccountSid") != r.opts.AccountSID {
		notFound(w, req)
		return
	}
	switch req.Method {
	case http.MethodGet:
		r.mu.Lock()
		status := r.calls[sid]
		r.mu.Unlock()
		if status == "" {
			status = "in-progress"
		}
		r.writeCall(w, sid, status)
	case http.MethodPost:
		if err := req.ParseForm(); err != nil {
			writeError(w, http.StatusBadRequest, 20001, "Invalid form body")
			return
		}
		form := req.PostForm
		if len(form.Get("Twiml")) > maxTwiml {
			writeError(w, http.StatusBadRequest, 32018, "Twiml size exceeded maximum allowed value of 4000 characters")
			return
		}
		r.mu.Lock()
		hook, updater := r.onCallUpdate, r.updater
		r.mu.Unlock()
		if hook != nil {
			status, body := hook(sid, form)
			if status/100 == 2 && updater != nil {
				updater(sid, form) // the update took effect; the answer is fn's
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = io.WriteString(w, body)
			return
		}
		status := "in-progress"
		if form.Get("Status") == "completed" {
			status = "completed"
		}
		if updater != nil {
			st, refusal, known := updater(sid, form)
			if refusal != nil {
				writeError(w, refusal.status, refusal.code, refusal.message)
				return
			}
			if known {
				status = st
			}
		}
		r.setCallStatus(sid, status)
		r.writeCall(w, sid, status)
	default:
		writeError(w, http.StatusMethodNotAllowed, 20004, "Method not allowed")
	}
}

// setUpdater installs the simulator's call-update player (nil removes it).
func (r *REST) setUpdater(u callUpdater) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.updater = u
}

// setCallStatus sets the status GET reports for a call. A completed call
// stays completed: an update's answer may be recorded after the call it
// ended is already over.
func (r *REST) setCallStatus(sid, status string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.calls[sid] == "completed" {
		return
	}
	r.calls[sid] = status
}

// writeCall answers with a call resource.
func (r *REST) writeCall(w http.ResponseWriter, sid, status string) {
	writeJSON(w, http.StatusOK, map[string]string{
		"sid":         sid,
		"account_sid": r.opts.AccountSID,
		"status":      status,
		"api_version": "2010-04-01",
		"uri":         "/2010-04-01/Accounts/" + r.opts.AccountSID + "/Calls/" + sid + ".json",
	})
}

func (r *REST) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// notFound answers Twilio's 404 (code 20404).
func notFound(w http.ResponseWriter, req *http.Request) {
	writeError(w, http.StatusNotFound, 20404, "The requested resource "+req.URL.Path+" was not found")
}

// writeError writes Twilio's JSON error shape, which twilio-go decodes into
// *client.TwilioRestError.
func writeError(w http.ResponseWriter, status, code int, message string) {
	writeJSON(w, status, map[string]any{
		"code":      code,
		"message":   message,
		"more_info": fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code),
		"status":    status,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// statusWriter remembers the status code written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}
