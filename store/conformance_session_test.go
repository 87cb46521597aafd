package store

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vivi/bridge/session"
)

func create(t *testing.T, st Store, clk *clock, sid string) *session.Session {
	t.Helper()
	s := session.New(sid, "ch1", "ag1", clk.Now())
	s.From = "sip:alice@pbx.example.com"
	if err := st.CreateSession(t.Context(), s); err != nil {
		t.Fatalf("CreateSession(%s): %v", sid, err)
	}
	return s
}

func update(t *testing.T, st Store, sid string, fn func(*session.Session) error) *session.Session {
	t.Helper()
	s, err := st.UpdateSession(t.Context(), sid, fn)
	if err != nil {
		t.Fatalf("UpdateSession(%s): %v", sid, err)
	}
	return s
}

func testSessions(t *testing.T, newStore newStoreFunc) {
	clk := newClock()
	ctx, st := t.Context(), newStore(t, Options{Now: clk.Now})
	if _, err := st.Session(ctx, "CA1"); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("Session(missing) = %v, want session.ErrNotFound", err)
	}
	if _, err := st.UpdateSession(ctx, "CA1", func(*session.Session) error { return nil }); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("UpdateSession(missing) = %v, want session.ErrNotFound", err)
	}
	s := create(t, st, clk, "CA1")
	if err := st.CreateSession(ctx, session.New("CA1", "other", "other", clk.Now())); !errors.Is(err, ErrExists) {
		t.Fatalf("CreateSession(existing) = %v, want ErrExists", err)
	}
	want := *s
	want.Timeline = slices.Clone(s.Timeline)
	s.Timeline[0].Type = "changed" // the caller's copy, not the stored one
	got, err := st.Session(ctx, "CA1")
	if err != nil {
		t.Fatalf("Session: %v", err)
	}
	sameJSON(t, "Session after create", got, &want)

	clk.Advance(time.Second)
	got = update(t, st, "CA1", func(s *session.Session) error {
		s.PodID = "pod-a"
		return s.Transition(session.Streaming, clk.Now())
	})
	if got.State != session.Streaming || got.PodID != "pod-a" {
		t.Fatalf("UpdateSession returned %+v", got)
	}
	got.Timeline = append(got.Timeline, session.Event{Type: "not stored"})
	stored, err := st.Session(ctx, "CA1")
	if err != nil {
		t.Fatalf("Session: %v", err)
	}
	if stored.State != session.Streaming || stored.PodID != "pod-a" || len(stored.Timeline) != 1 {
		t.Fatalf("Session after update = %+v", stored)
	}
}

func testUpdateFnError(t *testing.T, newStore newStoreFunc) {
	clk := newClock()
	ctx, st := t.Context(), newStore(t, Options{Now: clk.Now})
	want := create(t, st, clk, "CA1")
	errBoom := errors.New("boom")
	_, err := st.UpdateSession(ctx, "CA1", func(s *session.Session) error {
		s.End("half-done", clk.Now())
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("UpdateSession = %v, want fn's error", err)
	}
	got, err := st.Session(ctx, "CA1")
	if err != nil {
		t.Fatalf("Session: %v", err)
	}
	sameJSON(t, "session after a failed update", got, want)
	if active, _ := st.Sessions(ctx, true, 0); len(active) != 1 {
		t.Fatalf("Sessions(active) = %d sessions, want 1", len(active))
	}
}

func sids(list []*session.Session) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = s.CallSID
	}
	return out
}

func testListSessions(t *testing.T, newStore newStoreFunc) {
	clk := newClock()
	ctx, st := t.Context(), newStore(t, Options{Now: clk.Now})
	for _, sid := range []string{"CA-a", "CA-b", "CA-c", "CA-d"} {
		create(t, st, clk, sid)
		clk.Advance(time.Second)
	}
	update(t, st, "CA-b", func(s *session.Session) error { s.End("caller_hangup", clk.Now()); return nil })
	clk.Advance(time.Second)
	update(t, st, "CA-c", func(s *session.Session) error {
		for _, to := range []session.State{session.Streaming, session.Transferring} {
			if err := s.Transition(to, clk.Now()); err != nil {
				return err
			}
		}
		return s.MarkTransferred(clk.Now())
	})
	clk.Advance(time.Second)
	tests := map[string]struct {
		active bool
		limit  int
		want   []string
	}{
		"active":         {active: true, want: []string{"CA-d", "CA-a"}},
		"active limit 1": {active: true, limit: 1, want: []string{"CA-d"}},
		"ended":          {active: false, limit: 10, want: []string{"CA-c", "CA-b"}},
	}
	for name, tc := range tests {
		list, err := st.Sessions(ctx, tc.active, tc.limit)
		if err != nil {
			t.Fatalf("%s: Sessions: %v", name, err)
		}
		if !slices.Equal(sids(list), tc.want) {
			t.Fatalf("%s: Sessions = %v, want %v", name, sids(list), tc.want)
		}
	}
	update(t, st, "CA-a", func(s *session.Session) error { s.AddTurn(clk.Now(), session.RoleCaller, "hello"); return nil })
	list, err := st.Sessions(ctx, true, 0)
	if err != nil || !slices.Equal(sids(list), []string{"CA-a", "CA-d"}) {
		t.Fatalf("Sessions(active) after a write = %v, %v; want [CA-a CA-d]", sids(list), err)
	}
	if list[0].Transcript[0].Text != "hello" {
		t.Fatalf("listed session lacks its transcript: %+v", list[0])
	}
}

func testConcurrentUpdates(t *testing.T, newStore newStoreFunc) {
	clk := newClock()
	st := newStore(t, Options{Now: clk.Now})
	create(t, st, clk, "CA1")
	const writers = 10
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			_, err := st.UpdateSession(t.Context(), "CA1", func(s *session.Session) error {
				s.Record(clk.Now(), session.EventToolCall, fmt.Sprint(i))
				return nil
			})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("UpdateSession: %v", err)
		}
	}
	s, err := st.Session(t.Context(), "CA1")
	if err != nil {
		t.Fatalf("Session: %v", err)
	}
	seen := make(map[string]int)
	for _, e := range s.Timeline {
		if e.Type == session.EventToolCall {
			seen[e.Detail]++
		}
	}
	for i := range writers {
		if seen[fmt.Sprint(i)] != 1 {
			t.Fatalf("event %d recorded %d times; timeline %+v", i, seen[fmt.Sprint(i)], s.Timeline)
		}
	}
}

func testClaimToken(t *testing.T, newStore newStoreFunc) {
	ctx, st := t.Context(), newStore(t, Options{})
	for i, want := range []bool{true, false, false} {
		got, err := st.ClaimToken(ctx, "tok-1", time.Minute)
		if err != nil || got != want {
			t.Fatalf("ClaimToken #%d = %v, %v; want %v", i+1, got, err, want)
		}
	}
	if got, err := st.ClaimToken(ctx, "tok-2", time.Minute); err != nil || !got {
		t.Fatalf("ClaimToken(other id) = %v, %v; want true", got, err)
	}
}

func testPubSub(t *testing.T, newStore newStoreFunc) {
	ctx, st := t.Context(), newStore(t, Options{})
	if err := st.Ping(ctx); err != nil { // connections made before the leak baseline
		t.Fatalf("Ping: %v", err)
	}
	baseline := goleak.IgnoreCurrent()
	a, cancelA, err := st.Subscribe(ctx, "calls")
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	b, cancelB, err := st.Subscribe(ctx, "calls")
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	other, cancelOther, err := st.Subscribe(ctx, "other")
	if err != nil {
		t.Fatalf("Subscribe(other): %v", err)
	}
	msg := []byte(`{"op":"hangup","callSid":"CA1"}`)
	if err := st.Publish(ctx, "calls", msg); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	msg[0] = 'X' // the publisher may reuse its buffer
	for name, ch := range map[string]<-chan []byte{"a": a, "b": b} {
		select {
		case got := <-ch:
			if string(got) != `{"op":"hangup","callSid":"CA1"}` {
				t.Fatalf("subscriber %s got %q", name, got)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("subscriber %s got nothing in 5s", name)
		}
	}
	cancelA()
	cancelA() // idempotent
	if _, ok := <-a; ok {
		t.Fatal("channel still open after cancel")
	}
	cancelB()
	cancelOther()
	for m := range other {
		t.Fatalf("subscriber of another topic got %q", m)
	}
	goleak.VerifyNone(t, baseline)
}

func testSessionExpiry(t *testing.T, newStore newStoreFunc) {
	clk := newClock()
	opts := Options{ActiveTTL: 300 * time.Millisecond, Retention: time.Hour, Now: clk.Now}
	ctx, st := t.Context(), newStore(t, opts)
	_, isMemory := st.(*Memory)
	ended := session.New("CA-ended", "ch1", "ag1", clk.Now())
	ended.End("stop", clk.Now()) // created terminal: kept for Retention from the start
	if err := st.CreateSession(ctx, ended); err != nil {
		t.Fatalf("CreateSession(ended): %v", err)
	}
	create(t, st, clk, "CA-active")
	if isMemory { // with the injected clock: refreshed by writes, gone exactly after ActiveTTL
		clk.Advance(200 * time.Millisecond)
		update(t, st, "CA-active", func(s *session.Session) error { s.Record(clk.Now(), "tick", ""); return nil })
		clk.Advance(200 * time.Millisecond)
		if _, err := st.Session(ctx, "CA-active"); err != nil {
			t.Fatalf("session gone before ActiveTTL since its last write: %v", err)
		}
	}
	clk.Advance(time.Second)
	if isMemory {
		if _, err := st.Session(ctx, "CA-active"); !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("Session after ActiveTTL = %v, want ErrNotFound at once", err)
		}
	}
	eventually(t, "the active session to expire", func() bool {
		_, err := st.Session(ctx, "CA-active")
		return errors.Is(err, session.ErrNotFound)
	})
	if active, err := st.Sessions(ctx, true, 0); err != nil || len(active) != 0 {
		t.Fatalf("Sessions(active) after expiry = %v, %v; want none", sids(active), err)
	}
	if r, ok := st.(*Redis); ok { // listing pruned the stale index entry
		if err := r.client.ZScore(ctx, r.k.activeIndex(), "CA-active").Err(); err == nil {
			t.Fatal("expired session still in the active index after listing")
		}
	}
	if _, err := st.Session(ctx, "CA-ended"); err != nil {
		t.Fatalf("ended session gone before Retention: %v", err)
	}
	if list, err := st.Sessions(ctx, false, 0); err != nil || len(list) != 1 {
		t.Fatalf("Sessions(ended) = %v, %v; want [CA-ended]", sids(list), err)
	}
	if isMemory {
		clk.Advance(time.Hour)
		if _, err := st.Session(ctx, "CA-ended"); !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("Session after Retention = %v, want ErrNotFound", err)
		}
		if list, _ := st.Sessions(ctx, false, 0); len(list) != 0 {
			t.Fatalf("Sessions(ended) after Retention = %v", sids(list))
		}
		if ok, _ := st.ClaimToken(ctx, "t", time.Minute); !ok {
			t.Fatal("ClaimToken: want true")
		}
		clk.Advance(time.Minute)
		if ok, _ := st.ClaimToken(ctx, "t", time.Minute); !ok {
			t.Fatal("ClaimToken after its ttl: want true again")
		}
	}
	if _, ok := st.(*Redis); ok {
		testRedisTTLs(t, newStore)
	}
}

// testRedisTTLs checks the key expiry Redis sets: ActiveTTL while active,
// Retention once ended.
func testRedisTTLs(t *testing.T, newStore newStoreFunc) {
	clk := newClock()
	r := newStore(t, Options{Now: clk.Now}).(*Redis)
	ttl := func(want time.Duration, stage string) {
		t.Helper()
		got := r.client.PTTL(t.Context(), r.k.session("CA1")).Val()
		if got <= want-time.Minute || got > want {
			t.Fatalf("%s: TTL = %v, want %v", stage, got, want)
		}
	}
	create(t, r, clk, "CA1")
	ttl(DefaultActiveTTL, "created")
	update(t, r, "CA1", func(s *session.Session) error { s.End("stop", clk.Now()); return nil })
	ttl(DefaultRetention, "ended")
}
