package delivery_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/delivery"
	"github.com/vivi/bridge/internal/testwait"
	"github.com/vivi/bridge/store"
)

// parkedReason runs a deliverer with the default client over a memory
// store holding ch, and returns the reason its one event was parked for.
func parkedReason(t *testing.T, ch channel.Channel, cfg delivery.Config) string {
	t.Helper()
	st := memEnv(t, ch)
	cfg.Outbox, cfg.Channels, cfg.Consumer = st, st, "pod-a"
	cfg.Horizon = time.Millisecond                                       // a failure is parked at once
	cfg.LeaseTTL, cfg.Renew = 300*time.Millisecond, 100*time.Millisecond // settled in 2.1 s
	run(t, delivery.New(cfg))
	placeCall(t, st, "CA1", ch.ID, 1)
	var parked []store.ParkedEntry
	testwait.Until(t, 10*time.Second, "the event parked", func() bool {
		parked, _ = st.Parked(context.Background(), 10)
		return len(parked) > 0
	})
	return parked[0].Reason
}

// At delivery every address a name resolves to is checked before it is
// dialled: a name that resolves to loopback (DNS rebinding after
// validation) is refused without a request reaching the internal server,
// and parked at once; a stored literal or http URL is held to the policy
// too. The URL is not in the reason.
func TestDeliveryRefusesInternalAddresses(t *testing.T) {
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
		t.Run(u, func(t *testing.T) {
			got := parkedReason(t, eventsChannel("pbx", u), delivery.Config{Resolver: dns.resolver()})
			if !strings.HasPrefix(got, "target refused: ") || strings.Contains(got, u) {
				t.Errorf("parked for %q", got)
			}
		})
	}
	select {
	case <-hits:
		t.Fatal("a request reached the internal server")
	default:
	}
}

// A receiver's redirect is not followed (a 3xx is a failed delivery).
func TestDeliveryDoesNotFollowRedirects(t *testing.T) {
	target := newReceiver(nil)
	tsrv := httptest.NewServer(target)
	t.Cleanup(tsrv.Close)
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, tsrv.URL+"/internal", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirect.Close)
	got := parkedReason(t, eventsChannel("pbx", redirect.URL+"/e"), delivery.Config{AllowPrivate: true})
	if got != "retry horizon: last status 307" {
		t.Fatalf("parked for %q", got)
	}
	if n := len(target.requests()); n != 0 {
		t.Fatalf("the redirect was followed: %d requests", n)
	}
}
