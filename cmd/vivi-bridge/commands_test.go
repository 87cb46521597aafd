package main

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/vivi/bridge/bridge"
	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/store"
)

// fakeOwner answers commands with err (probes with live and err) and
// records them.
type fakeOwner struct {
	err  error
	live bool
	got  chan string
}

func (f *fakeOwner) ProbeStream(_ context.Context, sid, stream string) (bool, error) {
	f.got <- "probe " + sid + " " + stream
	return f.live, f.err
}

func (f *fakeOwner) TransferCall(sid, dest string) error {
	f.got <- "transfer " + sid + " " + dest
	return f.err
}
func (f *fakeOwner) HangupCall(sid string) error { f.got <- "hangup " + sid; return f.err }

// failHanger is a REST client that must not be used.
type failHanger struct{ t *testing.T }

func (f failHanger) Hangup(context.Context, string) error {
	f.t.Error("REST hang-up used although the owner answered")
	return errors.New("unexpected")
}

// TestOperatorCommandReplies: the owner's answer decides the result; a
// command the owner did not take is an error, never a silent success.
func TestOperatorCommandReplies(t *testing.T) {
	ctx := context.Background()
	tests := map[string]struct {
		owner error
		want  error
	}{
		"taken":    {nil, nil},
		"not live": {bridge.ErrCallNotLive, channel.ErrCallNotLive},
		"busy":     {bridge.ErrCallBusy, channel.ErrCallBusy},
		"not here": {bridge.ErrCallNotHere, channel.ErrNoOwner},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			st := store.NewMemory(store.Options{})
			if err := st.SaveAgent(ctx, channel.Agent{ID: "ag", Name: "A", Realtime: true,
				TransferDestinations: []channel.Destination{{Name: "Billing", Number: "2002"}}}); err != nil {
				t.Fatal(err)
			}
			s := session.New("CA1", "ch", "ag", time.Now())
			_ = s.Transition(session.Streaming, time.Now())
			s.PodID = "pod-a"
			if err := st.CreateSession(ctx, s); err != nil {
				t.Fatal(err)
			}
			lctx, cancel := context.WithCancel(ctx)
			defer cancel()
			owner := &fakeOwner{err: tc.owner, got: make(chan string, 2)}
			if err := listenCommands(lctx, st, "pod-a", owner, zap.NewNop()); err != nil {
				t.Fatal(err)
			}
			c := commander{st: st, calls: failHanger{t}, wait: time.Minute}
			if err := c.TransferCall(ctx, "CA1", "Billing"); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("transfer: %v, want %v", err, tc.want)
			}
			if got := <-owner.got; got != "transfer CA1 Billing" {
				t.Fatalf("owner got %q", got)
			}
			if tc.owner == bridge.ErrCallNotHere {
				return // a hang-up would go through REST: see the e2e tests
			}
			if err := c.HangupCall(ctx, "CA1"); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("hangup: %v, want %v", err, tc.want)
			}
		})
	}
}

// FuzzPodCommand: whatever arrives on a pod's command topic, the listener
// neither crashes nor acts on anything but a well-formed transfer, hangup or
// probe, and it replies only where the command asks.
func FuzzPodCommand(f *testing.F) {
	for _, s := range []string{
		`{"op":"hangup","callSid":"CA1","replyTo":"reply:1"}`,
		`{"op":"transfer","callSid":"CA1","destination":"Billing","replyTo":"reply:2"}`,
		`{"op":"probe","callSid":"CA1","streamSid":"MZ1","replyTo":"reply:3"}`,
		`{"op":"reboot","callSid":"CA1"}`, `{"op":1}`, `null`, `[]`, ``, `{"op":"hangup"`,
	} {
		f.Add([]byte(s))
	}
	st := store.NewMemory(store.Options{})
	owner := &fakeOwner{got: make(chan string, 1)}
	f.Fuzz(func(t *testing.T, b []byte) {
		dispatch(context.Background(), st, owner, b, nil, zap.NewNop()) // nil slots: a probe runs in turn
		select {
		case got := <-owner.got:
			var cmd podCommand
			if err := json.Unmarshal(b, &cmd); err != nil || (cmd.Op != "transfer" && cmd.Op != "hangup" && cmd.Op != opProbe) {
				t.Fatalf("acted on %q: %s", b, got)
			}
		default:
		}
	})
}

// TestProbeReplies: a probe reaches the owning pod over pub/sub with the
// stream SID, and only its "live" answers live; a pod that does not answer
// is an error (the webhook then reconnects). A probe of this pod's own
// stream asks the bridge directly.
func TestProbeReplies(t *testing.T) {
	ctx := context.Background()
	tests := map[string]struct {
		live bool
		err  error
		want bool
	}{
		"live":     {true, nil, true},
		"not live": {false, nil, false},
		"not here": {false, bridge.ErrCallNotHere, false},
		"gave up":  {true, context.DeadlineExceeded, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			st := store.NewMemory(store.Options{})
			lctx, cancel := context.WithCancel(ctx)
			defer cancel()
			owner := &fakeOwner{live: tc.live, err: tc.err, got: make(chan string, 2)}
			if err := listenCommands(lctx, st, "pod-a", owner, zap.NewNop()); err != nil {
				t.Fatal(err)
			}
			c := commander{st: st, podID: "pod-b"}
			if live, err := c.ProbeStream(ctx, "pod-a", "CA1", "MZ1"); live != tc.want || err != nil {
				t.Fatalf("probe: %v, %v; want %v", live, err, tc.want)
			}
			if got := <-owner.got; got != "probe CA1 MZ1" {
				t.Fatalf("owner got %q", got)
			}
			local := commander{st: st, podID: "pod-a", local: owner}
			if live, _ := local.ProbeStream(ctx, "pod-a", "CA1", "MZ1"); live != tc.want {
				t.Fatalf("local probe: %v; want %v", live, tc.want)
			}
			if got := <-owner.got; got != "probe CA1 MZ1" {
				t.Fatalf("owner got %q", got)
			}
		})
	}
	t.Run("no owner", func(t *testing.T) {
		c := commander{st: store.NewMemory(store.Options{})}
		qctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if live, err := c.ProbeStream(qctx, "pod-gone", "CA1", "MZ1"); live || !errors.Is(err, channel.ErrNoOwner) {
			t.Fatalf("probe of a dead pod: %v, %v", live, err)
		}
	})
}
