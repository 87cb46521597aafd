package bridge

import (
	"math/rand/v2"
	"time"
)

// Re-dial backoff after a failed model dial: doubling from redialMin up to
// redialMax, each delay jittered to a random point of its upper half, so
// that the calls of a pod that lost the model together do not re-dial in
// step.
const (
	redialMin = 200 * time.Millisecond
	redialMax = 3 * time.Second
)

// redialDelay is the wait before the next dial after failures consecutive
// failed dials (1 or more); r in [0, 1) is the jitter.
func redialDelay(failures int, r float64) time.Duration {
	d := redialMax
	if failures <= 1 {
		d = redialMin
	} else if shift := failures - 1; shift < 5 {
		d = min(redialMin<<shift, redialMax)
	}
	return d/2 + time.Duration(r*float64(d/2))
}

func jitter() float64 { return rand.Float64() }

// dropBudget is a rate: at most max drops of a ready model session in any
// window; a long call with occasional drops never runs out of it.
type dropBudget struct {
	max    int
	window time.Duration
	at     []time.Time // drops within the window, oldest first
}

// take counts a drop at now and reports whether it is within the budget.
func (b *dropBudget) take(now time.Time) bool {
	i := 0
	for i < len(b.at) && now.Sub(b.at[i]) >= b.window {
		i++
	}
	b.at = append(b.at[:0], b.at[i:]...)
	if len(b.at) >= b.max {
		return false
	}
	b.at = append(b.at, now)
	return true
}

// warnLimit lets a per-frame warning through once per warnEvery per call,
// and counts the occasions suppressed in between.
type warnLimit struct {
	last       time.Time
	suppressed int
}

// warnEvery is the period of warnLimit.
const warnEvery = 10 * time.Second

// allow reports whether a line may be logged at now; if not, it is counted.
func (w *warnLimit) allow(now time.Time) bool {
	if !w.last.IsZero() && now.Sub(w.last) < warnEvery {
		w.suppressed++
		return false
	}
	w.last = now
	return true
}

// take returns the count suppressed since the last line and resets it.
func (w *warnLimit) take() int {
	n := w.suppressed
	w.suppressed = 0
	return n
}
