package delivery

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Retry bounds.
const (
	firstBackoff = time.Second
	maxBackoff   = time.Hour
)

// backoff is the wait before attempt n+1 after n failed ones: 1 s doubling, at most 1 h.
func backoff(n int) time.Duration {
	d := firstBackoff
	for i := 1; i < n && d < maxBackoff; i++ {
		d *= 2
	}
	return min(d, maxBackoff)
}

// defaultJitter returns a duration uniform in [d/2, d].
func defaultJitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d-d/2+1)
}

// ParseRetryAfter reads a Retry-After header (delay seconds or an HTTP
// date, relative to now), capped at 1 h; 0 when absent, invalid or past.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > int64(maxBackoff/time.Second) {
			return maxBackoff
		}
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	if d <= 0 {
		return 0
	}
	return min(d, maxBackoff)
}

// retryWait is the wait after the attempts-th failed attempt: the
// jittered backoff, or the Retry-After asked for when longer (a receiver
// asking for 1 s again and again still backs off), with a little jitter
// of its own (up to ra/20 with the default jitter) so that the retries of
// one receiver asking for the same time do not all come at once.
func retryWait(retryAfter time.Duration, attempts int, jitter func(time.Duration) time.Duration) time.Duration {
	wait := jitter(backoff(attempts))
	if retryAfter <= 0 {
		return wait
	}
	spread := retryAfter / 10
	return max(wait, retryAfter+spread-jitter(spread))
}
