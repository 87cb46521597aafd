package channel_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/store"
)

func TestAPIAuth(t *testing.T) {
	e := newEnv(t)
	tests := map[string]struct {
		auth   string
		status int
	}{
		"no header":          {auth: "", status: http.StatusUnauthorized},
		"wrong token":        {auth: "Bearer nope", status: http.StatusUnauthorized},
		"token prefix":       {auth: "Bearer " + testToken[:5], status: http.StatusUnauthorized},
		"token with suffix":  {auth: "Bearer " + testToken + "x", status: http.StatusUnauthorized},
		"basic scheme":       {auth: "Basic " + testToken, status: http.StatusUnauthorized},
		"bare token":         {auth: testToken, status: http.StatusUnauthorized},
		"right token":        {auth: "Bearer " + testToken, status: http.StatusOK},
		"scheme insensitive": {auth: "bearer " + testToken, status: http.StatusOK},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			for _, path := range []string{"/v1/agents", "/v1/channels"} {
				status, body := e.doWith("GET", path, nil, tc.auth)
				if tc.status == http.StatusOK {
					if status != http.StatusOK {
						t.Fatalf("GET %s = %d %s", path, status, body)
					}
					continue
				}
				wantError(t, status, body, tc.status, "unauthorized")
			}
		})
	}
	// Nothing is changed without the token.
	status, body := e.doWith("POST", "/v1/agents", baseAgent(), "Bearer nope")
	wantError(t, status, body, http.StatusUnauthorized, "unauthorized")
	if as, _ := e.store.Agents(t.Context()); len(as) != 0 {
		t.Errorf("an unauthorized POST stored %v", as)
	}
}

func TestAPIDisabledWithoutToken(t *testing.T) {
	prov, err := channel.NewProvisioner(channel.ProvisionerConfig{Repo: store.NewMemory(store.Options{})})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	channel.NewAPI(channel.APIConfig{}, prov).Register(mux)
	for _, auth := range []string{"", "Bearer ", "Bearer anything"} {
		req := httptest.NewRequest("GET", "/v1/channels", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		e := wantError(t, rec.Code, rec.Body.Bytes(), http.StatusServiceUnavailable, "admin_disabled")
		if e.Error.Message != "ADMIN_TOKEN is not set; the admin API is disabled" {
			t.Errorf("message = %q", e.Error.Message)
		}
	}
}

func TestAPIRequestErrors(t *testing.T) {
	e := newEnv(t)
	big := `{"id":"big","name":"` + strings.Repeat("x", channel.MaxRequestBody) + `"}`
	tests := map[string]struct {
		method, path string
		body         string
		status       int
		code         string
	}{
		"unknown field":           {"POST", "/v1/agents", `{"id":"a","name":"A","nmae":"x"}`, 400, "unknown_field"},
		"unknown nested field":    {"POST", "/v1/agents", `{"id":"a","name":"A","turnDetection":{"silence":1}}`, 400, "unknown_field"},
		"unknown channel field":   {"POST", "/v1/channels", `{"originHost":"192.0.2.1","extensions":["1"],"agent":"x"}`, 400, "unknown_field"},
		"unknown patch field":     {"PATCH", "/v1/channels/acme", `{"extension":["1"]}`, 400, "unknown_field"},
		"unknown origin-ips":      {"PUT", "/v1/channels/acme/origin-ips", `{"ip":["192.0.2.1"]}`, 400, "unknown_field"},
		"malformed":               {"POST", "/v1/agents", `{"id":`, 400, "invalid_json"},
		"empty body":              {"POST", "/v1/channels", ``, 400, "invalid_json"},
		"not an object":           {"POST", "/v1/agents", `["a"]`, 400, "invalid_json"},
		"wrong type":              {"POST", "/v1/channels", `{"originHost":"192.0.2.1","extensions":["1"],"originPort":"5060"}`, 400, "invalid_json"},
		"trailing data":           {"POST", "/v1/agents", `{"id":"a","name":"A"} {}`, 400, "invalid_json"},
		"patch null body":         {"PATCH", "/v1/channels/acme", `null`, 400, "invalid_json"},
		"patch wrong type":        {"PATCH", "/v1/channels/acme", `{"extensions":"1001"}`, 400, "invalid_json"},
		"oversize agent":          {"POST", "/v1/agents", big, 413, "body_too_large"},
		"oversize put":            {"PUT", "/v1/agents/big", big, 413, "body_too_large"},
		"oversize patch":          {"PATCH", "/v1/channels/acme", `{"name":"` + strings.Repeat("x", channel.MaxRequestBody) + `"}`, 413, "body_too_large"},
		"oversize trailing bytes": {"POST", "/v1/agents", `{"id":"a","name":"A"}` + strings.Repeat(" ", channel.MaxRequestBody), 413, "body_too_large"},
	}
	if status, body := e.do("POST", "/v1/channels", baseChannel()); status != http.StatusCreated {
		t.Fatalf("create channel: %d %s", status, body)
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			status, body := e.do(tc.method, tc.path, tc.body)
			wantError(t, status, body, tc.status, tc.code)
		})
	}
	if as, _ := e.store.Agents(t.Context()); len(as) != 0 {
		t.Errorf("a refused request stored %v", as)
	}
}

// TestAPIValidationTable sends every validation case through the API: 422
// with the same code and field as Normalize.
func TestAPIValidationTable(t *testing.T) {
	e := newEnv(t)
	for name, tc := range agentCases() {
		if name == "id missing" { // the API generates it
			continue
		}
		t.Run("agent "+name, func(t *testing.T) {
			a := baseAgent()
			tc.mutate(&a)
			status, body := e.do("POST", "/v1/agents", a)
			got := wantError(t, status, body, http.StatusUnprocessableEntity, tc.code)
			if got.Error.Field != tc.field || !strings.HasPrefix(got.Error.Message, tc.field+": ") {
				t.Errorf("error = %+v; want field %s", got.Error, tc.field)
			}
			if channel.ValidID(a.ID) {
				status, body = e.do("PUT", "/v1/agents/"+a.ID, a)
				wantError(t, status, body, http.StatusUnprocessableEntity, tc.code)
			}
		})
	}
	for name, tc := range channelCases() {
		t.Run("channel "+name, func(t *testing.T) {
			c := baseChannel()
			tc.mutate(&c)
			status, body := e.do("POST", "/v1/channels", c)
			got := wantError(t, status, body, http.StatusUnprocessableEntity, tc.code)
			if got.Error.Field != tc.field {
				t.Errorf("error = %+v; want field %s", got.Error, tc.field)
			}
		})
	}
	if s := takeSnapshot(t, e.store); len(s.Agents)+len(s.Channels) != 0 {
		t.Errorf("invalid requests stored %+v", s)
	}
}

func TestAPIUnknownMethodAndPath(t *testing.T) {
	e := newEnv(t)
	if status, _ := e.do("DELETE", "/v1/agents", nil); status != http.StatusMethodNotAllowed {
		t.Errorf("DELETE /v1/agents = %d; want 405", status)
	}
	status, body := e.do("GET", "/v1/channels/nope", nil)
	wantError(t, status, body, http.StatusNotFound, "not_found")
}
