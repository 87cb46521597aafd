package store

import (
	"errors"
	"sync"
	"testing"

	"github.com/vivi/bridge/channel"
)

// testCheckAndSet: SaveChannelIf and SaveAgentIf write only over the
// version the caller read (nil: none), and of concurrent writers over one
// version exactly one wins.
func testCheckAndSet(t *testing.T, newStore newStoreFunc) {
	ctx, st := t.Context(), newStore(t, Options{})
	c := chann("c1", "a", []string{"10.0.0.1"}, []string{"1001"})
	if err := st.SaveChannelIf(ctx, c, nil); err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := st.SaveChannelIf(ctx, c, nil); !errors.Is(err, channel.ErrExists) {
		t.Fatalf("second create = %v, want ErrExists", err)
	}
	v1, err := st.Channel(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	next := v1
	next.Name = "two"
	if err := st.SaveChannelIf(ctx, next, &v1); err != nil {
		t.Fatalf("update over the version read: %v", err)
	}
	lost := v1
	lost.Name = "lost"
	if err := st.SaveChannelIf(ctx, lost, &v1); !errors.Is(err, channel.ErrStale) {
		t.Fatalf("update over an old version = %v, want ErrStale", err)
	}
	if got, _ := st.Channel(ctx, "c1"); got.Name != "two" {
		t.Fatalf("stored name %q", got.Name)
	}
	gone := chann("c9", "a", []string{"10.0.0.9"}, []string{"9"})
	if err := st.SaveChannelIf(ctx, gone, &v1); !errors.Is(err, channel.ErrStale) {
		t.Fatalf("update of a missing channel = %v, want ErrStale", err)
	}

	a := agent("a1", "One")
	if err := st.SaveAgentIf(ctx, a, nil); err != nil {
		t.Fatalf("create agent: %v", err)
	}
	if err := st.SaveAgentIf(ctx, a, nil); !errors.Is(err, channel.ErrExists) {
		t.Fatalf("second create agent = %v, want ErrExists", err)
	}
	av1, _ := st.Agent(ctx, "a1")
	up := av1
	up.Name = "Two"
	if err := st.SaveAgentIf(ctx, up, &av1); err != nil {
		t.Fatalf("update agent: %v", err)
	}
	if err := st.SaveAgentIf(ctx, av1, &av1); !errors.Is(err, channel.ErrStale) {
		t.Fatalf("update agent over an old version = %v, want ErrStale", err)
	}

	// Concurrent creates of one id and concurrent updates of one version.
	for round := range 5 {
		const n = 10
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins, exists, stale := 0, 0, 0
		id := "race" + string(rune('a'+round))
		for i := range n {
			wg.Go(func() {
				rc := chann(id, "a", []string{"10.1.0.1"}, []string{string(rune('A' + i))})
				rc.Name = string(rune('A' + i))
				err := st.SaveChannelIf(ctx, rc, nil)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.Is(err, channel.ErrExists):
					exists++
				default:
					t.Errorf("create: %v", err)
				}
			})
		}
		wg.Wait()
		if wins != 1 || exists != n-1 {
			t.Fatalf("round %d: %d creates won, %d refused", round, wins, exists)
		}
		base, _ := st.Channel(ctx, id)
		wins = 0
		for i := range n {
			wg.Go(func() {
				u := base
				u.Name = "upd" + string(rune('A'+i))
				err := st.SaveChannelIf(ctx, u, &base)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.Is(err, channel.ErrStale):
					stale++
				default:
					t.Errorf("update: %v", err)
				}
			})
		}
		wg.Wait()
		if wins != 1 || stale != n-1 {
			t.Fatalf("round %d: %d updates of one version won, %d refused", round, wins, stale)
		}
		stale = 0
		if err := st.DeleteChannel(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
}
