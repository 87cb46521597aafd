package main

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run when any test leaves a goroutine behind: every call,
// pod, fake and subscription must end. The one exception is go-redis's
// own: after a failed dial (the outage tests stop Redis) its pool retries
// in a goroutine that sleeps a second and ends by itself, closed client or not.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}
