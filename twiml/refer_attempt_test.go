package twiml

import (
	"context"
	"net/url"
	"reflect"
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
		"no attempt":         {ReferStatusPath, referStatus("CA1", "in-progress", "202", "200")},
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
