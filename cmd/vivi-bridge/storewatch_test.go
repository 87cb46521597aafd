package main

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vivi/bridge/store"
)

// flakyStore is a store whose Ping fails while down and whose markers can
// be lost (a Redis back empty). Only Ping is used of storeAPI.
type flakyStore struct {
	storeAPI
	down    atomic.Bool
	mu      sync.Mutex
	markers map[string]bool
}

func (f *flakyStore) Ping(context.Context) error {
	if f.down.Load() {
		return errors.New("dial tcp 127.0.0.1:6390: connect: connection refused")
	}
	return nil
}

func (f *flakyStore) SetMarker(_ context.Context, pod, value string) error {
	if f.down.Load() {
		return errors.New("down")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.markers[pod+value] = true
	return nil
}

func (f *flakyStore) CheckMarker(_ context.Context, pod, value string) (bool, error) {
	if f.down.Load() {
		return false, errors.New("down")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.markers[pod+value], nil
}

func (f *flakyStore) lose() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.markers = map[string]bool{}
}

// TestStoreWatchTransitions: the watch logs a degraded store and its
// recovery once each however long they last, exports vivi_store_up, and
// handles a store back without its marker once: live sessions written back,
// CONFIG_FILE re-applied. The recovery asks the calls' session writers once
// to retry now (RetrySessionWrites), not at the end of their backoff.
func TestStoreWatchTransitions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		core, logs := observer.New(zap.InfoLevel)
		fs := &flakyStore{markers: map[string]bool{}}
		reg := prometheus.NewRegistry()
		w := newStoreWatch(fs, store.NewConfigCopy(store.NewMemory(store.Options{})), zap.New(core), "pod-a", "/etc/vivi.yaml", time.Second, reg)
		w.markers = fs
		var rewrites, reapplies, retries atomic.Int32
		w.rewrite = func() int { rewrites.Add(1); return 0 }
		w.retry = func() int { retries.Add(1); return 0 }
		w.reapply = func(context.Context) error { reapplies.Add(1); return nil }
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		w.start(ctx)
		go w.run(ctx)

		fs.down.Store(true)
		time.Sleep(time.Minute) // fake time: 60 failed checks
		synctest.Wait()
		if w.storeUp() || !strings.Contains(w.healthLines(), "store: degraded since") {
			t.Fatalf("after a minute down: up=%v\n%s", w.storeUp(), w.healthLines())
		}
		if v := gaugeValue(t, reg, "vivi_store_up"); v != 0 {
			t.Fatalf("vivi_store_up = %v while down", v)
		}
		if n := retries.Load(); n != 0 {
			t.Fatalf("session writes retried %d times while the store was down", n)
		}
		fs.down.Store(false)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if !w.storeUp() || gaugeValue(t, reg, "vivi_store_up") != 1 {
			t.Fatal("not up again after the store answered")
		}
		if n := retries.Load(); n != 1 {
			t.Fatalf("recovery asked the session writers to retry %d times; want 1", n)
		}
		for msg, want := range map[string]int{
			"store degraded: routing from the in-process config copy and buffering session writes until it answers again": 1,
			"store recovered": 1,
		} {
			if got := logs.FilterMessage(msg).Len(); got != want {
				t.Errorf("%q logged %d times; want %d", msg, got, want)
			}
		}
		if rewrites.Load() != 0 || reapplies.Load() != 0 {
			t.Fatal("a store that kept its data was handled as one that lost it")
		}

		fs.lose()
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if rewrites.Load() != 1 || reapplies.Load() != 1 {
			t.Fatalf("after the loss: %d rewrites, %d re-applies; want 1 each", rewrites.Load(), reapplies.Load())
		}
		if !strings.Contains(w.healthLines(), "store data lost: 1 times") || w.configLost() {
			t.Fatalf("health after the loss:\n%s", w.healthLines())
		}
		cancel()
	})
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
