package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap/zapcore"

	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiliotest"
)

// waitRefused waits for c to be closed by the bridge with 1008.
func waitRefused(t *testing.T, c *twiliotest.Call) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(waitLimit):
		t.Fatal("the refused stream was not closed")
	}
	var ce *websocket.CloseError
	if !c.ClosedByServer() || !errors.As(c.Err(), &ce) || ce.Code != websocket.ClosePolicyViolation {
		t.Fatalf("stream ended with %v (by server %v), want a 1008 close from the bridge", c.Err(), c.ClosedByServer())
	}
}

// issue mints another stream token for callSID, as a replayed webhook or
// callback would.
func (h *harness) issue(callSID string) string {
	h.t.Helper()
	tok, _, err := h.tokens.Issue(callSID, testChannel, testAgent().ID, time.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

func TestSecondStreamOfLiveCallRefused(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	sid, tok := h.newSession(nil)
	first := h.dial(sid, tok)
	mc := h.nextConn()
	waitEvent(t, mc, "input_audio_buffer.append", 1)

	second := h.dial(sid, h.issue(sid)) // a fresh, unused token of the same call
	waitRefused(t, second)
	h.waitLog(zapcore.WarnLevel, "media stream refused: another stream of the call is live")
	keepsRelaying(t, mc)
	if s := h.sessions.get(sid); s.State != session.Streaming || s.StreamSID != first.StreamSID() {
		t.Fatalf("the refused stream changed the session: %s %s", s.State, s.StreamSID)
	}
	if n := len(h.model.Conns()); n != 1 {
		t.Fatalf("model sessions opened: %d, want 1", n)
	}
	if v := h.counter("vivi_bridge_streams_rejected_total", "reason", rejectStreamLive); v != 1 {
		t.Fatalf("streams_rejected_total{stream_live} = %v", v)
	}
}

// otherPod starts a second Server ("pod-b") sharing the harness's store,
// tokens and model, and returns its stream URL.
func (h *harness) otherPod() string {
	h.t.Helper()
	cfg := h.srv.cfg
	cfg.PodID = "pod-b"
	deps := h.srv.deps
	deps.Registerer = nil
	srv, err := NewServer(cfg, deps)
	if err != nil {
		h.t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv.Register(mux)
	hs := httptest.NewServer(mux)
	h.t.Cleanup(hs.Close)
	h.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return "ws" + strings.TrimPrefix(hs.URL, "http") + StreamPath
}

// Two tokens of one call used at once, on two pods: exactly one stream gets
// an agent, whichever the store's check-and-set lets through first.
func TestTwoStreamsAtOnceOneWins(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	sid, tok := h.newSession(nil)
	toks := []string{tok, h.issue(sid)}
	urls := []string{h.url, h.otherPod()}
	calls := make([]*twiliotest.Call, 2)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			c, err := twiliotest.Dial(ctx, twiliotest.CallConfig{
				URL: urls[i], SignURL: testSignURL, AuthToken: testAuthToken, AccountSID: testAccount,
				CallSID: sid, Parameters: map[string]string{"token": toks[i]},
			})
			if err != nil {
				t.Error(err)
				return
			}
			calls[i] = c
		})
	}
	wg.Wait()
	for _, c := range calls {
		if c == nil {
			t.FailNow()
		}
		t.Cleanup(func() { c.Close(); <-c.Done() })
	}
	waitFor(t, "one stream refused", func() bool {
		return h.logs.FilterMessage("media stream refused: another stream of the call is live").Len() == 1
	})
	mc := h.nextConn()
	keepsRelaying(t, mc)
	s := h.sessions.get(sid)
	var winner, loser *twiliotest.Call
	for i, c := range calls {
		if c.StreamSID() == s.StreamSID {
			winner, loser = c, calls[1-i]
		}
	}
	if winner == nil {
		t.Fatalf("session names stream %q, neither of the two", s.StreamSID)
	}
	waitRefused(t, loser)
	select {
	case <-winner.Done():
		t.Fatal("the winning stream was closed")
	default:
	}
	if n := len(h.model.Conns()); n != 1 {
		t.Fatalf("model sessions opened: %d, want 1", n)
	}
}

// A stream live on another pod (the record says so) refuses this one.
func TestStreamLiveOnOtherPodRefused(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	sid, tok := h.newSession(func(s *session.Session) {
		_ = s.Transition(session.Streaming, time.Now())
		s.PodID, s.StreamSID = "pod-b", "MZlive"
	})
	c := h.dial(sid, tok)
	waitRefused(t, c)
	if s := h.sessions.get(sid); s.StreamSID != "MZlive" || s.PodID != "pod-b" || s.State != session.Streaming {
		t.Fatalf("session changed: %s %s %s", s.State, s.PodID, s.StreamSID)
	}
	if n := len(h.model.Conns()); n != 0 {
		t.Fatalf("model sessions opened: %d, want 0", n)
	}
}

// The legitimate second streams still start: after a connect-ended
// reconnect (the callback cleared the stream) and after a failed transfer.
func TestResumeStreamsAccepted(t *testing.T) {
	for name, mod := range map[string]func(*session.Session){
		"reconnect": func(s *session.Session) {
			_ = s.Transition(session.Streaming, time.Now())
			s.PodID, s.StreamSID = "pod-b", "" // connect-ended cleared MZold
			s.Record(time.Now(), "reconnect", "MZold")
		},
		"failed transfer": func(s *session.Session) {
			_ = s.Transition(session.Streaming, time.Now())
			_ = s.Transition(session.Transferring, time.Now())
			s.PodID, s.StreamSID = "pod-b", "MZold"
			s.AddTransfer(session.Transfer{Destination: "Front Desk", Status: "busy"})
		},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{})
			sid, tok := h.newSession(mod)
			c := h.dial(sid, tok)
			mc := h.nextConn()
			keepsRelaying(t, mc)
			s := h.sessions.get(sid)
			if s.State != session.Streaming || s.StreamSID != c.StreamSID() || s.PodID != "pod-a" {
				t.Fatalf("session after resume: %s %s %s", s.State, s.PodID, s.StreamSID)
			}
		})
	}
}

func TestTokenAgentNoLongerAnswers(t *testing.T) {
	for _, tc := range []struct {
		err    error
		reason string
	}{
		{fmt.Errorf("agent ag1: %w", ErrAgentNotRealtime), ReasonAgentNotRealtime},
		{fmt.Errorf("agent ag1: %w", ErrAgentNotFound), ReasonAgentNotFound},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			h := newHarness(t, harnessOpts{agents: agentsFunc(func(context.Context, string, string) (Agent, error) {
				return Agent{}, tc.err
			})})
			sid, tok := h.newSession(nil)
			c := h.dial(sid, tok)
			waitRefused(t, c)
			s := h.waitEnded(sid)
			if s.EndReason != tc.reason {
				t.Fatalf("end reason %q, want %q", s.EndReason, tc.reason)
			}
			if v := h.counter("vivi_bridge_streams_rejected_total", "reason", tc.reason); v != 1 {
				t.Fatalf("streams_rejected_total{%s} = %v", tc.reason, v)
			}
			if n := len(h.model.Conns()); n != 0 {
				t.Fatalf("model sessions opened: %d, want 0", n)
			}
		})
	}
}

// A look-up that fails for another reason (a store blip) refuses the stream
// but leaves the session to a reconnect.
func TestAgentLookupErrorKeepsSession(t *testing.T) {
	h := newHarness(t, harnessOpts{agents: agentsFunc(func(context.Context, string, string) (Agent, error) {
		return Agent{}, errors.New("redis: connection refused")
	})})
	sid, tok := h.newSession(nil)
	waitRefused(t, h.dial(sid, tok))
	if s := h.sessions.get(sid); s.State != session.Ringing {
		t.Fatalf("session went %s", s.State)
	}
}
