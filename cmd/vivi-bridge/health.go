package main

import (
	"net/http"
	"net/http/pprof"
	"sync/atomic"
)

// health answers /healthz (the process runs, with the detail of the store
// and the configuration, always 200) and /readyz (it should get new calls:
// not draining). A degraded store does not make the pod unready: calls are
// routed from the in-process config copy meanwhile, and one Redis blip must
// not take every pod out of the load balancer at once.
type health struct {
	draining atomic.Bool
	detail   func() string // lines after "ok"; nil: none
}

func (h *health) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
		if h.detail != nil {
			w.Write([]byte(h.detail()))
		}
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if h.draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
}

// pprofHandler serves net/http/pprof on its own listener (PPROF_ADDR), never
// on the public one.
func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
