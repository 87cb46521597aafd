package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyDirection keeps DESIGN.md section 3 true: dependencies point
// one way, and the test fakes are never wired into production packages.
func TestDependencyDirection(t *testing.T) {
	const mod = "github.com/vivi/bridge/"
	// allowed lists, for each production package, the project packages it
	// may import (directly or not).
	allowed := map[string][]string{
		"session":                      {},
		"internal/redact":              {},
		"twiml":                        {"session", "internal/redact"},
		"bridge/realtime":              {},
		"usage":                        {"session"},
		"bridge":                       {"session", "usage", "bridge/realtime", "internal/redact"},
		"transfer":                     {"session", "internal/redact"},
		"channel":                      {"session", "internal/redact"},
		"store":                        {"session", "channel", "internal/redact"},
		"delivery":                     {"session", "channel", "store", "internal/redact"},
		"twiliotest":                   {},
		"twiml/twimltest":              {"twiliotest"},
		"bridge/realtime/realtimetest": {},
	}
	for pkg, ok := range allowed {
		deps, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", "../../"+pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		for _, d := range strings.Fields(string(deps)) {
			if !strings.HasPrefix(d, mod) {
				continue
			}
			rel := strings.TrimPrefix(d, mod)
			if rel == pkg || contains(ok, rel) {
				continue
			}
			// A package's internal helpers are its own (Go enforces who may import them).
			if parent, _, found := strings.Cut(rel, "/internal/"); found && strings.HasPrefix(pkg, parent) {
				continue
			}
			t.Errorf("%s depends on %s; DESIGN.md allows only %v", pkg, rel, ok)
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
