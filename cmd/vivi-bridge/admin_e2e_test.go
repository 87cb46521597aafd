package main

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/twiliotest"
)

func adminDo(t *testing.T, method, u, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+e2eAdmin)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAdminChangesRouteOnEveryPod: channels changed through the admin API
// on pod A route (or stop routing) signed webhooks answered by pod B at once.
func TestAdminChangesRouteOnEveryPod(t *testing.T) {
	e := newE2E(t, realtimetest.Options{})
	a := e.start("pod-a")
	e.start("pod-b")
	e.route("pod-b") // Twilio reaches pod B; the operator talks to pod A
	to := "sip:3001@vivi.sip.twilio.com;transport=tls"

	wantVoice := func(ip, verb, reason string) {
		t.Helper()
		status, doc, body := e.voice(twiliotest.NewCallSID(), ip, to, true)
		switch {
		case status != 200:
			t.Fatalf("status %d: %s", status, body)
		case verb == "Connect" && doc.Connect == nil, verb == "Reject" && (doc.Reject == nil || doc.Reject.Reason != reason):
			t.Fatalf("want %s %s, got %s", verb, reason, body)
		}
	}
	wantVoice("198.51.100.7", "Reject", "rejected")

	status, body := adminDo(t, "POST", a.url+"/v1/channels",
		`{"id":"new-pbx","name":"New PBX","originHost":"198.51.100.7","extensions":["3001"],"agentId":"reception"}`)
	if status != http.StatusCreated {
		t.Fatalf("create: %d %s", status, body)
	}
	wantVoice("198.51.100.7", "Connect", "")

	status, body = adminDo(t, "PUT", a.url+"/v1/channels/new-pbx/origin-ips", `{"ips":["198.51.100.8"]}`)
	if status != http.StatusOK {
		t.Fatalf("origin-ips: %d %s", status, body)
	}
	wantVoice("198.51.100.7", "Reject", "rejected")
	wantVoice("198.51.100.8", "Connect", "")

	status, body = adminDo(t, "POST", a.url+"/v1/channels",
		`{"id":"overlap","name":"Overlap","originHost":"198.51.100.8","extensions":["3001"],"agentId":"reception"}`)
	if status != http.StatusConflict || !strings.Contains(body, "channel_conflict") {
		t.Fatalf("overlap: %d %s", status, body)
	}

	if status, body = adminDo(t, "DELETE", a.url+"/v1/channels/new-pbx", ``); status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", status, body)
	}
	wantVoice("198.51.100.8", "Reject", "rejected")
}

// TestServeSyncsIPACL: with TWILIO_SIP_DOMAIN_SID set, serve keeps the SIP
// Domain's IP access control list equal to the channels' origin IPs, from
// CONFIG_FILE at start and after each admin change.
func TestServeSyncsIPACL(t *testing.T) {
	const domain = "SD0123456789abcdef0123456789abcdef"
	e := newE2E(t, realtimetest.Options{})
	sip := twiliotest.NewSIP(e.tw.REST())
	e.domainSID = domain
	a := e.start("pod-a")
	want := []string{"203.0.113.10", "203.0.113.20", "203.0.113.30", "203.0.113.40"}
	lists := sip.Lists("vivi-" + domain)
	if len(lists) != 1 || !slices.Equal(sip.IPs(lists[0]), want) || !slices.Equal(sip.Mapped(domain), lists) {
		t.Fatalf("after CONFIG_FILE: lists %v mapped %v", lists, sip.Mapped(domain))
	}
	status, body := adminDo(t, "PUT", a.url+"/v1/channels/no-agent/origin-ips", `{"ips":["198.51.100.9"]}`)
	if status != http.StatusOK || !strings.Contains(body, `"aclSync":{"status":"ok"}`) {
		t.Fatalf("origin-ips: %d %s", status, body)
	}
	want = []string{"198.51.100.9", "203.0.113.10", "203.0.113.20", "203.0.113.30"}
	if got := sip.IPs(lists[0]); !slices.Equal(got, want) {
		t.Fatalf("IPs %v, want %v", got, want)
	}
}
