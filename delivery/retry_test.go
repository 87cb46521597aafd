package delivery

import (
	"net/http"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 12: 2048 * time.Second, 13: time.Hour, 40: time.Hour} {
		if got := backoff(n); got != want {
			t.Errorf("backoff(%d) = %v, want %v", n, got, want)
		}
	}
	for range 100 {
		if d := defaultJitter(8 * time.Second); d < 4*time.Second || d > 8*time.Second {
			t.Fatalf("jitter of 8s gave %v", d)
		}
	}
}

// FuzzRetryAfter: whatever a receiver sends as Retry-After, the wait is
// between 0 and the 1 h cap, and never panics.
func FuzzRetryAfter(f *testing.F) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, s := range []string{"", "0", "120", "-5", "99999999999999999999", "3601", " 7 ",
		now.Add(time.Minute).Format(http.TimeFormat), "Wed, 21 Oct 2015 07:28:00 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "soon"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if d := ParseRetryAfter(v, now); d < 0 || d > time.Hour {
			t.Fatalf("ParseRetryAfter(%q) = %v", v, d)
		}
	})
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"": 0, "120": 2 * time.Minute, "0": 0, "-1": 0, "7200": time.Hour, "x": 0,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
		now.Add(-time.Minute).Format(http.TimeFormat):     0,
	} {
		if got := ParseRetryAfter(v, now); got != want {
			t.Errorf("ParseRetryAfter(%q) = %v, want %v", v, got, want)
		}
	}
}

// The dial check refuses exactly what channel.ForbiddenEventsAddr names.
func TestDialControl(t *testing.T) {
	for addr, refused := range map[string]bool{
		"127.0.0.1:443": true, "[::1]:443": true, "10.0.0.1:443": true, "169.254.169.254:80": true,
		"[::ffff:127.0.0.1]:443": true, "8.8.8.8:443": false, "[2606:4700:4700::1111]:443": false, "nonsense": true,
	} {
		if got := dialControl("tcp", addr, nil) != nil; got != refused {
			t.Errorf("dialControl(%s) refused %v, want %v", addr, got, refused)
		}
	}
}

// The wait is the longer of the backoff and Retry-After, the latter with
// a little jitter (at most a twentieth more with the default jitter).
func TestRetryWait(t *testing.T) {
	identity := func(d time.Duration) time.Duration { return d }
	for name, c := range map[string]struct {
		ra       time.Duration
		attempts int
		want     time.Duration
	}{
		"no Retry-After":           {0, 3, 4 * time.Second},
		"Retry-After longer":       {120 * time.Second, 1, 120 * time.Second},
		"backoff longer":           {2 * time.Second, 5, 16 * time.Second},
		"Retry-After at the limit": {time.Hour, 20, time.Hour},
	} {
		if got := retryWait(c.ra, c.attempts, identity); got != c.want {
			t.Errorf("%s: retryWait = %v, want %v", name, got, c.want)
		}
	}
	seen := map[time.Duration]bool{}
	for range 200 {
		d := retryWait(100*time.Second, 1, defaultJitter)
		if d < 100*time.Second || d > 105*time.Second {
			t.Fatalf("retryWait(100s) = %v, want within [100s, 105s]", d)
		}
		seen[d] = true
	}
	if len(seen) < 2 {
		t.Fatal("Retry-After is not jittered")
	}
}
