package twiliotest

import (
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// The handlers of the SIP fake's routes (see NewSIP). Each takes s.mu for
// the state it reads or changes.

func (s *SIP) serveLists(w http.ResponseWriter, req *http.Request) {
	switch req.Method {
	case http.MethodGet:
		s.mu.Lock()
		items := make([]any, 0, len(s.lists))
		for _, l := range s.lists {
			items = append(items, s.listJSON(l))
		}
		s.mu.Unlock()
		writePage(w, req, "ip_access_control_lists", items)
	case http.MethodPost:
		name, ok := requireForm(w, req, "FriendlyName")
		if !ok {
			return
		}
		s.mu.Lock()
		l := s.createList(name)
		body := s.listJSON(l)
		s.mu.Unlock()
		writeJSON(w, http.StatusCreated, body)
	default:
		methodNotAllowed(w)
	}
}

func (s *SIP) serveList(w http.ResponseWriter, req *http.Request) {
	sid, _ := strings.CutSuffix(req.PathValue("file"), ".json")
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.findList(sid)
	if l == nil {
		notFound(w, req)
		return
	}
	switch req.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, s.listJSON(l))
	case http.MethodDelete:
		s.lists = slices.DeleteFunc(s.lists, func(x *sipList) bool { return x == l })
		for d, m := range s.mappings {
			s.mappings[d] = slices.DeleteFunc(m, func(x string) bool { return x == sid })
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		methodNotAllowed(w)
	}
}

func (s *SIP) serveIPs(w http.ResponseWriter, req *http.Request) {
	listSID := req.PathValue("ListSid")
	var form struct{ name, ip string }
	if req.Method == http.MethodPost {
		var ok bool
		if form.name, ok = requireForm(w, req, "FriendlyName"); !ok {
			return
		}
		if form.ip, ok = requireForm(w, req, "IpAddress"); !ok {
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.findList(listSID)
	if l == nil {
		notFound(w, req)
		return
	}
	switch req.Method {
	case http.MethodGet:
		items := make([]any, 0, len(l.ips))
		for _, e := range l.ips {
			items = append(items, s.ipJSON(l, e))
		}
		writePage(w, req, "ip_addresses", items)
	case http.MethodPost:
		addr, err := netip.ParseAddr(form.ip)
		if err != nil || !addr.Is4() {
			writeError(w, http.StatusBadRequest, 400, "IpAddress "+form.ip+" is not a valid IPv4 address")
			return
		}
		cidr := 32
		if v := req.PostForm.Get("CidrPrefixLength"); v != "" {
			if cidr, err = strconv.Atoi(v); err != nil || cidr < 0 || cidr > 32 {
				writeError(w, http.StatusBadRequest, 400, "CidrPrefixLength must be 0-32")
				return
			}
		}
		if slices.ContainsFunc(l.ips, func(e sipIP) bool { return e.ip == form.ip }) {
			// Twilio's answer to a duplicate is unconfirmed: clients
			// should not depend on its code.
			writeError(w, http.StatusBadRequest, 400, "IpAddress "+form.ip+" already exists in this IpAccessControlList")
			return
		}
		if len(l.ips) >= maxSIPListEntries {
			writeError(w, http.StatusBadRequest, 400, "An IpAccessControlList holds at most 100 entries")
			return
		}
		e := sipIP{sid: "IP" + randomHex(), name: form.name, ip: form.ip, cidr: cidr, created: twilioDate()}
		l.ips = append(l.ips, e)
		writeJSON(w, http.StatusCreated, s.ipJSON(l, e))
	default:
		methodNotAllowed(w)
	}
}

func (s *SIP) serveIP(w http.ResponseWriter, req *http.Request) {
	sid, _ := strings.CutSuffix(req.PathValue("file"), ".json")
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.findList(req.PathValue("ListSid"))
	i := -1
	if l != nil {
		i = slices.IndexFunc(l.ips, func(e sipIP) bool { return e.sid == sid })
	}
	if i < 0 {
		notFound(w, req)
		return
	}
	switch req.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, s.ipJSON(l, l.ips[i]))
	case http.MethodDelete:
		l.ips = slices.Delete(l.ips, i, i+1)
		w.WriteHeader(http.StatusNoContent)
	default:
		methodNotAllowed(w)
	}
}

func (s *SIP) serveMappings(w http.ResponseWriter, req *http.Request) {
	domain := req.PathValue("DomainSid")
	switch req.Method {
	case http.MethodGet:
		s.mu.Lock()
		items := make([]any, 0, len(s.mappings[domain]))
		for _, sid := range s.mappings[domain] {
			items = append(items, s.mappingJSON(domain, s.findList(sid)))
		}
		s.mu.Unlock()
		writePage(w, req, "contents", items)
	case http.MethodPost:
		sid, ok := requireForm(w, req, "IpAccessControlListSid")
		if !ok {
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		l := s.findList(sid)
		switch {
		case l == nil:
			writeError(w, http.StatusNotFound, 20404, "IpAccessControlList "+sid+" was not found")
		case slices.Contains(s.mappings[domain], sid):
			// Observed on the real API: 400, code 21231.
			writeError(w, http.StatusBadRequest, 21231, "IpAccessControlList already associated with this domain")
		default:
			s.mappings[domain] = append(s.mappings[domain], sid)
			writeJSON(w, http.StatusCreated, s.mappingJSON(domain, l))
		}
	default:
		methodNotAllowed(w)
	}
}

func (s *SIP) serveMapping(w http.ResponseWriter, req *http.Request) {
	domain := req.PathValue("DomainSid")
	sid, _ := strings.CutSuffix(req.PathValue("file"), ".json")
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.Contains(s.mappings[domain], sid) {
		notFound(w, req)
		return
	}
	switch req.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, s.mappingJSON(domain, s.findList(sid)))
	case http.MethodDelete:
		s.mappings[domain] = slices.DeleteFunc(s.mappings[domain], func(x string) bool { return x == sid })
		w.WriteHeader(http.StatusNoContent)
	default:
		methodNotAllowed(w)
	}
}
