package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestConfigReadsOnlyDocumentedVariables: the variables loadConfig reads
// are exactly those README's configuration table documents.
func TestConfigReadsOnlyDocumentedVariables(t *testing.T) {
	read := map[string]bool{}
	if _, err := loadConfig(func(k string) string { read[k] = true; return "" }, true); err == nil {
		t.Fatal("an empty environment was accepted for serve")
	}
	// serve stops at the first missing variable: read the rest with a valid one.
	env := map[string]string{"PUBLIC_URL": "https://b.example", "TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "t",
		"OPENAI_API_KEY": "k", "STREAM_TOKEN_SECRET": strings.Repeat("s", 32)}
	if _, err := loadConfig(func(k string) string { read[k] = true; return env[k] }, true); err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, _ := strings.Cut(string(readme), "### Configuration")
	table, _, _ = strings.Cut(table, "\n### ")
	documented := map[string]bool{}
	for _, line := range strings.Split(table, "\n") {
		if first, _, ok := strings.Cut(strings.TrimPrefix(line, "| "), " |"); ok && strings.HasPrefix(line, "| `") {
			for _, m := range regexp.MustCompile("`([A-Z_]+)`").FindAllStringSubmatch(first, -1) {
				documented[m[1]] = true
			}
		}
	}
	var undocumented, unread []string
	for k := range read {
		if !documented[k] {
			undocumented = append(undocumented, k)
		}
	}
	for k := range documented {
		if !read[k] {
			unread = append(unread, k)
		}
	}
	slices.Sort(undocumented)
	slices.Sort(unread)
	if len(undocumented) > 0 || len(unread) > 0 {
		t.Errorf("read but not in README: %v; in README but never read: %v", undocumented, unread)
	}
}
