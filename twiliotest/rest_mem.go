package twiliotest

import (
	"net/http"
	"net/http/httptest"
)

// NewMemREST returns the REST fake without a listener: requests reach it
// only through RoundTripper, in memory. A test of time-dependent code that
// calls Twilio can then run in a testing/synctest bubble, where a goroutine
// in real network I/O (a server's Accept, a client's read) never counts as
// durably blocked, so fake time would not advance. Create it inside the
// bubble that uses it (its channels belong to the bubble). URL returns a
// placeholder; Close only wakes WaitRequest.
func NewMemREST(opts RESTOptions) *REST { return newREST(opts) }

// RoundTripper returns a transport that serves every request with the fake
// in the calling goroutine, whatever its URL's host, as a server would
// (recorded, Basic auth checked). Use it as twilio-go's HTTP client
// transport.
func (r *REST) RoundTripper() http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		in := req.Clone(req.Context())
		if in.Body == nil {
			in.Body = http.NoBody // a server's request always has a body
		}
		in.RequestURI = req.URL.RequestURI()
		rec := httptest.NewRecorder()
		r.serve(rec, in)
		return rec.Result(), nil
	})
}

// roundTripFunc is an http.RoundTripper made of a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }
