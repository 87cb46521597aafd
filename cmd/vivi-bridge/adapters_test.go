package main

import (
	"context"
	"errors"
	"testing"

	"github.com/vivi/bridge/bridge"
	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/store"
)

// The bridge re-checks a token's agent when the stream starts: the adapter
// must tell it apart from a store failure (deleted, realtime mode off).
func TestCallAgentRechecksTheAgent(t *testing.T) {
	ctx := context.Background()
	st := store.NewMemory(store.Options{})
	for _, a := range []channel.Agent{
		{ID: "on", Realtime: true, Instructions: "x"},
		{ID: "off", Realtime: false, Instructions: "x"},
	} {
		if err := st.SaveAgent(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	ca := callAgents{st}
	if ag, err := ca.CallAgent(ctx, "ch", "on"); err != nil || ag.ID != "on" {
		t.Fatalf("realtime agent: %+v, %v", ag, err)
	}
	if _, err := ca.CallAgent(ctx, "ch", "off"); !errors.Is(err, bridge.ErrAgentNotRealtime) {
		t.Fatalf("agent with realtime off: err = %v, want ErrAgentNotRealtime", err)
	}
	if _, err := ca.CallAgent(ctx, "ch", "gone"); !errors.Is(err, bridge.ErrAgentNotFound) {
		t.Fatalf("deleted agent: err = %v, want ErrAgentNotFound", err)
	}
}

func TestModelPoolSizeSetting(t *testing.T) {
	for v, want := range map[string]int{"": 2, "0": 0, "4": 4} {
		c, err := loadConfig(func(k string) string {
			if k == "MODEL_POOL_SIZE" {
				return v
			}
			return ""
		}, false)
		if err != nil || c.ModelPoolSize != want {
			t.Fatalf("MODEL_POOL_SIZE=%q: %d, %v; want %d", v, c.ModelPoolSize, err, want)
		}
	}
	for _, v := range []string{"-1", "17", "two"} {
		if _, err := loadConfig(func(k string) string {
			if k == "MODEL_POOL_SIZE" {
				return v
			}
			return ""
		}, false); err == nil {
			t.Fatalf("MODEL_POOL_SIZE=%q accepted", v)
		}
	}
}
