package channel_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/internal/testwait"
	"github.com/vivi/bridge/store"
	"github.com/vivi/bridge/transfer"
	"github.com/vivi/bridge/twiliotest"
)

// Credentials of the REST fake (twilio-go wants them alphanumeric) and the
// SIP Domain whose list is synced.
const (
	aclAccount = "ACtest"
	aclToken   = "token123"
	aclDomain  = "SD0123456789abcdef0123456789abcdef"
	aclList    = "vivi-" + aclDomain
)

// aclEnv is env (the admin API over a memory store) with the IP ACL sync
// wired to the Twilio REST fake and its SIP endpoints.
type aclEnv struct {
	*env
	rest *twiliotest.REST
	sip  *twiliotest.SIP
	sync *channel.ACLSync
	logs *observer.ObservedLogs
}

// aclOptions tunes newACLEnv; zero values are fine.
type aclOptions struct {
	retryMin, retryMax time.Duration
}

func newACLEnv(t *testing.T, opts aclOptions) *aclEnv {
	t.Helper()
	rest, sip := newSIPFake(t)
	core, logs := observer.New(zap.InfoLevel)
	log := zap.New(core)
	e := &aclEnv{env: &env{t: t, store: store.NewMemory(store.Options{}), dns: startDNS(t)}, rest: rest, sip: sip, logs: logs}
	e.sync = newACLSync(t, rest, e.store, channel.ACLSyncConfig{
		RetryMin: opts.retryMin, RetryMax: opts.retryMax, Logger: log,
	})
	prov, err := channel.NewProvisioner(channel.ProvisionerConfig{
		Repo:      e.store,
		Resolver:  &channel.Resolver{R: e.dns.resolver(), Timeout: 2 * time.Second},
		SIPDomain: testSIPDomain,
		Logger:    log,
		AllowList: e.sync,
	})
	if err != nil {
		t.Fatalf("NewProvisioner: %v", err)
	}
	e.prov = prov
	mux := http.NewServeMux()
	channel.NewAPI(channel.APIConfig{AdminToken: testToken}, prov).Register(mux)
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	return e
}

// newSIPFake starts the Twilio REST fake with the SIP endpoints.
func newSIPFake(t *testing.T) (*twiliotest.REST, *twiliotest.SIP) {
	t.Helper()
	rest := twiliotest.NewREST(twiliotest.RESTOptions{AccountSID: aclAccount, AuthToken: aclToken})
	t.Cleanup(rest.Close)
	return rest, twiliotest.NewSIP(rest)
}

// newACLSync builds an ACLSync the way cmd does: twilio-go through
// transfer.NewRESTClient, pointed at the fake. cfg gives the tuning; the
// periodic reconcile is an hour away unless cfg says otherwise.
func newACLSync(t *testing.T, rest *twiliotest.REST, channels channel.ChannelLister, cfg channel.ACLSyncConfig) *channel.ACLSync {
	t.Helper()
	rc, err := transfer.NewRESTClient(transfer.TwilioConfig{
		AccountSID: aclAccount, AuthToken: aclToken, BaseURL: rest.URL(), Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("NewRESTClient: %v", err)
	}
	cfg.API, cfg.DomainSID, cfg.Channels = rc.Api, aclDomain, channels
	if cfg.Interval == 0 {
		cfg.Interval = time.Hour
	}
	s, err := channel.NewACLSync(cfg)
	if err != nil {
		t.Fatalf("NewACLSync: %v", err)
	}
	return s
}

// runSync runs s.Run until the test ends, and waits for it to return.
func runSync(t *testing.T, s *channel.ACLSync) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// channelsFunc is a ChannelLister made of a function.
type channelsFunc func(ctx context.Context) ([]channel.Channel, error)

func (f channelsFunc) Channels(ctx context.Context) ([]channel.Channel, error) { return f(ctx) }

// theList returns the SID of the one list the sync owns.
func theList(t *testing.T, sip *twiliotest.SIP) string {
	t.Helper()
	lists := sip.Lists(aclList)
	if len(lists) != 1 {
		t.Fatalf("lists called %s: %v; want exactly one", aclList, lists)
	}
	return lists[0]
}

// wantInSync checks that Twilio holds exactly want (sorted) in the one
// list, mapped once to the domain.
func wantInSync(t *testing.T, sip *twiliotest.SIP, want ...string) {
	t.Helper()
	list := theList(t, sip)
	if got := sip.Mapped(aclDomain); !reflect.DeepEqual(got, []string{list}) {
		t.Errorf("lists mapped to the domain: %v; want [%s]", got, list)
	}
	got := sip.IPs(list)
	if len(want) == 0 {
		want = []string{}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("IPs in the list: %v; want %v", got, want)
	}
}

// sipRequests returns the SIP requests the REST fake recorded after the
// first skip requests; writes only, unless withReads.
func sipRequests(rest *twiliotest.REST, skip int, withReads bool) []twiliotest.RESTRequest {
	var out []twiliotest.RESTRequest
	for _, r := range rest.Requests()[skip:] {
		if strings.Contains(r.Path, "/SIP/") && (withReads || r.Method != http.MethodGet) {
			out = append(out, r)
		}
	}
	return out
}

// waitFor waits up to 5 s for cond, state read back from the REST fake
// and the store (see testwait.Until).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.Until(t, 5*time.Second, what, cond)
}

// call sends an authorized JSON request to the admin API and returns the
// status, the headers and the body.
func (e *aclEnv) call(method, path string, body any) (int, http.Header, []byte) {
	e.t.Helper()
	var r io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			e.t.Fatalf("marshal: %v", err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, e.srv.URL+path, r)
	if err != nil {
		e.t.Fatalf("request: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("read body: %v", err)
	}
	return resp.StatusCode, resp.Header, data
}
