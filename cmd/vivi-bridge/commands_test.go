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

// fakeOwner answers commands with err and records them.
type fakeOwner struct {
	err error
	got chan string
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
// neither crashes nor acts on anything but a well-formed transfer or hangup,
// and it replies only where the command asks.
func FuzzPodCommand(f *testing.F) {
	for _, s := range []string{
		`{"op":"hangup","callSid":"CA1","replyTo":"reply:1"}`,
		`{"op":"transfer","callSid":"CA1","destination":"Billing","replyTo":"reply:2"}`,
		`{"op":"reboot","callSid":"CA1"}`, `{"op":1}`, `null`, `[]`, ``, `{"op":"hangup"`,
	} {
		f.Add([]byte(s))
	}
	st := store.NewMemory(store.Options{})
	owner := &fakeOwner{got: make(chan string, 1)}
	f.Fuzz(func(t *testing.T, b []byte) {
		runCommand(context.Background(), st, owner, b, zap.NewNop())
		select {
		case got := <-owner.got:
			var cmd podCommand
			if err := json.Unmarshal(b, &cmd); err != nil || (cmd.Op != "transfer" && cmd.Op != "hangup") {
				t.Fatalf("acted on %q: %s", b, got)
			}
		default:
		}
	})
}
