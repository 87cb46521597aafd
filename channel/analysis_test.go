package channel_test

import (
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/vivi/bridge/channel"
)

const analysisYAML = `agents:
  - id: front
    name: Front
    analysis:
      enabled: false
      instructions: Resolved means booked.
      fields:
        - name: department
          description: the department asked for
          type: string
          enum: [sales, support]
        - name: party_size
          type: integer
`

func TestParseConfigAnalysis(t *testing.T) {
	cfg, err := channel.ParseConfig(strings.NewReader(analysisYAML))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	off := false
	want := &channel.AgentAnalysis{
		Enabled:      &off,
		Instructions: "Resolved means booked.",
		Fields: []channel.AnalysisField{
			{Name: "department", Description: "the department asked for", Type: "string", Enum: []string{"sales", "support"}},
			{Name: "party_size", Type: "integer"},
		},
	}
	if got := cfg.Agents[0].Analysis; !reflect.DeepEqual(got, want) {
		t.Fatalf("analysis = %+v; want %+v", got, want)
	}
	if cfg.Agents[0].Analysis.On() {
		t.Error("enabled: false is On")
	}

	bad := strings.Replace(analysisYAML, "type: integer", "type: date", 1)
	_, err = channel.ParseConfig(strings.NewReader(bad))
	if err == nil || !strings.Contains(err.Error(), "config:13: agents[0].analysis.fields[1].type: invalid_analysis") {
		t.Errorf("a field of type date: %v", err)
	}
	unknown := strings.Replace(analysisYAML, "enabled: false", "enable: false", 1)
	if _, err := channel.ParseConfig(strings.NewReader(unknown)); err == nil || !strings.Contains(err.Error(), "unknown_field") {
		t.Errorf("an unknown analysis key: %v", err)
	}
}

func TestAgentAnalysisOn(t *testing.T) {
	on, off := true, false
	for _, tc := range []struct {
		a    channel.AgentAnalysis
		want bool
	}{{channel.AgentAnalysis{}, true}, {channel.AgentAnalysis{Enabled: &on}, true}, {channel.AgentAnalysis{Enabled: &off}, false}} {
		if got := tc.a.On(); got != tc.want {
			t.Errorf("%+v.On() = %v", tc.a, got)
		}
	}
}

// TestAgentsAPIAnalysis stores an agent's analysis settings through the
// API and reads them back unchanged; an invalid one is refused with 422.
func TestAgentsAPIAnalysis(t *testing.T) {
	e := newEnv(t)
	a := baseAgent()
	off := false
	a.Analysis.Enabled = &off
	status, body := e.do("PUT", "/v1/agents/front", a)
	if status != http.StatusCreated {
		t.Fatalf("PUT = %d %s", status, body)
	}
	if !strings.Contains(string(body), `"analysis":{"enabled":false,"instructions":`) {
		t.Errorf("PUT answer %s", body)
	}
	status, body = e.do("GET", "/v1/agents/front", nil)
	if got := decodeJSON[channel.Agent](t, body); status != http.StatusOK || !reflect.DeepEqual(got.Analysis, a.Analysis) {
		t.Errorf("GET = %d %s", status, body)
	}
	stored, err := e.store.Agent(t.Context(), "front")
	if err != nil || !reflect.DeepEqual(stored.Analysis, a.Analysis) {
		t.Errorf("stored %+v, %v", stored.Analysis, err)
	}

	a.Analysis.Fields[0].Type = "number" // a number with an enum
	status, body = e.do("PUT", "/v1/agents/front", a)
	got := wantError(t, status, body, http.StatusUnprocessableEntity, "invalid_analysis")
	if got.Error.Field != "analysis.fields[0].enum" {
		t.Errorf("error = %+v", got.Error)
	}
}
