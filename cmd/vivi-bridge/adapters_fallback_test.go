package main

import (
	"context"
	"testing"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/store"
)

// The agent's fallbackDestination reaches the bridge (it is where a call
// goes when the model cannot be reached).
func TestCallAgentCarriesFallbackDestination(t *testing.T) {
	ctx := context.Background()
	st := store.NewMemory(store.Options{})
	a := channel.Agent{ID: "fb", Realtime: true, Instructions: "x", FallbackDestination: "Desk",
		TransferDestinations: []channel.Destination{{Name: "Desk", Number: "2001"}}}
	if err := st.SaveAgent(ctx, a); err != nil {
		t.Fatal(err)
	}
	ag, err := callAgents{st}.CallAgent(ctx, "ch", "fb")
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := ag.Destination(ag.FallbackDestination); ag.FallbackDestination != "Desk" || !ok || d.Number != "2001" {
		t.Fatalf("agent %+v: fallback destination not carried", ag)
	}
}
