package twiliotest

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// sipBase is the prefix of every SIP resource under an account.
const sipBase = "/2010-04-01/Accounts/{AccountSid}/SIP/"

// Twilio's limit on entries in one IpAccessControlList.
const maxSIPListEntries = 100

// SIP is a stateful fake of the Twilio SIP IP access control endpoints,
// served by a REST fake (see NewSIP): IpAccessControlLists (list, create,
// fetch, delete), their IpAddresses (list, create, fetch, delete) and a SIP
// Domain's Auth/Calls/IpAccessControlListMappings (list, create, fetch,
// delete). Answers have Twilio's JSON shapes, which twilio-go decodes:
// resources with sid, friendly_name, ip_address, ...; lists paged
// (PageSize, Page, next_page_uri) under the keys ip_access_control_lists,
// ip_addresses and contents. Every domain SID is accepted. Requests are
// recorded by the REST fake like any other.
type SIP struct {
	account string

	mu       sync.Mutex
	lists    []*sipList          // in creation order
	mappings map[string][]string // domain SID -> mapped list SIDs, in mapping order
	failNext int
}

type sipList struct {
	sid, name, created string
	ips                []sipIP // in creation order
}

type sipIP struct {
	sid, name, ip, created string
	cidr                   int
}

// NewSIP adds the SIP endpoints to r and returns their state.
func NewSIP(r *REST) *SIP {
	s := &SIP{account: r.opts.AccountSID, mappings: map[string][]string{}}
	routes := []struct {
		pattern string
		h       http.HandlerFunc
	}{
		{sipBase + "IpAccessControlLists.json", s.serveLists},
		{sipBase + "IpAccessControlLists/{file}", s.serveList},
		{sipBase + "IpAccessControlLists/{ListSid}/IpAddresses.json", s.serveIPs},
		{sipBase + "IpAccessControlLists/{ListSid}/IpAddresses/{file}", s.serveIP},
		{sipBase + "Domains/{DomainSid}/Auth/Calls/IpAccessControlListMappings.json", s.serveMappings},
		{sipBase + "Domains/{DomainSid}/Auth/Calls/IpAccessControlListMappings/{file}", s.serveMapping},
	}
	for _, rt := range routes {
		r.SetHandler(rt.pattern, s.guard(rt.h))
	}
	return s
}

// FailNext makes the next n SIP requests fail with 500 (code 20500) and
// change nothing.
func (s *SIP) FailNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext = n
}

// IPs returns the addresses in the list listSID, sorted (nil for an unknown list).
func (s *SIP) IPs(listSID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.findList(listSID)
	if l == nil {
		return nil
	}
	out := make([]string, 0, len(l.ips))
	for _, e := range l.ips {
		out = append(out, e.ip)
	}
	slices.Sort(out)
	return out
}

// Lists returns the SIDs of the lists called friendlyName, in creation order.
func (s *SIP) Lists(friendlyName string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range s.lists {
		if l.name == friendlyName {
			out = append(out, l.sid)
		}
	}
	return out
}

// Mapped returns the SIDs of the lists mapped to the domain for calls, in
// mapping order.
func (s *SIP) Mapped(domainSID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.mappings[domainSID])
}

// CreateList adds an empty list, as if created through the API (for tests
// that start from an existing state), and returns its SID.
func (s *SIP) CreateList(friendlyName string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.createList(friendlyName).sid
}

// AddIP adds ip to the list listSID, as if created through the API, and
// returns the entry's SID ("" for an unknown list).
func (s *SIP) AddIP(listSID, ip string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.findList(listSID)
	if l == nil {
		return ""
	}
	e := sipIP{sid: "IP" + randomHex(), name: ip, ip: ip, cidr: 32, created: twilioDate()}
	l.ips = append(l.ips, e)
	return e.sid
}

// RemoveIP removes ip from the list listSID, as if deleted through the API,
// and reports whether it was there.
func (s *SIP) RemoveIP(listSID, ip string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.findList(listSID)
	if l == nil {
		return false
	}
	n := len(l.ips)
	l.ips = slices.DeleteFunc(l.ips, func(e sipIP) bool { return e.ip == ip })
	return len(l.ips) < n
}

// guard checks the account and answers an injected failure.
func (s *SIP) guard(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		if req.PathValue("AccountSid") != s.account {
			notFound(w, req)
			return
		}
		s.mu.Lock()
		fail := s.failNext > 0
		if fail {
			s.failNext--
		}
		s.mu.Unlock()
		if fail {
			writeError(w, http.StatusInternalServerError, 20500, "Internal server error")
			return
		}
		h(w, req)
	}
}

// createList adds a list; the caller holds s.mu.
func (s *SIP) createList(name string) *sipList {
	l := &sipList{sid: "AL" + randomHex(), name: name, created: twilioDate()}
	s.lists = append(s.lists, l)
	return l
}

// findList returns the list sid or nil; the caller holds s.mu.
func (s *SIP) findList(sid string) *sipList {
	for _, l := range s.lists {
		if l.sid == sid {
			return l
		}
	}
	return nil
}

func (s *SIP) accountURI() string { return "/2010-04-01/Accounts/" + s.account }

func (s *SIP) listJSON(l *sipList) map[string]any {
	uri := s.accountURI() + "/SIP/IpAccessControlLists/" + l.sid
	return map[string]any{
		"sid": l.sid, "account_sid": s.account, "friendly_name": l.name,
		"date_created": l.created, "date_updated": l.created,
		"subresource_uris": map[string]string{"ip_addresses": uri + "/IpAddresses.json"},
		"uri":              uri + ".json",
	}
}

func (s *SIP) ipJSON(l *sipList, e sipIP) map[string]any {
	return map[string]any{
		"sid": e.sid, "account_sid": s.account, "friendly_name": e.name, "ip_address": e.ip,
		"cidr_prefix_length": e.cidr, "ip_access_control_list_sid": l.sid,
		"date_created": e.created, "date_updated": e.created,
		"uri": s.accountURI() + "/SIP/IpAccessControlLists/" + l.sid + "/IpAddresses/" + e.sid + ".json",
	}
}

// mappingJSON is a domain's mapping of l: its SID is the list's.
func (s *SIP) mappingJSON(domain string, l *sipList) map[string]any {
	return map[string]any{
		"sid": l.sid, "account_sid": s.account, "friendly_name": l.name,
		"date_created": l.created, "date_updated": l.created,
		"uri": s.accountURI() + "/SIP/Domains/" + domain + "/Auth/Calls/IpAccessControlListMappings/" + l.sid + ".json",
	}
}

// writePage answers one page of items under key, in Twilio's paged list
// shape; next_page_uri leads to the next page (twilio-go follows it).
func writePage(w http.ResponseWriter, req *http.Request, key string, items []any) {
	q := req.URL.Query()
	size, err := strconv.Atoi(q.Get("PageSize"))
	if err != nil || size < 1 {
		size = 50
	}
	size = min(size, 1000)
	page, err := strconv.Atoi(q.Get("Page"))
	if err != nil || page < 0 {
		page = 0
	}
	start := min(page*size, len(items))
	end := min(start+size, len(items))
	pageURI := func(p int) string { return fmt.Sprintf("%s?PageSize=%d&Page=%d", req.URL.Path, size, p) }
	body := map[string]any{
		key:                 items[start:end],
		"page":              page,
		"page_size":         size,
		"start":             start,
		"end":               max(end-1, start),
		"uri":               pageURI(page),
		"first_page_uri":    pageURI(0),
		"next_page_uri":     nil,
		"previous_page_uri": nil,
	}
	if end < len(items) {
		body["next_page_uri"] = pageURI(page+1) + "&PageToken=PA" + strconv.Itoa(end)
	}
	if page > 0 {
		body["previous_page_uri"] = pageURI(page - 1)
	}
	writeJSON(w, http.StatusOK, body)
}

// requireForm returns the form value key, or answers 400 when it is
// empty. Parameter errors carry the generic code 400 ("Bad Request"): the
// fake does not claim to know Twilio's specific codes for them.
func requireForm(w http.ResponseWriter, req *http.Request, key string) (string, bool) {
	if err := req.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, 20001, "Invalid form body")
		return "", false
	}
	v := req.PostForm.Get(key)
	if v == "" {
		writeError(w, http.StatusBadRequest, 400, "Missing required parameter "+key+" in the post body")
		return "", false
	}
	return v, true
}

func methodNotAllowed(w http.ResponseWriter) {
	writeError(w, http.StatusMethodNotAllowed, 20004, "Method not allowed")
}

// twilioDate is now in RFC 2822 form, as Twilio writes dates.
func twilioDate() string { return time.Now().UTC().Format(time.RFC1123Z) }
