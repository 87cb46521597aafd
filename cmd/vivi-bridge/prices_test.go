package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/vivi/bridge/store"
	"github.com/vivi/bridge/usage"
)

// TestLoadPrices: no PRICES_FILE is the default table; a file is merged
// over it; a bad one is a configuration error naming PRICES_FILE and the
// line, and newApp refuses to start with it.
func TestLoadPrices(t *testing.T) {
	p, err := loadPrices("")
	if err != nil || len(p) != len(usage.Default()) {
		t.Fatalf("default: %d entries, %v", len(p), err)
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "prices.yaml")
	if err := os.WriteFile(good, []byte("gpt-realtime:\n  audioOutput: 50\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err = loadPrices(good)
	if err != nil || p["gpt-realtime"] != (usage.Price{AudioOutput: 50}) || p["gpt-realtime-mini"] != usage.Default()["gpt-realtime-mini"] {
		t.Fatalf("merged: %+v, %v", p, err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("gpt-realtime:\n  audioOutput: 50\n  audio_output: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = loadPrices(bad)
	var ce *configError
	if err == nil || !errors.As(err, &ce) || !strings.Contains(err.Error(), "PRICES_FILE") || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("bad file: %v", err)
	}
	if _, err := newApp(context.Background(), config{PricesFile: bad}, zap.NewNop(), appDeps{store: store.NewMemory(store.Options{})}); err == nil || !strings.Contains(err.Error(), "PRICES_FILE") {
		t.Fatalf("newApp with a bad prices file: %v", err)
	}
}
