package transfer

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vivi/bridge/session"
)

type memSessions struct {
	mu sync.Mutex
	m  map[string]*session.Session
}

func (m *memSessions) UpdateSession(_ context.Context, sid string, fn func(*session.Session) error) (*session.Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.m[sid]
	if !ok {
		return nil, session.ErrNotFound
	}
	cp := *s
	cp.Timeline = append([]session.Event(nil), s.Timeline...)
	cp.Transfers = append([]session.Transfer(nil), s.Transfers...)
	if err := fn(&cp); err != nil {
		return nil, err
	}
	m.m[sid] = &cp
	return &cp, nil
}

type targetsFunc func(ctx context.Context, ch, ag, dest string) (Target, error)

func (f targetsFunc) Target(ctx context.Context, ch, ag, dest string) (Target, error) {
	return f(ctx, ch, ag, dest)
}

type callsFunc func(ctx context.Context, sid, twiml string) error

func (f callsFunc) UpdateTwiML(ctx context.Context, sid, twiml string) error {
	return f(ctx, sid, twiml)
}

func newService(t *testing.T, calls callsFunc) (*Service, *memSessions) {
	t.Helper()
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	s := session.New("CA1", "ch1", "ag1", now)
	if err := s.Transition(session.Streaming, now); err != nil {
		t.Fatal(err)
	}
	ms := &memSessions{m: map[string]*session.Session{"CA1": s}}
	targets := targetsFunc(func(_ context.Context, ch, ag, dest string) (Target, error) {
		if ch != "ch1" || ag != "ag1" || dest != "Front Desk" {
			return Target{}, ErrUnknownDestination
		}
		return Target{Number: "2001", Origin: Origin{Host: "sbc.example.com", Port: 5061, Protocol: "TLS"}}, nil
	})
	return New(Config{PublicURL: "https://b.example", Sessions: ms, Targets: targets, Calls: calls, Now: func() time.Time { return now }}), ms
}

func TestStartSendsReferAndRecords(t *testing.T) {
	var got string
	svc, ms := newService(t, func(_ context.Context, sid, twiml string) error {
		got = twiml
		return nil
	})
	tr, err := svc.Start(context.Background(), "CA1", "Front Desk", ViaTool)
	if err != nil {
		t.Fatal(err)
	}
	if tr.URI != "sip:2001@sbc.example.com:5061;transport=tls" {
		t.Fatalf("uri %q", tr.URI)
	}
	s := ms.m["CA1"]
	if s.State != session.Transferring || len(s.Transfers) != 1 || s.Transfers[0].Via != ViaTool || len(s.Transfers[0].ID) != 24 {
		t.Fatalf("session %+v", s)
	}
	// The action names the attempt (issue 9: an earlier attempt's outcome
	// must not decide this one).
	want := `<Refer action="https://b.example/twilio/refer-status?transfer=` + s.Transfers[0].ID +
		`"><Sip>sip:2001@sbc.example.com:5061;transport=tls</Sip></Refer>`
	if tr.ID != s.Transfers[0].ID || !strings.Contains(got, want) {
		t.Fatalf("twiml %q, attempt %+v", got, tr)
	}
}

func TestStartUnknownDestinationRefusedAndRecorded(t *testing.T) {
	called := false
	svc, ms := newService(t, func(context.Context, string, string) error { called = true; return nil })
	_, err := svc.Start(context.Background(), "CA1", "+19005551234", ViaTool)
	if !errors.Is(err, ErrUnknownDestination) {
		t.Fatalf("err = %v", err)
	}
	s := ms.m["CA1"]
	if called || s.State != session.Streaming || len(s.Transfers) != 0 {
		t.Fatalf("called=%v session %+v", called, s)
	}
	last := s.Timeline[len(s.Timeline)-1]
	if last.Type != session.EventTransferFailed || !strings.Contains(last.Detail, "refused") {
		t.Fatalf("timeline %+v", s.Timeline)
	}
}

func TestStartRESTFailureKeepsCall(t *testing.T) {
	svc, ms := newService(t, func(context.Context, string, string) error { return errors.New("twilio 500") })
	_, err := svc.Start(context.Background(), "CA1", "Front Desk", ViaDTMF)
	if !errors.Is(err, ErrREST) {
		t.Fatalf("err = %v", err)
	}
	s := ms.m["CA1"]
	if s.State != session.Streaming || len(s.Transfers) != 1 || s.Transfers[0].Error == "" {
		t.Fatalf("session %+v", s)
	}
}

func TestStartNotLive(t *testing.T) {
	svc, ms := newService(t, func(context.Context, string, string) error { return nil })
	ms.m["CA1"].State = session.Ended
	if _, err := svc.Start(context.Background(), "CA1", "Front Desk", ViaOperator); !errors.Is(err, ErrNotLive) {
		t.Fatalf("err = %v", err)
	}
}
