package channel_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/store"
)

// internalEventsURLs are eventsUrl values that reach inside the deployment.
var internalEventsURLs = []string{
	"http://127.0.0.1:6379/", "https://127.0.0.1:6379/", "https://169.254.169.254/latest/meta-data/",
	"https://10.0.0.5/e", "https://172.16.3.4/e", "https://192.168.1.10/e", "https://100.64.1.1/e",
	"https://0.0.0.0/e", "https://224.0.0.1/e", "https://255.255.255.255/e", "https://[::1]/e", "https://[::]/e",
	"https://[fd00::1]/e", "https://[fc00::1]/e", "https://[fe80::1]/e", "https://[ff02::1]/e",
	"https://[::ffff:127.0.0.1]/e", "https://[::ffff:a9fe:a9fe]/e", "https://[64:ff9b::a9fe:a9fe]/e",
	"https://localhost/e", "https://LOCALHOST./e", "https://x.localhost/e", "http://hooks.acme.test/e",
}

// The admin API and the YAML apply refuse internal eventsUrl targets with
// 422 invalid_events_url (issue 9: http://127.0.0.1:6379/ and the metadata
// service were accepted), unless EVENTS_ALLOW_PRIVATE.
func TestEventsURLInternalTargetsRefused(t *testing.T) {
	e := newEnv(t)
	ch := baseChannel()
	for _, u := range internalEventsURLs {
		ch.EventsURL = u
		status, body := e.do("POST", "/v1/channels", ch)
		wantError(t, status, body, http.StatusUnprocessableEntity, "invalid_events_url")
	}
	ch.EventsURL = "https://hooks.acme.test/vivi"
	if status, body := e.do("POST", "/v1/channels", ch); status != http.StatusCreated {
		t.Fatalf("public https eventsUrl: %d %s", status, body)
	}
	status, body := e.do("PATCH", "/v1/channels/acme", map[string]any{"eventsUrl": "https://169.254.169.254/"})
	wantError(t, status, body, http.StatusUnprocessableEntity, "invalid_events_url")

	_, err := e.prov.Apply(context.Background(), mustParse(t, `
channels:
  - id: other
    name: Other
    originHost: 203.0.113.20
    extensions: ["1001"]
    eventsUrl: https://10.1.2.3/hook
`))
	errs := channel.ConfigErrors(err)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "invalid_events_url") {
		t.Fatalf("apply: %v", err)
	}
	if _, err := e.store.Channel(context.Background(), "other"); !errors.Is(err, channel.ErrNotFound) {
		t.Fatalf("refused apply stored the channel: %v", err)
	}

	allowed, err := channel.NewProvisioner(channel.ProvisionerConfig{Repo: store.NewMemory(store.Options{}), AllowPrivateEvents: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"http://127.0.0.1:8080/e", "https://10.0.0.5/e", "https://[fd00::1]/e"} {
		c := baseChannel()
		c.EventsURL = u
		if _, err := allowed.CreateChannel(context.Background(), c); err != nil {
			t.Errorf("EVENTS_ALLOW_PRIVATE: %s refused: %v", u, err)
		}
		if err := allowed.DeleteChannel(context.Background(), "acme"); err != nil {
			t.Fatal(err)
		}
	}
}
