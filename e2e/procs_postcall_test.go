package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vivi/bridge/analysis/chattest"
	"github.com/vivi/bridge/delivery"
	"github.com/vivi/bridge/internal/testwait"
	"github.com/vivi/bridge/session"
)

// Post-call work across real processes: the analysis is done once per call
// whichever pod does it, and call events reach their receiver exactly once
// per id, in order per call, whatever happens to the pod that queued them.

// postcallYAML is agentYAML with the channel's events sent to url.
func postcallYAML(url string) string {
	return strings.Replace(agentYAML, "    agentId: reception\n", "    agentId: reception\n    eventsUrl: "+url+"\n", 1)
}

// receiver is a channel's events endpoint: it answers the next `fail`
// requests with 503 (or every request while down), and keeps each accepted
// event in arrival order.
type receiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	fail     int
	down     bool
	attempts int
	accepted []received
}

type received struct {
	id, typ, callSID string
	seq              int64
	sigOK            bool
	body             map[string]any
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

// secret is read from the store by the test once the channel is applied.
var receiverSecret struct {
	mu sync.Mutex
	v  string
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts++
	if r.down || r.fail > 0 {
		if r.fail > 0 {
			r.fail--
		}
		http.Error(w, "try later", http.StatusServiceUnavailable)
		return
	}
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	id := req.Header.Get("webhook-id")
	receiverSecret.mu.Lock()
	sec := receiverSecret.v
	receiverSecret.mu.Unlock()
	ts := req.Header.Get("webhook-timestamp")
	var tsN int64
	_ = json.Unmarshal([]byte(ts), &tsN)
	want := delivery.SignStandard(sec, id, tsN, body)
	ok := sec != "" && slices.Contains(strings.Fields(req.Header.Get("webhook-signature")), want)
	typ, _ := m["type"].(string)
	sid, _ := m["callSid"].(string)
	seq := int64(0)
	if i := strings.LastIndexByte(id, '_'); i >= 0 {
		_ = json.Unmarshal([]byte(id[i+1:]), &seq)
	}
	r.accepted = append(r.accepted, received{id: id, typ: typ, callSID: sid, seq: seq, sigOK: ok, body: m})
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) set(fail int, down bool) {
	r.mu.Lock()
	r.fail, r.down = fail, down
	r.mu.Unlock()
}

func (r *receiver) snapshot() (attempts int, acc []received) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.attempts, slices.Clone(r.accepted)
}

// ofCall returns the accepted events of a call.
func ofCall(acc []received, sid string) []received {
	var out []received
	for _, e := range acc {
		if e.callSID == sid {
			out = append(out, e)
		}
	}
	return out
}

// wantOncePerIDInOrder fails unless every event of the call was accepted
// once per id, in the order of its sequence numbers, with both signatures.
func wantOncePerIDInOrder(t *testing.T, evs []received) {
	t.Helper()
	seen := map[string]bool{}
	for i, e := range evs {
		if seen[e.id] {
			t.Fatalf("event %s accepted twice", e.id)
		}
		seen[e.id] = true
		if !e.sigOK {
			t.Fatalf("event %s: webhook-signature does not verify", e.id)
		}
		if i > 0 && e.seq <= evs[i-1].seq {
			t.Fatalf("events out of order: %s after %s", e.id, evs[i-1].id)
		}
	}
}

// postcallWorld starts a world whose channel posts events to a receiver
// and whose pods analyse calls with the chat fake.
func postcallWorld(t *testing.T, chat *chattest.Server, rcv *receiver, env ...string) *world {
	env = append([]string{"OPENAI_BASE_URL=" + chat.URL, "EVENTS_ALLOW_PRIVATE=true"}, env...)
	w := newWorld(t, worldOptions{model: greeted(), yaml: postcallYAML(rcv.srv.URL + "/events"), env: env, timeout: 120 * time.Second})
	return w
}

// readSecret takes the channel's eventsSecret from the store (apply made it).
func (w *world) readSecret() {
	w.t.Helper()
	ch, err := w.store().Channel(w.ctx, "tls-pbx")
	if err != nil || ch.EventsSecret == "" {
		w.t.Fatalf("channel secret: %v", err)
	}
	receiverSecret.mu.Lock()
	receiverSecret.v = ch.EventsSecret
	receiverSecret.mu.Unlock()
}

// talkAndHangUp plays the greeting of a call and hangs up.
func (w *world) talkAndHangUp() string {
	w.t.Helper()
	call := w.place()
	stream, _ := w.streamAndModel(call, 1)
	if err := stream.WaitPlayedBytes(w.ctx, 1600); err != nil {
		w.t.Fatal(err)
	}
	w.waitSession(call.CallSID(), "agent turn recorded", func(s *session.Session) bool { return len(s.Transcript) > 0 })
	call.Hangup(w.ctx)
	return call.CallSID()
}

// Two pods take calls and their post-call work: each call is analysed
// exactly once (one model request per call), the result is on the session
// and in the admin API, and the receiver, failing its first two requests,
// gets every event of every call exactly once per id and in order, the
// analysis last as call.analyzed.
func TestProcsPostCallAcrossPods(t *testing.T) {
	chat := chattest.New()
	t.Cleanup(chat.Close)
	rcv := newReceiver(t)
	rcv.set(2, false)
	w := postcallWorld(t, chat, rcv)
	w.startPod("pod-a")
	w.startPod("pod-b")
	w.readSecret()

	var sids []string
	for range 3 {
		sids = append(sids, w.talkAndHangUp())
	}
	for _, sid := range sids {
		s := w.waitSession(sid, "analysed", func(s *session.Session) bool {
			return s.Analysis != nil && s.Analysis.State == session.AnalysisDone
		})
		if r := s.Analysis.Result; r == nil || !r.FromModel || r.Summary == "" || r.Outcome == "" {
			t.Fatalf("call %s analysis %+v", sid, s.Analysis)
		}
		if s.Usage == nil || len(s.Usage.Models) == 0 {
			t.Fatalf("call %s: no usage %+v", sid, s.Usage)
		}
		status, body := w.admin(http.MethodGet, "/v1/calls/"+sid)
		if status != http.StatusOK || !strings.Contains(string(body), `"analysis"`) || !strings.Contains(string(body), `"usage"`) {
			t.Fatalf("GET /v1/calls/%s: %d %s", sid, status, body)
		}
	}
	if n := len(chat.Requests()); n != len(sids) {
		t.Fatalf("%d analysis requests for %d calls", n, len(sids))
	}
	testwait.Until(t, 30*time.Second, "every call's call.analyzed event", func() bool {
		_, acc := rcv.snapshot()
		for _, sid := range sids {
			evs := ofCall(acc, sid)
			if len(evs) == 0 || evs[len(evs)-1].typ != "call.analyzed" {
				return false
			}
		}
		return true
	})
	attempts, acc := rcv.snapshot()
	for _, sid := range sids {
		evs := ofCall(acc, sid)
		wantOncePerIDInOrder(t, evs)
		var types []string
		for _, e := range evs {
			types = append(types, e.typ)
		}
		if !slices.Contains(types, "answered") || !slices.Contains(types, "ended") {
			t.Fatalf("call %s events %v", sid, types)
		}
		for _, e := range evs {
			if e.typ == "ended" && e.body["usage"] == nil {
				t.Fatalf("ended event without usage: %v", e.body)
			}
			if e.typ == "call.analyzed" && e.body["analysis"] == nil {
				t.Fatalf("call.analyzed without analysis: %v", e.body)
			}
		}
	}
	t.Logf("FIGURE %d calls: %d events accepted in %d attempts (2 refused)", len(sids), len(acc), attempts)
}

// A pod killed between claiming a call's analysis and storing the result
// leaves it to another pod, which finishes it once the claim runs out: one
// result, one call.analyzed on the timeline.
func TestProcsAnalysisPodKilledMidway(t *testing.T) {
	chat := chattest.New()
	t.Cleanup(chat.Close)
	release := chat.Hold()
	rcv := newReceiver(t)
	w := postcallWorld(t, chat, rcv, "ANALYSIS_TIMEOUT=2s")
	w.startPod("pod-a")
	w.readSecret()
	sid := w.talkAndHangUp()
	testwait.Until(t, 30*time.Second, "pod-a's analysis request", func() bool { return len(chat.Requests()) == 1 })
	s := w.session(sid)
	if s.Analysis == nil || s.Analysis.State != session.AnalysisRunning || s.Analysis.Pod != "pod-a" {
		t.Fatalf("analysis not claimed by pod-a: %+v", s.Analysis)
	}
	w.startPod("pod-b")
	w.pod("pod-a").signal(syscall.SIGKILL)
	if _, _, err := w.pod("pod-a").waitExit(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	release()
	start := time.Now()
	s = w.waitSession(sid, "analysed by pod-b", func(s *session.Session) bool {
		return s.Analysis != nil && s.Analysis.State == session.AnalysisDone
	})
	n := 0
	for _, ev := range s.Timeline {
		if ev.Type == session.EventAnalyzed {
			n++
		}
	}
	if n != 1 || s.Analysis.Attempts != 2 {
		t.Fatalf("%d analyzed events, %d attempts: %+v", n, s.Analysis.Attempts, s.Analysis)
	}
	t.Logf("FIGURE analysis finished by pod-b %v after pod-a was killed", time.Since(start).Round(100*time.Millisecond))
}

// A pod killed with deliveries pending (its receiver down) leaves them in
// Redis; another pod delivers them, exactly once each and in order, when
// the receiver is back.
func TestProcsEventsDeliveredAfterPodKilled(t *testing.T) {
	chat := chattest.New()
	t.Cleanup(chat.Close)
	rcv := newReceiver(t)
	rcv.set(0, true)
	w := postcallWorld(t, chat, rcv)
	w.startPod("pod-a")
	w.readSecret()
	sid := w.talkAndHangUp()
	testwait.Until(t, 30*time.Second, "pod-a tried the receiver", func() bool { a, _ := rcv.snapshot(); return a > 0 })
	w.waitSession(sid, "ended", func(s *session.Session) bool { return s.State.Terminal() })
	w.startPod("pod-b")
	w.pod("pod-a").signal(syscall.SIGKILL)
	if _, _, err := w.pod("pod-a").waitExit(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	rcv.set(0, false)
	start := time.Now()
	testwait.Until(t, 60*time.Second, "pod-b delivers the call's events up to call.analyzed", func() bool {
		_, acc := rcv.snapshot()
		evs := ofCall(acc, sid)
		return len(evs) > 0 && evs[len(evs)-1].typ == "call.analyzed"
	})
	_, acc := rcv.snapshot()
	evs := ofCall(acc, sid)
	wantOncePerIDInOrder(t, evs)
	if evs[0].typ != "answered" {
		t.Fatalf("first event delivered %s, want answered", evs[0].typ)
	}
	t.Logf("FIGURE %d events delivered by pod-b %v after pod-a was killed", len(evs), time.Since(start).Round(100*time.Millisecond))
}

// A receiver down for longer than the retry horizon: the event is parked,
// listed by GET /v1/events/parked, and the call's deliveries say so.
func TestProcsEventsParkedAfterHorizon(t *testing.T) {
	chat := chattest.New()
	t.Cleanup(chat.Close)
	rcv := newReceiver(t)
	rcv.set(0, true)
	w := postcallWorld(t, chat, rcv, "EVENTS_RETRY_HORIZON=3s", "OPENAI_SUMMARY_MODEL=off")
	w.startPod("pod-a")
	w.readSecret()
	sid := w.talkAndHangUp()
	var parked []map[string]any
	testwait.Until(t, 60*time.Second, "the call's events parked", func() bool {
		status, body := w.admin(http.MethodGet, "/v1/events/parked?limit=100")
		if status != http.StatusOK {
			return false
		}
		var out struct {
			Parked []map[string]any `json:"parked"`
		}
		if json.Unmarshal(body, &out) != nil {
			return false
		}
		parked = parked[:0]
		for _, p := range out.Parked {
			if p["callSid"] == sid {
				parked = append(parked, p)
			}
		}
		return slices.ContainsFunc(parked, func(p map[string]any) bool { return p["type"] == "ended" })
	})
	status, body := w.admin(http.MethodGet, "/v1/calls/"+sid)
	if status != http.StatusOK || !strings.Contains(string(body), `"state":"parked"`) {
		t.Fatalf("GET /v1/calls/%s deliveries: %d %s", sid, status, body)
	}
	if _, acc := rcv.snapshot(); len(acc) != 0 {
		t.Fatalf("a down receiver accepted %d events", len(acc))
	}
}
