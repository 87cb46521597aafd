package main

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run when any test leaves a goroutine behind: every call,
// pod, fake and subscription must end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
