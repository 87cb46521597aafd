package testwait

import (
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestPoll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var n atomic.Int32
		go func() {
			time.Sleep(time.Second) // the bubble's clock
			n.Store(1)
		}()
		start := time.Now()
		if err := Poll(5*time.Second, func() bool { return n.Load() == 1 }); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < time.Second || d > time.Second+PollInterval {
			t.Errorf("took %v", d)
		}
		if err := Poll(time.Second, func() bool { return false }); err != ErrTimeout {
			t.Errorf("err = %v", err)
		}
	})
}

func TestNotifier(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := NewNotifier()
		var v atomic.Int32
		go func() {
			for range 3 {
				time.Sleep(time.Millisecond)
				v.Add(1)
				n.Notify()
			}
		}()
		n.Wait(t, time.Minute, "three changes", func() bool { return v.Load() == 3 })
	})
}
