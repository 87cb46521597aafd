package channel_test

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/twiliotest"
)

// changeAnswer is what the admin API answers to a channel change: the
// channel, and the sync status beside its fields.
type changeAnswer struct {
	channel.Channel
	ACLSync channel.ACLStatus `json:"aclSync"`
}

// TestACLSyncThroughAPI changes channels through the admin API and checks,
// after each change, that Twilio's list holds exactly the channels' origin
// IPs and that the answer reports the sync.
func TestACLSyncThroughAPI(t *testing.T) {
	e := newACLEnv(t, aclOptions{})
	e.dns.setA("pbx.acme.test", "192.0.2.7")
	beta := baseChannel()
	beta.ID, beta.OriginHost, beta.Extensions = "beta", "198.51.100.5", []string{"2001"}

	steps := []struct {
		name         string
		method, path string
		body         any
		status       int
		want         []string // IPs in Twilio's list afterwards
	}{
		{"create acme", "POST", "/v1/channels", baseChannel(), 201, []string{"203.0.113.10"}},
		{"create beta", "POST", "/v1/channels", beta, 201, []string{"198.51.100.5", "203.0.113.10"}},
		{"beta takes acme's IP too", "PUT", "/v1/channels/beta/origin-ips",
			map[string]any{"ips": []string{"203.0.113.10", "198.51.100.6"}}, 200, []string{"198.51.100.6", "203.0.113.10"}},
		{"acme moves; the shared IP stays", "PATCH", "/v1/channels/acme", map[string]any{"originHost": "pbx.acme.test"}, 200,
			[]string{"192.0.2.7", "198.51.100.6", "203.0.113.10"}},
		{"patch without IP change", "PATCH", "/v1/channels/acme", map[string]any{"name": "Renamed"}, 200,
			[]string{"192.0.2.7", "198.51.100.6", "203.0.113.10"}},
		{"delete beta", "DELETE", "/v1/channels/beta", nil, 204, []string{"192.0.2.7"}},
		{"delete acme", "DELETE", "/v1/channels/acme", nil, 204, nil},
	}
	for i, st := range steps {
		before := len(e.rest.Requests())
		status, hdr, body := e.call(st.method, st.path, st.body)
		if status != st.status {
			t.Fatalf("%s: %s %s = %d %s", st.name, st.method, st.path, status, body)
		}
		if got := hdr.Get(channel.ACLSyncHeader); got != "ok" {
			t.Errorf("%s: %s = %q; want ok", st.name, channel.ACLSyncHeader, got)
		}
		if status != http.StatusNoContent {
			if got := decodeJSON[changeAnswer](t, body); got.ACLSync != (channel.ACLStatus{Status: channel.ACLSyncOK}) {
				t.Errorf("%s: aclSync = %+v; want ok", st.name, got.ACLSync)
			}
		}
		wantInSync(t, e.sip, st.want...)
		writes := sipRequests(e.rest, before, false)
		switch i {
		case 0: // list created, mapped, IP added: in that order
			wantWrites(t, writes, []string{
				"POST /SIP/IpAccessControlLists.json FriendlyName=" + aclList,
				"POST /SIP/Domains/" + aclDomain + "/Auth/Calls/IpAccessControlListMappings.json IpAccessControlListSid=" + theList(t, e.sip),
				"POST /SIP/IpAccessControlLists/" + theList(t, e.sip) + "/IpAddresses.json FriendlyName=vivi: acme IpAddress=203.0.113.10",
			})
		case 2: // one added, one removed
			wantWrites(t, writes, []string{
				"DELETE /SIP/IpAccessControlLists/" + theList(t, e.sip) + "/IpAddresses/*",
				"POST /SIP/IpAccessControlLists/" + theList(t, e.sip) + "/IpAddresses.json FriendlyName=vivi: beta IpAddress=198.51.100.6",
			})
		case 4: // in sync already: reads only
			wantWrites(t, writes, nil)
		}
	}

	// Twilio in sync: a sync only reads (lists, mappings, IPs).
	before := len(e.rest.Requests())
	res, err := e.sync.Sync(context.Background())
	if err != nil || len(res.Added)+len(res.Removed) != 0 || res.ListSID != theList(t, e.sip) {
		t.Fatalf("Sync in sync = %+v, %v", res, err)
	}
	if all := sipRequests(e.rest, before, true); len(all) != 3 {
		t.Errorf("a sync with nothing to do sent %d requests; want 3 reads", len(all))
	}
	for _, r := range e.rest.Requests() {
		if r.BasicUser != aclAccount || r.Status >= 400 {
			t.Errorf("request %s %s: user %q status %d", r.Method, r.Path, r.BasicUser, r.Status)
		}
	}
}

// TestACLSyncKeepsChannelJSON: the answer to a change holds the channel's
// own fields unchanged, with aclSync beside them.
func TestACLSyncKeepsChannelJSON(t *testing.T) {
	e := newACLEnv(t, aclOptions{})
	status, _, created := e.call("POST", "/v1/channels", baseChannel())
	if status != http.StatusCreated {
		t.Fatalf("POST = %d %s", status, created)
	}
	_, _, fetched := e.call("GET", "/v1/channels/acme", nil)
	got := decodeJSON[map[string]json.RawMessage](t, created)
	if string(got["aclSync"]) != `{"status":"ok"}` {
		t.Errorf("aclSync = %s", got["aclSync"])
	}
	delete(got, "aclSync")
	if want := decodeJSON[map[string]json.RawMessage](t, fetched); !reflect.DeepEqual(got, want) {
		t.Errorf("create answer without aclSync\n%s\ndiffers from GET\n%s", created, fetched)
	}
}

// TestACLSyncFailureIsRetried: when Twilio fails, the channel change is
// stored and answered as usual with the failure reported, it is logged,
// and the background loop brings Twilio in sync later.
func TestACLSyncFailureIsRetried(t *testing.T) {
	e := newACLEnv(t, aclOptions{retryMin: 10 * time.Millisecond, retryMax: 40 * time.Millisecond})
	runSync(t, e.sync)
	// Run reconciles at once. A Sync after that reconcile began waits for
	// it to end (they take turns), so that the failures below are not
	// shared with it.
	waitFor(t, "the first reconcile", func() bool { return len(e.sip.Mapped(aclDomain)) == 1 })
	if _, err := e.sync.Sync(context.Background()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	wantInSync(t, e.sip)

	e.sip.FailNext(3) // the API's sync and the first two retries
	status, hdr, body := e.call("POST", "/v1/channels", baseChannel())
	if status != http.StatusCreated {
		t.Fatalf("POST = %d %s", status, body)
	}
	got := decodeJSON[changeAnswer](t, body)
	if got.ID != "acme" || got.ACLSync.Status != channel.ACLSyncFailed || !strings.Contains(got.ACLSync.Error, "20500") {
		t.Errorf("answer = %s; want the channel with aclSync failed", body)
	}
	if h := hdr.Get(channel.ACLSyncHeader); !strings.HasPrefix(h, "failed: ") || !strings.Contains(h, "20500") {
		t.Errorf("%s = %q", channel.ACLSyncHeader, h)
	}
	if _, err := e.store.Channel(context.Background(), "acme"); err != nil {
		t.Fatalf("the channel was not stored: %v", err)
	}
	if n := e.logs.FilterMessageSnippet("IP allow list sync failed").Len(); n != 1 {
		t.Errorf("%d failure logs from the API's sync; want 1", n)
	}

	waitFor(t, "the retries to sync Twilio", func() bool {
		lists := e.sip.Lists(aclList)
		return len(lists) == 1 && reflect.DeepEqual(e.sip.IPs(lists[0]), []string{"203.0.113.10"})
	})
	wantInSync(t, e.sip, "203.0.113.10")
	failures := 0
	for _, r := range e.rest.Requests() {
		if r.Status == http.StatusInternalServerError {
			failures++
		}
	}
	if failures != 3 {
		t.Errorf("%d failed requests; want 3", failures)
	}
	if n := e.logs.FilterMessageSnippet("sync failed; retrying").Len(); n != 2 {
		t.Errorf("%d failed retries logged; want 2", n)
	}
}

// TestACLSyncDisabled: without an allow list (no TWILIO_SIP_DOMAIN_SID)
// nothing is synced and the status says so.
func TestACLSyncDisabled(t *testing.T) {
	e := newEnv(t)
	status, body := e.do("POST", "/v1/channels", baseChannel())
	if got := decodeJSON[changeAnswer](t, body); status != http.StatusCreated || got.ACLSync != (channel.ACLStatus{Status: channel.ACLSyncDisabled}) {
		t.Fatalf("POST = %d %s", status, body)
	}
	a := &aclEnv{env: e}
	if _, hdr, _ := a.call("DELETE", "/v1/channels/acme", nil); hdr.Get(channel.ACLSyncHeader) != "disabled" {
		t.Errorf("DELETE %s = %q", channel.ACLSyncHeader, hdr.Get(channel.ACLSyncHeader))
	}
	e.dns.setA("pbx.acme.test", "198.51.100.20")
	res, err := e.prov.Apply(context.Background(), mustParse(t, goodYAML))
	if err != nil || res.ACLSync == nil || res.ACLSync.Status != channel.ACLSyncDisabled {
		t.Fatalf("Apply = %+v, %v", res, err)
	}
	if _, err := channel.NewACLSync(channel.ACLSyncConfig{Channels: e.store}); err == nil {
		t.Error("NewACLSync without an API and a domain succeeded")
	}
}

// TestACLSyncApply: the YAML apply syncs too, and applying again changes
// nothing at Twilio.
func TestACLSyncApply(t *testing.T) {
	e := newACLEnv(t, aclOptions{})
	e.dns.setA("pbx.acme.test", "198.51.100.20", "198.51.100.21")
	res, err := e.prov.Apply(context.Background(), mustParse(t, goodYAML))
	if err != nil || res.ACLSync == nil || *res.ACLSync != (channel.ACLStatus{Status: channel.ACLSyncOK}) {
		t.Fatalf("Apply = %+v, %v", res, err)
	}
	wantInSync(t, e.sip, "192.0.2.20", "192.0.2.21", "198.51.100.20", "198.51.100.21")
	before := len(e.rest.Requests())
	if _, err := e.prov.Apply(context.Background(), mustParse(t, goodYAML)); err != nil {
		t.Fatal(err)
	}
	wantWrites(t, sipRequests(e.rest, before, false), nil)
}

// wantWrites compares requests with want, each "METHOD path-after-the-account
// form..." (form fields sorted by key); a trailing * matches any rest of the path.
func wantWrites(t *testing.T, got []twiliotest.RESTRequest, want []string) {
	t.Helper()
	var lines []string
	for _, r := range got {
		_, rest, _ := strings.Cut(r.Path, "/Accounts/"+aclAccount)
		line := r.Method + " " + rest
		for _, k := range slices.Sorted(maps.Keys(r.Form)) {
			line += " " + k + "=" + r.Form.Get(k)
		}
		lines = append(lines, line)
	}
	ok := len(lines) == len(want)
	for i := 0; ok && i < len(want); i++ {
		if prefix, wild := strings.CutSuffix(want[i], "*"); wild {
			ok = strings.HasPrefix(lines[i], prefix)
		} else {
			ok = lines[i] == want[i]
		}
	}
	if !ok {
		t.Errorf("SIP writes:\n  %s\nwant:\n  %s", strings.Join(lines, "\n  "), strings.Join(want, "\n  "))
	}
}
