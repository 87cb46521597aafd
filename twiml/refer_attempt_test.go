package twiml

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/transfer"
)

// referCalls records the TwiML the transfer service sends (the REST fake of
// this package's tests).
type referCalls struct {
	mu   sync.Mutex
	docs []string
}

func (c *referCalls) UpdateTwiML(_ context.Context, _, doc string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.docs = append(c.docs, doc)
	return nil
}

type frontDesk struct{}

func (frontDesk) Target(context.Context, string, string, string) (transfer.Target, error) {
	return transfer.Target{Number: "2001", Origin: transfer.Origin{Host: "sbc.example.com", Port: 5061, Protocol: "TLS"}}, nil
}

// startTransfer starts a transfer of callSID with the real transfer service
// and returns the path (with its query) of the <Refer action> it sent.
func (x *harness) startTransfer(t *testing.T, svc *transfer.Service, calls *referCalls, callSID string) string {
	t.Helper()
	if _, err := svc.Start(context.Background(), callSID, "Front Desk", transfer.ViaTool); err != nil {
		t.Fatal(err)
	}
	calls.mu.Lock()
	doc := calls.docs[len(calls.docs)-1]
	calls.mu.Unlock()
	refer := verb(t, doc)
	if refer.Name != "Refer" {
		t.Fatalf("want <Refer>, got %s", doc)
	}
	u, err := url.Parse(refer.Attrs["action"])
	if err != nil || u.Scheme+"://"+u.Host != x.publicURL || u.Path != ReferStatusPath {
		t.Fatalf("action %q (%v)", refer.Attrs["action"], err)
	}
	if id := u.Query().Get(session.TransferParam); id == "" || id != x.sessions.get(t, callSID).LastTransfer().ID {
		t.Fatalf("action %q does not name the attempt %+v", u, x.sessions.get(t, callSID).LastTransfer())
	}
	return u.RequestURI()
}

// A replayed, validly signed refer outcome of transfer #1 posted while
// transfer #2 is in flight must not decide #2 (issue 9): it is answered
// with an empty <Response/>, nothing is written and no token is issued;
// #2's own outcome still decides #2.
func TestReferStatusOfEarlierAttemptIsStale(t *testing.T) {
	x := newHarness(t, "https://host.example", true)
	calls := &referCalls{}
	svc := transfer.New(transfer.Config{PublicURL: x.publicURL, Sessions: x.sessions, Targets: frontDesk{}, Calls: calls,
		Now: func() time.Time { return x.now }})
	x.liveCall(t, "CA1")

	// Transfer #1: the PBX is busy, the caller goes back to the agent.
	first := x.startTransfer(t, svc, calls, "CA1")
	answered(t, x.post(first, referStatus("CA1", "busy", "202", "486")), "host.example")
	x.sessions.mu.Lock()
	s := x.sessions.byID["CA1"]
	s.State, s.StreamSID = session.Streaming, "MZ2" // the resumed stream started
	x.sessions.mu.Unlock()

	// Transfer #2 in flight: #1's outcomes (the captured busy, or any other
	// status signed for #1's URL) and an outcome naming no attempt are stale.
	second := x.startTransfer(t, svc, calls, "CA1")
	if second == first {
		t.Fatalf("both attempts have the action %q", first)
	}
	replays := map[string]struct {
		path   string
		params url.Values
	}{
		"replay busy":        {first, referStatus("CA1", "busy", "202", "486")},
		"replay in-progress": {first, referStatus("CA1", "in-progress", "202", "200")},
		"replay canceled":    {first, referStatus("CA1", "canceled", "202", "180")},
		"attempt + garbage":  {second + "x", referStatus("CA1", "in-progress", "202", "200")},
	}
	for name, tc := range replays {
		t.Run(name, func(t *testing.T) {
			before, writes, tokens := x.sessions.get(t, "CA1"), x.sessions.writes.Load(), x.issuer.calls.Load()
			wantEmpty(t, x.post(tc.path, tc.params))
			if after := x.sessions.get(t, "CA1"); !reflect.DeepEqual(before, after) {
				t.Fatalf("session changed:\n%+v\n%+v", before, after)
			}
			if x.sessions.writes.Load() != writes || x.issuer.calls.Load() != tokens {
				t.Fatal("session written or token issued")
			}
			if got := x.loggedReasons("CA1"); got[len(got)-1] != outcomeStale {
				t.Errorf("logged %v", got)
			}
		})
	}

	wantHangup(t, x.post(second, referStatus("CA1", "in-progress", "202", "200")))
	s = x.sessions.get(t, "CA1")
	if s.State != session.Transferred || len(s.Transfers) != 2 {
		t.Fatalf("session %s, transfers %+v", s.State, s.Transfers)
	}
	if one, two := s.Transfers[0], s.Transfers[1]; one.Status != "busy" || two.Status != "in-progress" || two.CompletedAt == nil {
		t.Fatalf("transfers %+v", s.Transfers)
	}
}

// A transfer recorded without an attempt id (by an earlier version) is
// decided by its outcome as before, whatever the action URL names.
func TestReferStatusAttemptWithoutID(t *testing.T) {
	for name, path := range map[string]string{
		"no attempt": ReferStatusPath,
		"an attempt": ReferStatusPath + "?" + session.TransferParam + "=0badc0ffee",
	} {
		t.Run(name, func(t *testing.T) {
			x := newHarness(t, "https://host.example", true)
			x.transferring(t, "CA1")
			wantHangup(t, x.post(path, referStatus("CA1", "in-progress", "202", "200")))
			if s := x.sessions.get(t, "CA1"); s.State != session.Transferred {
				t.Fatalf("session %s", s.State)
			}
		})
	}
}

// An outcome posted to the bare path (as the documented contract shows it)
// for an attempt that has an id is decided by its outcome: only an id that
// names another attempt makes a callback stale.
func TestReferStatusBarePathDecides(t *testing.T) {
	x := newHarness(t, "https://host.example", true)
	x.transferring(t, "CA1")
	s := x.sessions.get(t, "CA1")
	s.Transfers[len(s.Transfers)-1].ID = "a1"
	x.sessions.put(s)
	wantHangup(t, x.post(ReferStatusPath, referStatus("CA1", "in-progress", "202", "200")))
	if s := x.sessions.get(t, "CA1"); s.State != session.Transferred {
		t.Fatalf("session %s", s.State)
	}
}

// FuzzReferStatus posts arbitrary action queries and bodies to refer-status
// (signature checking off) for a call whose transfer attempt "a1" is in
// flight: it never panics, answers a TwiML document (or 400/413), and an
// outcome naming another attempt than "a1" leaves the session as it was
// with an empty <Response/>.
func FuzzReferStatus(f *testing.F) {
	f.Add("transfer=a1", referStatus("CA1", "in-progress", "202", "200").Encode())
	f.Add("transfer=a1", referStatus("CA1", "busy", "202", "486").Encode())
	f.Add("transfer=a0", referStatus("CA1", "in-progress", "202", "200").Encode())
	f.Add("", referStatus("CA1", "canceled", "202", "180").Encode())
	f.Add("transfer=", referStatus("CA1", "in-progress", "202", "200").Encode())
	f.Add("transfer=a1&transfer=a0", "CallSid=CA1")
	f.Add("transfer=%zz;a1", "CallSid=CA1&ReferCallStatus=%00")
	f.Add("transfer="+strings.Repeat("a1", 40), "CallSid=CA2")
	f.Fuzz(func(t *testing.T, query, body string) {
		x := newHarness(t, "https://host.example", false)
		s := session.New("CA1", testChannel, testAgent, x.now)
		s.State, s.StreamSID = session.Transferring, "MZ1"
		s.AddTransfer(session.Transfer{ID: "a1", Destination: "Front Desk", URI: "sip:2001@sbc.example.com:5061;transport=tls", Via: "tool", At: x.now})
		x.sessions.put(s)
		before := x.sessions.get(t, "CA1")

		r := httptest.NewRequest(http.MethodPost, ReferStatusPath, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.URL.RawQuery = query
		id := r.URL.Query().Get(session.TransferParam)
		stale := id != "" && id != "a1" // no id: judged by the outcome, as before attempts had ids
		w := x.serve(r)
		switch w.Code {
		case http.StatusOK:
			if v := mustParse(t, w.Body.String()); v.Name != "Response" {
				t.Fatalf("answered %s", w.Body)
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			return
		default:
			t.Fatalf("status %d for %q %q", w.Code, query, body)
		}
		if !stale {
			return
		}
		if after := x.sessions.get(t, "CA1"); !reflect.DeepEqual(before, after) || x.issuer.calls.Load() != 0 {
			t.Fatalf("a callback about another attempt changed the session:\n%+v\n%+v", before, after)
		}
		if form, _ := url.ParseQuery(body); form.Get("CallSid") == "CA1" {
			wantEmpty(t, w)
		}
	})
}
