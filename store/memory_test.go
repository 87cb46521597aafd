package store

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMemory(t *testing.T) {
	testStore(t, func(t *testing.T, opts Options) Store { return NewMemory(opts) })
}
