package channel_test

import (
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/vivi/bridge/channel"
)

func TestAgentsAPI(t *testing.T) {
	e := newEnv(t)

	a := baseAgent()
	a.ID = ""
	status, body := e.do("POST", "/v1/agents", a)
	if status != http.StatusCreated {
		t.Fatalf("POST = %d %s", status, body)
	}
	created := decodeJSON[channel.Agent](t, body)
	if !regexp.MustCompile(`^ag_[0-9a-f]{12}$`).MatchString(created.ID) {
		t.Errorf("generated id %q", created.ID)
	}
	a.ID = created.ID
	if !reflect.DeepEqual(created, a) {
		t.Errorf("created = %+v\nwant %+v", created, a)
	}

	status, body = e.do("GET", "/v1/agents/"+created.ID, nil)
	if status != http.StatusOK || !reflect.DeepEqual(decodeJSON[channel.Agent](t, body), a) {
		t.Errorf("GET = %d %s", status, body)
	}

	status, body = e.do("POST", "/v1/agents", a)
	wantError(t, status, body, http.StatusConflict, "already_exists")

	// PUT replaces (200) or creates (201).
	a.Name = "Renamed"
	a.Voice = "CEDAR"
	status, body = e.do("PUT", "/v1/agents/"+a.ID, a)
	if got := decodeJSON[channel.Agent](t, body); status != http.StatusOK || got.Name != "Renamed" || got.Voice != "cedar" {
		t.Errorf("PUT existing = %d %s", status, body)
	}
	b := baseAgent()
	b.ID = ""
	status, body = e.do("PUT", "/v1/agents/second", b)
	if got := decodeJSON[channel.Agent](t, body); status != http.StatusCreated || got.ID != "second" {
		t.Errorf("PUT new = %d %s", status, body)
	}
	b.ID = "third"
	status, body = e.do("PUT", "/v1/agents/second", b)
	wantError(t, status, body, http.StatusUnprocessableEntity, "invalid_id")

	status, body = e.do("GET", "/v1/agents", nil)
	list := decodeJSON[struct{ Agents []channel.Agent }](t, body)
	if status != http.StatusOK || len(list.Agents) != 2 || list.Agents[0].ID != a.ID || list.Agents[1].ID != "second" {
		t.Errorf("GET list = %d %s", status, body)
	}

	if status, body = e.do("DELETE", "/v1/agents/second", nil); status != http.StatusNoContent || len(body) != 0 {
		t.Errorf("DELETE = %d %s", status, body)
	}
	status, body = e.do("GET", "/v1/agents/second", nil)
	wantError(t, status, body, http.StatusNotFound, "not_found")
	status, body = e.do("DELETE", "/v1/agents/second", nil)
	wantError(t, status, body, http.StatusNotFound, "not_found")
}

func TestAgentsAPIEmptyList(t *testing.T) {
	e := newEnv(t)
	status, body := e.do("GET", "/v1/agents", nil)
	if status != http.StatusOK || strings.TrimSpace(string(body)) != `{"agents":[]}` {
		t.Errorf("GET = %d %s", status, body)
	}
	status, body = e.do("GET", "/v1/channels", nil)
	if status != http.StatusOK || strings.TrimSpace(string(body)) != `{"channels":[]}` {
		t.Errorf("GET = %d %s", status, body)
	}
}

func TestDeleteAgentInUse(t *testing.T) {
	e := newEnv(t)
	if status, body := e.do("POST", "/v1/agents", baseAgent()); status != http.StatusCreated {
		t.Fatalf("POST agent = %d %s", status, body)
	}
	for i, id := range []string{"zeta", "alpha"} {
		c := baseChannel()
		c.ID, c.AgentID = id, "front"
		c.Extensions = []string{[]string{"1001", "1002"}[i]}
		if status, body := e.do("POST", "/v1/channels", c); status != http.StatusCreated {
			t.Fatalf("POST channel = %d %s", status, body)
		}
	}
	status, body := e.do("DELETE", "/v1/agents/front", nil)
	got := wantError(t, status, body, http.StatusConflict, "agent_in_use")
	if !strings.Contains(got.Error.Message, "alpha, zeta") {
		t.Errorf("message %q does not list the channels", got.Error.Message)
	}
	if _, err := e.store.Agent(t.Context(), "front"); err != nil {
		t.Errorf("the agent is gone: %v", err)
	}
	for _, id := range []string{"zeta", "alpha"} {
		if status, _ := e.do("DELETE", "/v1/channels/"+id, nil); status != http.StatusNoContent {
			t.Fatalf("DELETE channel %s = %d", id, status)
		}
	}
	if status, body := e.do("DELETE", "/v1/agents/front", nil); status != http.StatusNoContent {
		t.Errorf("DELETE unused agent = %d %s", status, body)
	}
}
