package session

import (
	"errors"
	"testing"
	"time"
)

// TestTakeFencesThePreviousOwner: each stream that takes the call gets a
// new token; writes (CheckFence, Renew) of an older one are refused, a zero
// token is not checked; taking a migrating call records "from A to B" and
// clears the migration; the lease runs out unless renewed.
func TestTakeFencesThePreviousOwner(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	s := New("CA1", "ch", "ag", now)
	a := s.Take("pod-a", now, 15*time.Second)
	if err := s.CheckFence(a); err != nil {
		t.Fatal(err)
	}
	s.Migration = &Migration{FromPod: "pod-a", FromStream: "MZ1", At: now}
	b := s.Take("pod-b", now.Add(time.Second), 15*time.Second)
	if b <= a {
		t.Fatalf("fence %d after %d", b, a)
	}
	if err := s.CheckFence(a); !errors.Is(err, ErrFenced) {
		t.Fatalf("older owner's write: %v", err)
	}
	if err := s.Renew(a, now, time.Minute); !errors.Is(err, ErrFenced) {
		t.Fatalf("older owner's renewal: %v", err)
	}
	if err := s.CheckFence(0); err != nil {
		t.Fatalf("zero fence: %v", err)
	}
	last := s.Timeline[len(s.Timeline)-1]
	if s.Migration != nil || last.Type != EventMigrated || last.Detail != "from pod-a to pod-b" {
		t.Fatalf("migration %+v, last event %+v", s.Migration, last)
	}
	if !s.Owned(now.Add(15*time.Second)) || s.Owned(now.Add(16*time.Second)) {
		t.Fatalf("lease until %v", s.LeaseUntil)
	}
	if err := s.Renew(b, now.Add(10*time.Second), 15*time.Second); err != nil || !s.Owned(now.Add(24*time.Second)) {
		t.Fatalf("renewal: %v, lease until %v", err, s.LeaseUntil)
	}
}
