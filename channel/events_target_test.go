package channel_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/session"
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

// notPosted runs a sink over a memory store holding ch and returns the
// error of its first "call event not posted" line.
func notPosted(t *testing.T, ch channel.Channel, cfg channel.EventSinkConfig) string {
	t.Helper()
	errs := make(chan string, 16)
	cfg.Logger = zap.New(errCore{errs})
	st := store.NewMemory(store.Options{})
	if err := st.SaveChannel(context.Background(), ch); err != nil {
		t.Fatal(err)
	}
	cfg.Channels = st
	sink := channel.NewEventSink(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sink.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	sink.Post("CA1", ch.ID, session.Event{At: time.Unix(1_700_000_000, 0), Type: session.EventAnswered}, nil)
	select {
	case e := <-errs:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery outcome logged")
		return ""
	}
}

// errCore captures the message and error of each "call event not posted".
type errCore struct{ out chan<- string }

func (c errCore) Enabled(zapcore.Level) bool        { return true }
func (c errCore) With([]zapcore.Field) zapcore.Core { return c }
func (c errCore) Sync() error                       { return nil }
func (c errCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	return ce.AddCore(e, c)
}
func (c errCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	if e.Message != "call event not posted" {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fs {
		f.AddTo(enc)
	}
	c.out <- fmt.Sprintf("attempts=%v %v", enc.Fields["attempts"], enc.Fields["error"])
	return nil
}

// At delivery every address a name resolves to is checked before it is
// dialled: a name that resolves to loopback (DNS rebinding after
// validation) is refused, once, without a retry and without a request
// reaching the internal server; a stored literal or http URL is held to the
// policy too.
func TestEventsDeliveryRefusesInternalAddresses(t *testing.T) {
	dns := startDNS(t)
	hits := make(chan struct{}, 16)
	internal := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits <- struct{}{}
	}))
	t.Cleanup(internal.Close)
	port := internal.Listener.Addr().String()
	port = port[strings.LastIndex(port, ":")+1:]
	dns.setA("hooks.acme.test", "127.0.0.1")
	dns.setAAAA("v6.acme.test", "::1")

	for _, u := range []string{
		"https://hooks.acme.test:" + port + "/e", // validated as a name, resolves to loopback
		"https://v6.acme.test:" + port + "/e",
		"https://127.0.0.1:" + port + "/e", // stored before the policy
		"http://127.0.0.1:" + port + "/e",
	} {
		ch := eventsChannel(u)
		got := notPosted(t, ch, channel.EventSinkConfig{Resolver: dns.resolver(), Retries: 3})
		if !strings.Contains(got, "attempts=1 ") || !strings.Contains(got, "not allowed") {
			t.Errorf("%s: logged %q, want one refused attempt", u, got)
		}
		if strings.Contains(got, u) {
			t.Errorf("%s: the URL was logged: %q", u, got)
		}
	}
	select {
	case <-hits:
		t.Fatal("a request reached the internal server")
	default:
	}
}

// A receiver's redirect is not followed (a 3xx is a failed delivery): it
// cannot send the POST on to another target.
func TestEventsDeliveryDoesNotFollowRedirects(t *testing.T) {
	target := newReceiver(t)
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.srv.URL+"/internal", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirect.Close)
	got := notPosted(t, eventsChannel(redirect.URL+"/e"), channel.EventSinkConfig{AllowPrivate: true})
	if !strings.Contains(got, "attempts=1 ") || !strings.Contains(got, "status 307") {
		t.Fatalf("logged %q", got)
	}
	target.mu.Lock()
	defer target.mu.Unlock()
	if len(target.got) != 0 {
		t.Fatalf("the redirect was followed: %d requests", len(target.got))
	}
}
