package bridge

import (
	"sync"
	"testing"
	"time"

	"github.com/vivi/bridge/internal/testwait"
)

// fakeAfter is a Config.After whose timers fire only when the test fires
// them, so that a test of "after the timeout" needs no real time and does
// not pass or fail with the machine's speed.
type fakeAfter struct {
	mu     sync.Mutex
	timers []*fakeTimer
	added  *testwait.Notifier
}

// fakeTimer is one timer asked of a fakeAfter.
type fakeTimer struct {
	d time.Duration
	c chan time.Time
}

func newFakeAfter() *fakeAfter { return &fakeAfter{added: testwait.NewNotifier()} }

// after is the Config.After.
func (f *fakeAfter) after(d time.Duration) <-chan time.Time {
	t := &fakeTimer{d: d, c: make(chan time.Time, 1)}
	f.mu.Lock()
	f.timers = append(f.timers, t)
	f.mu.Unlock()
	f.added.Notify()
	return t.c
}

// await waits for the n-th timer (from 1) of duration d to be asked for.
func (f *fakeAfter) await(t *testing.T, d time.Duration, n int) *fakeTimer {
	t.Helper()
	var got *fakeTimer
	f.added.Wait(t, waitLimit, "timer "+d.String(), func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		k := 0
		for _, ft := range f.timers {
			if ft.d == d {
				if k++; k == n {
					got = ft
					return true
				}
			}
		}
		return false
	})
	return got
}

// fire fires the timer (as a time.After channel does, at most once).
func (ft *fakeTimer) fire() { ft.c <- time.Now() }

// pending counts the timers of duration d asked for so far.
func (f *fakeAfter) pending(d time.Duration) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, ft := range f.timers {
		if ft.d == d {
			n++
		}
	}
	return n
}
