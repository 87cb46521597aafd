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
		"twiml":                        {"session"},
		"bridge/realtime":              {"bridge/internal/jsonscan"},
		"bridge":                       {"session", "bridge/realtime", "bridge/internal/jsonscan"},
		"transfer":                     {"session"},
		"channel":                      {"session"},
		"store":                        {"session", "channel"},
		"twiliotest":                   {},
		"twiml/twimltest":              {},
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
