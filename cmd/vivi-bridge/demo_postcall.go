package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"

	"github.com/vivi/bridge/session"
)

// demoReceiver is the demo channel's events endpoint: it keeps what it
// receives and tells waitFor when an event of a type arrived.
type demoReceiver struct {
	*httptest.Server
	mu     sync.Mutex
	events []demoEvent
	change chan struct{} // closed and replaced on every event
}

type demoEvent struct{ id, typ, callSID, detail string }

func newDemoReceiver() *demoReceiver {
	r := &demoReceiver{change: make(chan struct{})}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		var ev struct {
			Type, CallSID, Detail string
		}
		_ = json.Unmarshal(body, &ev)
		r.mu.Lock()
		r.events = append(r.events, demoEvent{req.Header.Get("webhook-id"), ev.Type, ev.CallSID, ev.Detail})
		close(r.change)
		r.change = make(chan struct{})
		r.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	return r
}

func (r *demoReceiver) received() []demoEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]demoEvent(nil), r.events...)
}

// waitFor returns once the call's event typ arrived, or ctx ends.
func (r *demoReceiver) waitFor(ctx context.Context, callSID, typ string) error {
	for {
		r.mu.Lock()
		ch := r.change
		for _, e := range r.events {
			if e.callSID == callSID && e.typ == typ {
				r.mu.Unlock()
				return nil
			}
		}
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// printPostCall prints the call's analysis, usage and the events its
// channel received.
func printPostCall(w io.Writer, s *session.Session, events []demoEvent) {
	if a := s.Analysis; a != nil && a.Result != nil {
		r := a.Result
		fmt.Fprintf(w, "\nanalysis (%s, %s): outcome %s", a.Model, a.State, r.Outcome)
		if r.Destination != "" {
			fmt.Fprintf(w, " (%s)", r.Destination)
		}
		fmt.Fprintf(w, ", language %q\n  summary: %s\n  intent: %s\n", r.Language, r.Summary, r.Intent)
		for _, f := range r.FollowUps {
			fmt.Fprintf(w, "  follow-up: %s\n", f)
		}
	} else if a != nil {
		fmt.Fprintf(w, "\nanalysis: %s %s\n", a.State, a.Error)
	}
	if u := s.Usage; u != nil {
		fmt.Fprintf(w, "\nusage (estimated cost $%.6f):\n", u.CostUSD)
		for _, m := range u.Models {
			fmt.Fprintf(w, "  %-9s %-14s %3d responses  in %d text + %d audio (%d + %d cached)  out %d text + %d audio  $%.6f\n",
				m.Use, m.Model, m.Responses, m.InputTextTokens, m.InputAudioTokens, m.CachedTextTokens, m.CachedAudioTokens,
				m.OutputTextTokens, m.OutputAudioTokens, m.CostUSD)
		}
	}
	var types []string
	for _, e := range events {
		types = append(types, e.typ)
	}
	fmt.Fprintf(w, "\nevents delivered to the channel's eventsUrl (%d, in order): %s\n", len(events), strings.Join(types, " "))
}
