package twiliotest

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/twilio/twilio-go/client"
	openapi "github.com/twilio/twilio-go/rest/api/v2010"
)

const testDomain = "SD0123456789abcdef0123456789abcdef"

func newTestSIP(t *testing.T) (*REST, *SIP, *openapi.ApiService) {
	t.Helper()
	r := newTestREST(t)
	return r, NewSIP(r), twilioClient(t, r.URL(), testAccount, testToken).Api
}

// wantRESTError checks that err is Twilio's error with status and code.
func wantRESTError(t *testing.T, err error, status, code int) {
	t.Helper()
	var te *client.TwilioRestError
	if !errors.As(err, &te) || te.Status != status || (code != 0 && te.Code != code) {
		t.Fatalf("error %v; want a TwilioRestError %d code %d", err, status, code)
	}
}

// TestSIPWithTwilioGo drives the fake with twilio-go's own SIP functions:
// what they send is understood and what the fake answers decodes.
func TestSIPWithTwilioGo(t *testing.T) {
	r, sip, api := newTestSIP(t)

	l, err := api.CreateSipIpAccessControlList((&openapi.CreateSipIpAccessControlListParams{}).SetFriendlyName("vivi-x"))
	if err != nil || l.Sid == nil || !strings.HasPrefix(*l.Sid, "AL") || len(*l.Sid) != 34 || *l.FriendlyName != "vivi-x" || *l.AccountSid != testAccount {
		t.Fatalf("CreateSipIpAccessControlList = %+v, %v", l, err)
	}
	list := *l.Sid
	if got := sip.Lists("vivi-x"); !slices.Equal(got, []string{list}) {
		t.Errorf("Lists = %v", got)
	}

	for _, ip := range []string{"198.51.100.2", "198.51.100.1"} {
		p := (&openapi.CreateSipIpAddressParams{}).SetIpAddress(ip).SetFriendlyName("pbx " + ip)
		e, err := api.CreateSipIpAddress(list, p)
		if err != nil || *e.IpAddress != ip || *e.FriendlyName != "pbx "+ip || e.CidrPrefixLength != 32 ||
			*e.IpAccessControlListSid != list || !strings.HasPrefix(*e.Sid, "IP") {
			t.Fatalf("CreateSipIpAddress(%s) = %+v, %v", ip, e, err)
		}
	}
	_, err = api.CreateSipIpAddress(list, (&openapi.CreateSipIpAddressParams{}).SetIpAddress("198.51.100.1").SetFriendlyName("again"))
	wantRESTError(t, err, http.StatusBadRequest, 0)
	_, err = api.CreateSipIpAddress(list, (&openapi.CreateSipIpAddressParams{}).SetIpAddress("2001:db8::1").SetFriendlyName("v6"))
	wantRESTError(t, err, http.StatusBadRequest, 0)
	_, err = api.CreateSipIpAddress(list, (&openapi.CreateSipIpAddressParams{}).SetIpAddress("198.51.100.3"))
	wantRESTError(t, err, http.StatusBadRequest, 0) // FriendlyName is required

	ips, err := api.ListSipIpAddress(list, nil)
	if err != nil || len(ips) != 2 {
		t.Fatalf("ListSipIpAddress = %+v, %v", ips, err)
	}
	if err := api.DeleteSipIpAddress(list, *ips[0].Sid, nil); err != nil {
		t.Fatalf("DeleteSipIpAddress: %v", err)
	}
	wantRESTError(t, api.DeleteSipIpAddress(list, *ips[0].Sid, nil), http.StatusNotFound, 20404)
	if got := sip.IPs(list); !slices.Equal(got, []string{"198.51.100.1"}) {
		t.Errorf("IPs after delete = %v", got)
	}

	mp := (&openapi.CreateSipAuthCallsIpAccessControlListMappingParams{}).SetIpAccessControlListSid(list)
	m, err := api.CreateSipAuthCallsIpAccessControlListMapping(testDomain, mp)
	if err != nil || *m.Sid != list || *m.FriendlyName != "vivi-x" {
		t.Fatalf("CreateSipAuthCallsIpAccessControlListMapping = %+v, %v", m, err)
	}
	_, err = api.CreateSipAuthCallsIpAccessControlListMapping(testDomain, mp)
	wantRESTError(t, err, http.StatusBadRequest, 21231)
	_, err = api.CreateSipAuthCallsIpAccessControlListMapping(testDomain,
		(&openapi.CreateSipAuthCallsIpAccessControlListMappingParams{}).SetIpAccessControlListSid("AL"+randomHex()))
	wantRESTError(t, err, http.StatusNotFound, 20404)
	ms, err := api.ListSipAuthCallsIpAccessControlListMapping(testDomain, nil)
	if err != nil || len(ms) != 1 || *ms[0].Sid != list || !slices.Equal(sip.Mapped(testDomain), []string{list}) {
		t.Fatalf("ListSipAuthCallsIpAccessControlListMapping = %+v, %v", ms, err)
	}

	if err := api.DeleteSipAuthCallsIpAccessControlListMapping(testDomain, list, nil); err != nil {
		t.Fatalf("DeleteSipAuthCallsIpAccessControlListMapping: %v", err)
	}
	if err := api.DeleteSipIpAccessControlList(list, nil); err != nil {
		t.Fatalf("DeleteSipIpAccessControlList: %v", err)
	}
	if len(sip.Lists("vivi-x")) != 0 || len(sip.Mapped(testDomain)) != 0 || sip.IPs(list) != nil {
		t.Errorf("state after deletes: lists %v mapped %v", sip.Lists("vivi-x"), sip.Mapped(testDomain))
	}
	for _, req := range r.Requests() {
		if req.BasicUser != testAccount {
			t.Errorf("%s %s without the account's Basic auth", req.Method, req.Path)
		}
	}
}

// TestSIPPaging: lists are paged as Twilio pages them and twilio-go
// follows next_page_uri to the end.
func TestSIPPaging(t *testing.T) {
	r, sip, api := newTestSIP(t)
	for i := range 5 {
		sip.CreateList(fmt.Sprintf("list-%d", i))
	}
	lists, err := api.ListSipIpAccessControlList((&openapi.ListSipIpAccessControlListParams{}).SetPageSize(2))
	if err != nil || len(lists) != 5 {
		t.Fatalf("ListSipIpAccessControlList = %d lists, %v", len(lists), err)
	}
	for i, l := range lists {
		if *l.FriendlyName != fmt.Sprintf("list-%d", i) {
			t.Errorf("lists[%d] = %s", i, *l.FriendlyName)
		}
	}
	var pages []string
	for _, req := range r.Requests() {
		pages = append(pages, req.Query.Get("Page"))
	}
	if !slices.Equal(pages, []string{"", "1", "2"}) {
		t.Errorf("pages requested %q; want the first and two next pages", pages)
	}
	page, err := api.PageSipIpAccessControlList((&openapi.ListSipIpAccessControlListParams{}).SetPageSize(2), "", "2")
	if err != nil || len(page.IpAccessControlLists) != 1 || page.NextPageUri != nil || page.Page != 2 || page.PreviousPageUri == nil {
		t.Errorf("last page = %+v, %v", page, err)
	}
}

// TestSIPFailNext: injected failures are Twilio's 500s and change nothing.
func TestSIPFailNext(t *testing.T) {
	_, sip, api := newTestSIP(t)
	sip.FailNext(2)
	p := (&openapi.CreateSipIpAccessControlListParams{}).SetFriendlyName("vivi-x")
	for range 2 {
		_, err := api.CreateSipIpAccessControlList(p)
		wantRESTError(t, err, http.StatusInternalServerError, 20500)
	}
	if len(sip.Lists("vivi-x")) != 0 {
		t.Fatal("a failed request changed the state")
	}
	if _, err := api.CreateSipIpAccessControlList(p); err != nil {
		t.Fatalf("the third request failed too: %v", err)
	}
	if len(sip.Lists("vivi-x")) != 1 {
		t.Fatal("the list was not created")
	}
}

// TestSIPOtherAccount: another account's paths are not found, and wrong
// credentials are refused before the SIP handlers.
func TestSIPOtherAccount(t *testing.T) {
	r, _, _ := newTestSIP(t)
	other := twilioClient(t, r.URL(), "ACother", testToken).Api
	_, err := other.ListSipIpAccessControlList(nil)
	wantRESTError(t, err, http.StatusUnauthorized, 20003)
	theirs := (&openapi.ListSipIpAccessControlListParams{}).SetPathAccountSid("ACother")
	_, err = twilioClient(t, r.URL(), testAccount, testToken).Api.ListSipIpAccessControlList(theirs)
	wantRESTError(t, err, http.StatusNotFound, 20404)
}
