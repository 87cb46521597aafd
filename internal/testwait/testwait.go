// Package testwait is how the tests wait for something to happen: a
// Notifier where the test can hear of the change itself (a fake's hook, a
// handler it wrote), and Until, the one polling helper, only where the
// condition lives in an outside system that sends no notification (Redis
// keys expiring, state read back through a fake's or a server's API).
// Neither is a clock: a deadline only turns a hang into a clear failure.
package testwait

import (
	"testing"
	"time"
)

// PollInterval is how often Until checks its condition.
const PollInterval = 5 * time.Millisecond

// Until checks cond every PollInterval until it holds, and fails tb after
// timeout saying what it waited for.
func Until(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	if err := Poll(timeout, cond); err != nil {
		tb.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// Poll is Until for callers that judge the outcome themselves: it returns
// ErrTimeout when cond still does not hold after timeout.
func Poll(timeout time.Duration, cond func() bool) error {
	if cond() {
		return nil
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(PollInterval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if cond() {
				return nil
			}
		case <-deadline.C:
			if cond() {
				return nil
			}
			return ErrTimeout
		}
	}
}

// ErrTimeout is Poll's error.
var ErrTimeout = timeoutError{}

type timeoutError struct{}

func (timeoutError) Error() string { return "testwait: condition not met in time" }

// Notifier wakes one waiter when what it watches may have changed; make one
// with NewNotifier.
type Notifier struct {
	ch chan struct{}
}

// NewNotifier returns a Notifier.
func NewNotifier() *Notifier { return &Notifier{ch: make(chan struct{}, 1)} }

// Notify says something changed; it never blocks.
func (n *Notifier) Notify() {
	select {
	case n.ch <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// Wait checks cond each time Notify is called until it holds, and fails tb
// after timeout saying what it waited for.
func (n *Notifier) Wait(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-n.ch:
		case <-deadline.C:
			if !cond() {
				tb.Fatalf("timed out after %v waiting for %s", timeout, what)
			}
			return
		}
	}
}
