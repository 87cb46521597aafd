package channel_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	"github.com/vivi/bridge/channel"
)

// newRedisAPI serves the admin API over the real Redis store.
func newRedisAPI(t *testing.T) (*env, channel.Repository) {
	t.Helper()
	e := newEnv(t)
	rs := newRedisStore(t)
	mux := http.NewServeMux()
	channel.NewAPI(channel.APIConfig{AdminToken: testToken}, e.provisioner(rs)).Register(mux)
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	if status, body := e.do("POST", "/v1/agents", baseAgent()); status != http.StatusCreated {
		t.Fatalf("POST agent = %d %s", status, body)
	}
	return e, rs
}

// parallel runs fn(i) for i < n at once and returns what each answered.
func parallel(n int, fn func(i int) (int, []byte)) ([]int, [][]byte) {
	statuses, bodies := make([]int, n), make([][]byte, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			statuses[i], bodies[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return statuses, bodies
}

// TestParallelCreatesOneWins: ten parallel POST /v1/channels with one id:
// exactly one 201, nine 409 already_exists, and the stored eventsSecret is
// the winner's.
func TestParallelCreatesOneWins(t *testing.T) {
	e, rs := newRedisAPI(t)
	for round := range 5 {
		id := fmt.Sprintf("race%d", round)
		statuses, bodies := parallel(10, func(i int) (int, []byte) {
			return e.do("POST", "/v1/channels", map[string]any{
				"id": id, "name": fmt.Sprintf("caller %d", i), "originHost": "203.0.113.10",
				"extensions": []string{fmt.Sprintf("%d%02d", round+1, i)}, "agentId": "front",
				"eventsUrl": "https://hooks.acme.test/vivi",
			})
		})
		var winner *channel.Channel
		for i, st := range statuses {
			switch st {
			case http.StatusCreated:
				if winner != nil {
					t.Fatalf("round %d: two creates of %s answered 201", round, id)
				}
				c := decodeJSON[channel.Channel](t, bodies[i])
				winner = &c
			default:
				wantError(t, st, bodies[i], http.StatusConflict, "already_exists")
			}
		}
		if winner == nil {
			t.Fatalf("round %d: no create won: %v", round, statuses)
		}
		stored, err := rs.Channel(context.Background(), id)
		if err != nil || stored.EventsSecret != winner.EventsSecret || stored.Name != winner.Name || winner.EventsSecret == "" {
			t.Fatalf("round %d: stored %+v (%v), winner %+v", round, stored, err, winner)
		}
	}
}

// TestParallelPatchesNoLostUpdate: two parallel PATCHes of one channel,
// each changing its own field: both land, or one is 409 conflict and only
// the other landed. Never two 200s with one change lost.
func TestParallelPatchesNoLostUpdate(t *testing.T) {
	e, rs := newRedisAPI(t)
	if status, body := e.do("POST", "/v1/channels", baseChannel()); status != http.StatusCreated {
		t.Fatalf("POST channel = %d %s", status, body)
	}
	refused := 0
	for round := range 20 {
		name := fmt.Sprintf("name %d", round)
		ext := fmt.Sprintf("3%03d", round)
		statuses, bodies := parallel(2, func(i int) (int, []byte) {
			if i == 0 {
				return e.do("PATCH", "/v1/channels/acme", map[string]any{"name": name})
			}
			return e.do("PATCH", "/v1/channels/acme", map[string]any{"extensions": []string{ext}})
		})
		c, err := rs.Channel(context.Background(), "acme")
		if err != nil {
			t.Fatal(err)
		}
		landed := [2]bool{c.Name == name, slices.Equal(c.Extensions, []string{ext})}
		for i, st := range statuses {
			switch st {
			case http.StatusOK:
				if !landed[i] {
					t.Fatalf("round %d: PATCH %d answered 200 but its change is lost: %+v", round, i, c)
				}
			default:
				wantError(t, st, bodies[i], http.StatusConflict, "conflict")
				refused++
				if landed[i] {
					t.Fatalf("round %d: PATCH %d answered 409 but its change landed", round, i)
				}
			}
		}
		if statuses[0] != http.StatusOK && statuses[1] != http.StatusOK {
			t.Fatalf("round %d: both PATCHes refused", round)
		}
	}
	t.Logf("%d of 40 PATCHes refused with 409", refused)
}

// doIf sends an authorized JSON request with If-Match and returns the
// status, the body and the ETag of the answer.
func (e *env) doIf(method, path, etag, body string) (int, []byte, string) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.srv.URL+path, bytes.NewBufferString(body))
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/json")
	if etag != "" {
		req.Header.Set("If-Match", etag)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.Bytes(), resp.Header.Get("ETag")
}

// TestIfMatch: GET gives an ETag; a PATCH or PUT with it lands and gives the
// new one; with a stale one it is 412 and changes nothing.
func TestIfMatch(t *testing.T) {
	e, _ := newRedisAPI(t)
	if status, body := e.do("POST", "/v1/channels", baseChannel()); status != http.StatusCreated {
		t.Fatalf("POST channel = %d %s", status, body)
	}
	status, _, tag1 := e.doIf("GET", "/v1/channels/acme", "", "")
	if status != 200 || tag1 == "" {
		t.Fatalf("GET = %d, ETag %q", status, tag1)
	}
	status, body, tag2 := e.doIf("PATCH", "/v1/channels/acme", tag1, `{"name":"New"}`)
	if status != 200 || tag2 == "" || tag2 == tag1 {
		t.Fatalf("PATCH If-Match current = %d %s, ETag %q", status, body, tag2)
	}
	if _, _, got := e.doIf("GET", "/v1/channels/acme", "", ""); got != tag2 {
		t.Fatalf("GET ETag %q, PATCH answered %q", got, tag2)
	}
	status, body, _ = e.doIf("PATCH", "/v1/channels/acme", tag1, `{"name":"Lost"}`)
	wantError(t, status, body, http.StatusPreconditionFailed, "precondition_failed")
	if _, body, _ := e.doIf("GET", "/v1/channels/acme", "", ""); decodeJSON[channel.Channel](t, body).Name != "New" {
		t.Fatalf("a refused PATCH changed the channel: %s", body)
	}

	status, _, atag1 := e.doIf("GET", "/v1/agents/front", "", "")
	if status != 200 || atag1 == "" {
		t.Fatalf("GET agent = %d, ETag %q", status, atag1)
	}
	a := baseAgent()
	a.Name = "Renamed"
	status, body, atag2 := e.doIf("PUT", "/v1/agents/front", atag1, string(mustJSON(t, a)))
	if status != 200 || atag2 == atag1 {
		t.Fatalf("PUT agent If-Match current = %d %s", status, body)
	}
	if _, _, got := e.doIf("GET", "/v1/agents/front", "", ""); got != atag2 {
		t.Fatalf("GET agent ETag %q, PUT answered %q", got, atag2)
	}
	status, body, _ = e.doIf("PUT", "/v1/agents/front", atag1, string(mustJSON(t, baseAgent())))
	wantError(t, status, body, http.StatusPreconditionFailed, "precondition_failed")
	fresh := baseAgent()
	fresh.ID = "newone"
	status, body, _ = e.doIf("PUT", "/v1/agents/newone", atag1, string(mustJSON(t, fresh)))
	if status != http.StatusPreconditionFailed {
		t.Fatalf("PUT If-Match on a missing agent = %d %s", status, body)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
