package transfer

import (
	"context"
	"errors"
	"testing"

	"github.com/vivi/bridge/session"
)

// TestStartFencedRefusesAnOlderOwner: a stream whose fencing token is not
// the session's (a newer stream took the call over) starts no transfer:
// nothing recorded, no REST update; the owner's own token starts it.
func TestStartFencedRefusesAnOlderOwner(t *testing.T) {
	updates := 0
	svc, ms := newService(t, func(context.Context, string, string) error { updates++; return nil })
	ms.m["CA1"].Fence = 2
	before := len(ms.m["CA1"].Timeline)
	_, err := svc.StartFenced(context.Background(), 1, "CA1", "Front Desk", ViaTool)
	if !errors.Is(err, session.ErrFenced) {
		t.Fatalf("err = %v, want ErrFenced", err)
	}
	if s := ms.m["CA1"]; updates != 0 || s.State != session.Streaming || len(s.Transfers) != 0 || len(s.Timeline) != before {
		t.Fatalf("a fenced owner changed the call: %d REST updates, session %+v", updates, s)
	}
	if _, err := svc.StartFenced(context.Background(), 2, "CA1", "Front Desk", ViaTool); err != nil || updates != 1 {
		t.Fatalf("the owner's transfer: err %v, %d REST updates", err, updates)
	}
}
