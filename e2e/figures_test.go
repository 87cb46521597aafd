package e2e

import (
	"flag"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiliotest"
)

// The figures of issue 10's closing note, measured on Twilio's clock (the
// simulator's receive and mark-echo times).

// handoverGap is what the caller hears when a call moves from one stream to
// the next: from the last mark Twilio echoed on the old stream (the end of
// the agent audio it had played) to the first frame on the new one, the
// caller's (the stream opened: caller audio flows again) or the agent's
// (the first media Twilio received on it).
type handoverGap struct {
	lastMark    time.Time     // last mark echoed on the old stream; zero when none
	oldEnded    time.Time     // when the old stream's last message arrived (fallback when no mark)
	callerFrame time.Duration // new stream opened - lastMark
	agentFrame  time.Duration // first media on the new stream - lastMark; -1 when none yet
}

// measureHandover computes the gap between two streams of one call.
func measureHandover(old, next *twiliotest.Call) handoverGap {
	var g handoverGap
	if echoes := old.MarkEchoes(); len(echoes) > 0 {
		g.lastMark = echoes[len(echoes)-1].At
	}
	msgs := old.Messages()
	if len(msgs) > 0 {
		g.oldEnded = msgs[len(msgs)-1].At
	}
	from := g.lastMark
	if from.IsZero() {
		from = g.oldEnded
	}
	if from.IsZero() {
		from = old.Started()
	}
	g.callerFrame = next.Started().Sub(from)
	g.agentFrame = -1
	for _, m := range next.Messages() {
		if m.Event == "media" {
			g.agentFrame = m.At.Sub(from)
			break
		}
	}
	return g
}

// durations summarises a sample: p50 and max (and count).
type durations []time.Duration

func (d durations) p50() time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

func (d durations) max() time.Duration {
	if len(d) == 0 {
		return 0
	}
	return slices.Max(d)
}

func (d durations) String() string {
	return fmt.Sprintf("n=%d p50=%v max=%v", len(d), d.p50().Round(time.Millisecond), d.max().Round(time.Millisecond))
}

// figure prints one line of the closing note's figures, greppable as
// "FIGURE".
func figure(t *testing.T, name string, format string, args ...any) {
	t.Helper()
	t.Logf("FIGURE %s: %s", name, fmt.Sprintf(format, args...))
}

func TestDurationsSummary(t *testing.T) {
	d := durations{30 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond, 90 * time.Millisecond}
	if d.p50() != 20*time.Millisecond || d.max() != 90*time.Millisecond {
		t.Fatalf("p50 %v max %v", d.p50(), d.max())
	}
	if got := d.String(); !strings.Contains(got, "n=4 p50=20ms max=90ms") {
		t.Fatal(got)
	}
	if (durations{}).p50() != 0 || (durations{}).max() != 0 {
		t.Fatal("empty sample")
	}
}

// runFigures lengthens the figure scenarios to the closing note's sample
// sizes (go test ./e2e -run Figures -v -args -figures). Without it they
// still run, and assert, with a few rounds, so that every `make test`
// checks them.
var runFigures = flag.Bool("figures", false, "run the figure scenarios of e2e with the closing note's sample sizes (20+ rounds)")

// figureRounds is short without -figures, long with it.
func figureRounds(short, long int) int {
	if *runFigures {
		return long
	}
	return short
}

// Pod loss, 20 resumptions with -figures (3 by default): in each of 4
// rounds (1 by default) 5 calls (3) stream on one pod, the agent speaks on
// each, the pod is SIGKILLed and replaced, and every call resumes on the
// other pod. (One call cannot lose its pod 20 times:
// connect-ended reconnects a call at most twiml.MaxReconnects times.)
// Figures: kill to the new stream, and the caller-heard gap on Twilio's
// mark clock.
func TestProcsFiguresPodLoss(t *testing.T) {
	rounds, perRound := figureRounds(1, 4), figureRounds(3, 5)
	w := newWorld(t, worldOptions{model: greeted(), timeout: 5 * time.Minute})
	pods := map[string]*proc{"pod-a": w.startPod("pod-a"), "pod-b": w.startPod("pod-b")}
	var resume, heard durations
	for r := range rounds {
		victim := []string{"pod-a", "pod-b"}[r%2]
		w.front.route(victim)
		calls := make([]*twiliotest.SimCall, perRound)
		streams := make([]*twiliotest.Call, perRound)
		for i := range calls {
			var conn *realtimetest.Conn
			calls[i] = w.place()
			streams[i], conn = w.streamAndModel(calls[i], 1)
			if err := streams[i].WaitPlayedBytes(w.ctx, 1600); err != nil {
				t.Fatal(err)
			}
			conn.Speak("", realtimetest.Pattern(800), "Still here.")
		}
		for i, c := range calls {
			if err := streams[i].WaitPlayedBytes(w.ctx, 1600+800); err != nil {
				t.Fatal(err)
			}
			w.waitSession(c.CallSID(), "streaming on the victim", func(s *session.Session) bool {
				return s.State == session.Streaming && s.PodID == victim
			})
		}
		killed := pods[victim].signal(syscall.SIGKILL)
		if _, _, err := pods[victim].waitExit(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		for i, c := range calls {
			next, err := c.WaitStream(w.ctx, 2)
			if err != nil {
				t.Fatalf("round %d call %d not resumed: %v", r, i, err)
			}
			resume = append(resume, next.Started().Sub(killed))
			heard = append(heard, measureHandover(streams[i], next).callerFrame)
		}
		for range calls { // the resumed sessions' model connections, so that the next round's are its own
			if _, err := w.model.NextConn(w.ctx); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range calls {
			c.Hangup(w.ctx)
		}
		pods[victim] = w.startPod(victim) // the replacement pod
	}
	figure(t, "pod_loss_resume", "SIGKILL -> new stream %s", resume)
	figure(t, "pod_loss_gap", "caller-heard gap (last mark on the old stream -> new stream) %s", heard)
}
