package e2e

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// kind is what a request to the front is, for routing.
type kind string

const (
	kindWebhook  kind = "webhook"  // POST /twilio/voice
	kindStream   kind = "stream"   // GET /twilio/stream (websocket)
	kindCallback kind = "callback" // the other /twilio/... callbacks
	kindAdmin    kind = "admin"    // /v1/...
	kindOther    kind = "other"
)

func kindOf(r *http.Request) kind {
	p := r.URL.Path
	switch {
	case p == "/twilio/voice":
		return kindWebhook
	case isStreamPath(p):
		return kindStream
	case strings.HasPrefix(p, "/twilio/"):
		return kindCallback
	case strings.HasPrefix(p, "/v1/"):
		return kindAdmin
	}
	return kindOther
}

// served is one request the front forwarded.
type served struct {
	kind   kind
	pod    string // "" when no pod was ready
	path   string
	status int
	at     time.Time
}

// front is the load balancer in front of the pods: one reverse proxy
// (websockets included) whose preferred pod per request kind can be
// switched, and which skips pods whose /readyz does not answer 200 (each
// request probes its candidates: no propagation delay unless a test holds
// requests with hold).
type front struct {
	srv    *httptest.Server
	tr     *http.Transport
	probe  *http.Client
	mu     sync.Mutex
	order  []string          // pods in start order
	urls   map[string]string // pod -> base URL
	prefer map[kind]string
	log    []served
	// holds: requests of a kind wait, after the pod is picked, until the
	// channel is closed (a load balancer that chose before the pod drained).
	holds map[kind]chan struct{}
	held  map[kind]int
	// stale kinds go to their preferred pod without a readiness probe (a
	// load balancer that has not noticed yet).
	stale map[kind]bool
}

func newFront(t *testing.T) *front {
	f := &front{
		tr:     &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 10 * time.Second},
		urls:   map[string]string{},
		prefer: map[kind]string{},
		holds:  map[kind]chan struct{}{},
		held:   map[kind]int{},
		stale:  map[kind]bool{},
	}
	f.probe = &http.Client{Transport: f.tr, Timeout: 500 * time.Millisecond}
	f.srv = httptest.NewServer(f)
	t.Cleanup(func() {
		f.mu.Lock()
		for k, ch := range f.holds {
			close(ch)
			delete(f.holds, k)
		}
		f.mu.Unlock()
		f.srv.CloseClientConnections()
		f.srv.Close()
		f.tr.CloseIdleConnections()
	})
	return f
}

func (f *front) URL() string { return f.srv.URL }

func (f *front) add(pod, base string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.urls[pod]; !ok {
		f.order = append(f.order, pod)
	}
	f.urls[pod] = base
}

// route makes pod the preferred target of the kinds (all kinds when none
// are given).
func (f *front) route(pod string, kinds ...kind) {
	if len(kinds) == 0 {
		kinds = []kind{kindWebhook, kindStream, kindCallback, kindAdmin, kindOther}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range kinds {
		f.prefer[k] = pod
	}
}

// hold makes the next requests of kind wait after their pod is chosen; the
// returned func releases them.
func (f *front) hold(k kind) (release func()) {
	ch := make(chan struct{})
	f.mu.Lock()
	f.holds[k] = ch
	f.mu.Unlock()
	return sync.OnceFunc(func() {
		f.mu.Lock()
		if f.holds[k] == ch {
			delete(f.holds, k)
		}
		f.mu.Unlock()
		close(ch)
	})
}

// heldCount is how many requests of kind are waiting in hold.
func (f *front) heldCount(k kind) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.held[k]
}

// setStale makes requests of kind k go to their preferred pod whether or
// not it is ready (on), or back to probing (off).
func (f *front) setStale(k kind, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stale[k] = on
}

// pick chooses the preferred pod of k when it is ready, else the first
// ready pod in start order.
func (f *front) pick(k kind) (string, string) {
	f.mu.Lock()
	if p := f.prefer[k]; f.stale[k] && f.urls[p] != "" {
		u := f.urls[p]
		f.mu.Unlock()
		return p, u
	}
	cands := make([]string, 0, len(f.order)+1)
	if p := f.prefer[k]; p != "" {
		cands = append(cands, p)
	}
	cands = append(cands, f.order...)
	urls := make(map[string]string, len(f.urls))
	for p, u := range f.urls {
		urls[p] = u
	}
	f.mu.Unlock()
	for _, p := range cands {
		u, ok := urls[p]
		if !ok {
			continue
		}
		resp, err := f.probe.Get(u + "/readyz")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return p, u
		}
	}
	return "", ""
}

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k := kindOf(r)
	pod, base := f.pick(k)
	// Recorded before forwarding: a stream lasts as long as its call.
	i := f.record(served{kind: k, pod: pod, path: r.URL.Path, at: time.Now()})
	if pod == "" {
		f.setStatus(i, http.StatusServiceUnavailable)
		http.Error(w, errNoPod.Error(), http.StatusServiceUnavailable)
		return
	}
	f.mu.Lock()
	ch := f.holds[k]
	if ch != nil {
		f.held[k]++
	}
	f.mu.Unlock()
	if ch != nil {
		<-ch
		f.mu.Lock()
		f.held[k]--
		f.mu.Unlock()
	}
	target, _ := url.Parse(base)
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport: f.tr,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	rp.ServeHTTP(sw, r)
	f.setStatus(i, sw.status)
}

func (f *front) record(s served) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, s)
	return len(f.log) - 1
}

func (f *front) setStatus(i, status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log[i].status = status
}

// servedBy lists the pods chosen for requests of kind k, in order ("" when
// no pod was ready).
func (f *front) servedBy(k kind) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, s := range f.log {
		if s.kind == k {
			out = append(out, s.pod)
		}
	}
	return out
}

// statusWriter remembers the status; it passes Hijack and Flush through
// (ReverseProxy needs Hijack for websocket upgrades).
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
