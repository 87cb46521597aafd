package session

import (
	"errors"
	"time"
)

// Events of a call's move between pods (drain by migration).
const (
	// EventMigrating: the draining pod asked Twilio to move the stream; the
	// detail names the stream replaced and the pod it leaves.
	EventMigrating = "migrating"
	// EventMigrated: the new stream started; the detail is "from A to B".
	EventMigrated = "migrated"
)

// ErrFenced is returned (wrapped) by a session update whose writer holds an
// older fencing token than the session: another stream, on this pod or
// another, has taken the call since, and the writer must not touch it.
var ErrFenced = errors.New("session: fenced: another stream owns the call")

// Migration is a move of the call's media stream in progress: the pod that
// holds it asked Twilio to replace its <Connect><Stream> (Session.Connect
// is the new generation). It is cleared when the new stream starts.
type Migration struct {
	FromPod    string    `json:"fromPod"`
	FromStream string    `json:"fromStream"`
	At         time.Time `json:"at"`
}

// Take makes the stream starting on pod the owner of the call: a new
// fencing token (Fence, returned) that every later write of the previous
// owner fails to match, and a lease until now+ttl. A migration in progress
// is completed (recorded as migrated "from A to B").
func (s *Session) Take(pod string, now time.Time, ttl time.Duration) int64 {
	s.Fence++
	until := now.Add(ttl)
	s.LeaseUntil = &until
	if m := s.Migration; m != nil {
		s.Record(now, EventMigrated, "from "+m.FromPod+" to "+pod)
		s.Migration = nil
	}
	return s.Fence
}

// CheckFence returns an error wrapping ErrFenced unless fence is the
// session's current fencing token. A zero fence (a writer that never got
// one: its stream started while the store was down) is not checked.
func (s *Session) CheckFence(fence int64) error {
	if fence != 0 && s.Fence != fence {
		return ErrFenced
	}
	return nil
}

// Renew extends the lease of the owner holding fence to now+ttl, or returns
// an error wrapping ErrFenced.
func (s *Session) Renew(fence int64, now time.Time, ttl time.Duration) error {
	if err := s.CheckFence(fence); err != nil {
		return err
	}
	until := now.Add(ttl)
	s.LeaseUntil = &until
	return nil
}

// Owned reports whether the lease of the call's owner (PodID) is still
// running at now: an owner whose lease ran out stopped renewing (it died,
// is paused or cut off from the store).
func (s *Session) Owned(now time.Time) bool {
	return s.LeaseUntil != nil && now.Before(*s.LeaseUntil)
}
