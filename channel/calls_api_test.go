package channel_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/store"
)

// fakeCommander records what the calls endpoints asked for.
type fakeCommander struct {
	transfer func(ctx context.Context, sid, dest string) error
	hangup   func(ctx context.Context, sid string) error
}

func (f *fakeCommander) TransferCall(ctx context.Context, sid, dest string) error {
	return f.transfer(ctx, sid, dest)
}
func (f *fakeCommander) HangupCall(ctx context.Context, sid string) error { return f.hangup(ctx, sid) }

func newCallsEnv(t *testing.T, cmd channel.CallCommander) (*env, *store.Memory) {
	t.Helper()
	st := store.NewMemory(store.Options{})
	e := &env{t: t, store: st}
	mux := http.NewServeMux()
	api := channel.NewAPI(channel.APIConfig{AdminToken: testToken}, nil)
	api.RegisterCalls(mux, st, cmd)
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	now := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	live := session.New("CA1", "acme", "front", now)
	_ = live.Transition(session.Streaming, now)
	live.AddTurn(now, session.RoleCaller, "hello")
	ended := session.New("CA2", "acme", "front", now)
	ended.End("caller_hangup", now.Add(time.Minute))
	for _, s := range []*session.Session{live, ended} {
		if err := st.CreateSession(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	return e, st
}

func TestCallsList(t *testing.T) {
	e, _ := newCallsEnv(t, &fakeCommander{})
	for state, want := range map[string]string{"": "CA1", "active": "CA1", "ended": "CA2"} {
		status, body := e.do("GET", "/v1/calls?state="+state, nil)
		if status != 200 {
			t.Fatalf("state %q: status %d %s", state, status, body)
		}
		got := decodeJSON[struct{ Calls []session.Session }](t, body)
		if len(got.Calls) != 1 || got.Calls[0].CallSID != want {
			t.Fatalf("state %q: %+v", state, got)
		}
	}
	status, body := e.do("GET", "/v1/calls?state=bogus", nil)
	wantError(t, status, body, 400, "invalid_state")
	status, body = e.do("GET", "/v1/calls/CA1", nil)
	s := decodeJSON[session.Session](t, body)
	if status != 200 || s.State != session.Streaming || len(s.Transcript) != 1 || len(s.Timeline) == 0 {
		t.Fatalf("status %d session %+v", status, s)
	}
	status, body = e.do("GET", "/v1/calls/CA404", nil)
	wantError(t, status, body, 404, "not_found")
	status, body = e.doWith("GET", "/v1/calls", nil, "Bearer wrong")
	wantError(t, status, body, 401, "unauthorized")
}

func TestCallsCommands(t *testing.T) {
	var got []string
	cmd := &fakeCommander{
		transfer: func(_ context.Context, sid, dest string) error {
			got = append(got, "transfer "+sid+" "+dest)
			switch {
			case sid == "CA2":
				return channel.ErrCallNotLive
			case dest != "Front Desk":
				return channel.ErrUnknownDestination
			}
			return nil
		},
		hangup: func(_ context.Context, sid string) error {
			got = append(got, "hangup "+sid)
			switch sid {
			case "CA404":
				return session.ErrNotFound
			case "CAgone":
				return channel.ErrNoOwner
			case "CAbusy":
				return channel.ErrCallBusy
			case "CArest":
				return channel.ErrHangupFailed
			}
			return nil
		},
	}
	e, _ := newCallsEnv(t, cmd)
	if status, body := e.do("POST", "/v1/calls/CA1/transfer", map[string]string{"destination": "Front Desk"}); status != 202 {
		t.Fatalf("transfer: %d %s", status, body)
	}
	status, body := e.do("POST", "/v1/calls/CA1/transfer", map[string]string{"destination": "+19005550000"})
	wantError(t, status, body, 422, "unknown_destination")
	status, body = e.do("POST", "/v1/calls/CA2/transfer", map[string]string{"destination": "Front Desk"})
	wantError(t, status, body, 409, "call_not_live")
	status, body = e.do("POST", "/v1/calls/CA1/transfer", map[string]string{"number": "2001"})
	wantError(t, status, body, 400, "unknown_field")
	if status, body := e.do("POST", "/v1/calls/CA1/hangup", nil); status != 202 {
		t.Fatalf("hangup: %d %s", status, body)
	}
	status, body = e.do("POST", "/v1/calls/CA404/hangup", nil)
	wantError(t, status, body, 404, "not_found")
	for sid, want := range map[string]struct {
		status int
		code   string
	}{"CAgone": {503, "no_owner"}, "CAbusy": {503, "call_busy"}, "CArest": {502, "hangup_failed"}} {
		status, body = e.do("POST", "/v1/calls/"+sid+"/hangup", nil)
		wantError(t, status, body, want.status, want.code)
		got = got[:len(got)-1]
	}
	want := []string{"transfer CA1 Front Desk", "transfer CA1 +19005550000", "transfer CA2 Front Desk", "hangup CA1", "hangup CA404"}
	if len(got) != len(want) {
		t.Fatalf("commands %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("commands %q, want %q", got, want)
		}
	}
}
