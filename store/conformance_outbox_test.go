package store

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/vivi/bridge/session"
)

// eventsHook is an Options.Outbox giving one event entry per new timeline
// event (what delivery.Entries does, without its bodies).
func eventsHook(prev SessionMark, s *session.Session) []OutboxEntry {
	var out []OutboxEntry
	for _, ev := range s.Timeline {
		if ev.Seq > prev.Seq {
			out = append(out, OutboxEntry{Kind: OutboxEvent, EventID: session.EventID(s.CallSID, ev.Seq),
				CallSID: s.CallSID, ChannelID: s.ChannelID, Type: ev.Type, At: ev.At, Body: []byte(`{"t":"` + ev.Type + `"}`)})
		}
	}
	return out
}

func eventIDs(es []OutboxEntry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.EventID
	}
	return out
}

// readAll reads shard for consumer without blocking.
func readAll(t *testing.T, st Store, consumer string, shards ...int) []OutboxEntry {
	t.Helper()
	es, err := st.ReadOutbox(t.Context(), consumer, shards, 100, 0)
	if err != nil {
		t.Fatalf("ReadOutbox: %v", err)
	}
	return es
}

func testOutboxHook(t *testing.T, newStore newStoreFunc) {
	st := newStore(t, Options{Outbox: eventsHook})
	ctx := t.Context()
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	s := session.New("CAhook", "ch1", "ag1", now)
	if err := st.CreateSession(ctx, s); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	for _, typ := range []string{session.EventStreamStarted, session.EventModelConnected} {
		if _, err := st.UpdateSession(ctx, "CAhook", func(s *session.Session) error {
			s.Record(now, typ, "")
			return nil
		}); err != nil {
			t.Fatalf("UpdateSession: %v", err)
		}
	}
	// A write that records nothing appends nothing; an fn error appends nothing.
	if _, err := st.UpdateSession(ctx, "CAhook", func(s *session.Session) error { s.AgentID = "ag2"; return nil }); err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}
	_, _ = st.UpdateSession(ctx, "CAhook", func(s *session.Session) error {
		s.Record(now, session.EventDigit, "1")
		return errors.New("refused")
	})
	shard := OutboxShard("CAhook")
	got := readAll(t, st, "pod-a", shard)
	want := []string{session.EventID("CAhook", 1), session.EventID("CAhook", 2), session.EventID("CAhook", 3)}
	if !slices.Equal(eventIDs(got), want) {
		t.Fatalf("entries %v, want %v", eventIDs(got), want)
	}
	e := got[1]
	if e.Shard != shard || e.Kind != OutboxEvent || e.CallSID != "CAhook" || e.ChannelID != "ch1" ||
		e.Type != session.EventStreamStarted || !e.At.Equal(now) || string(e.Body) != `{"t":"stream_started"}` || e.ID == "" {
		t.Fatalf("entry round trip: %+v", e)
	}
	if again := readAll(t, st, "pod-a", shard); len(again) != 0 {
		t.Fatalf("a second read returned %v: read entries are pending, not new", eventIDs(again))
	}
}

func testOutboxClaim(t *testing.T, newStore newStoreFunc) {
	st := newStore(t, Options{})
	ctx := t.Context()
	var entries []OutboxEntry
	for i := range 5 {
		entries = append(entries, OutboxEntry{Kind: OutboxEvent, EventID: fmt.Sprintf("e%d", i), CallSID: "CAclaim", Type: "x"})
	}
	if err := st.AppendOutbox(ctx, entries...); err != nil {
		t.Fatalf("AppendOutbox: %v", err)
	}
	shard := OutboxShard("CAclaim")
	// pod-a reads three and stops; pod-b takes over.
	if got, err := st.ReadOutbox(ctx, "pod-a", []int{shard}, 3, 0); err != nil || len(got) != 3 {
		t.Fatalf("ReadOutbox: %v %v", eventIDs(got), err)
	} else if err := st.AckOutbox(ctx, shard, got[0].ID); err != nil {
		t.Fatalf("AckOutbox: %v", err)
	}
	got, err := st.ClaimOutbox(ctx, shard, "pod-b")
	if err != nil {
		t.Fatalf("ClaimOutbox: %v", err)
	}
	if want := []string{"e1", "e2"}; !slices.Equal(eventIDs(got), want) {
		t.Fatalf("claimed %v, want %v (pending of pod-a, in order, without the acked one)", eventIDs(got), want)
	}
	if rest := readAll(t, st, "pod-b", shard); !slices.Equal(eventIDs(rest), []string{"e3", "e4"}) {
		t.Fatalf("new entries %v, want [e3 e4]", eventIDs(rest))
	}
	// A claim again returns the claimer's own pending list, all of it.
	got, err = st.ClaimOutbox(ctx, shard, "pod-b")
	if err != nil || !slices.Equal(eventIDs(got), []string{"e1", "e2", "e3", "e4"}) {
		t.Fatalf("claim of own pending: %v %v", eventIDs(got), err)
	}
	ids := make([]string, len(got))
	for i, e := range got {
		ids[i] = e.ID
	}
	if err := st.AckOutbox(ctx, shard, ids...); err != nil {
		t.Fatalf("AckOutbox: %v", err)
	}
	if got, err := st.ClaimOutbox(ctx, shard, "pod-c"); err != nil || len(got) != 0 {
		t.Fatalf("after ack, claim %v %v; want none", eventIDs(got), err)
	}
}

func testOutboxMultiShard(t *testing.T, newStore newStoreFunc) {
	st := newStore(t, Options{})
	ctx := t.Context()
	// Calls on distinct shards, three entries each.
	var calls []string
	seen := map[int]bool{}
	for i := 0; len(calls) < 3; i++ {
		sid := fmt.Sprintf("CAmulti%d", i)
		if !seen[OutboxShard(sid)] {
			seen[OutboxShard(sid)] = true
			calls = append(calls, sid)
		}
	}
	var shards []int
	for _, sid := range calls {
		shards = append(shards, OutboxShard(sid))
		for j := range 3 {
			if err := st.AppendOutbox(ctx, OutboxEntry{Kind: OutboxEvent, EventID: fmt.Sprintf("%s-%d", sid, j), CallSID: sid}); err != nil {
				t.Fatalf("AppendOutbox: %v", err)
			}
		}
	}
	got := readAll(t, st, "pod-a", shards...)
	perCall := map[string][]string{}
	for _, e := range got {
		if e.Shard != OutboxShard(e.CallSID) {
			t.Fatalf("entry %s on shard %d, want %d", e.EventID, e.Shard, OutboxShard(e.CallSID))
		}
		perCall[e.CallSID] = append(perCall[e.CallSID], e.EventID)
	}
	for _, sid := range calls {
		if want := []string{sid + "-0", sid + "-1", sid + "-2"}; !slices.Equal(perCall[sid], want) {
			t.Fatalf("call %s: %v, want %v", sid, perCall[sid], want)
		}
	}
	// A blocking read over empty shards returns empty when block ends.
	start := time.Now()
	if es, err := st.ReadOutbox(ctx, "pod-a", shards, 10, 50*time.Millisecond); err != nil || len(es) != 0 {
		t.Fatalf("blocking read of nothing: %v %v", eventIDs(es), err)
	}
	if time.Since(start) < 40*time.Millisecond {
		t.Fatalf("blocking read returned at once")
	}
}

func testOutboxLease(t *testing.T, newStore newStoreFunc) {
	clk := newClock()
	st := newStore(t, Options{Now: clk.Now})
	ctx := t.Context()
	ttl := 300 * time.Millisecond
	acquire := func(consumer string) bool {
		t.Helper()
		ok, err := st.AcquireShard(ctx, 3, consumer, ttl)
		if err != nil {
			t.Fatalf("AcquireShard: %v", err)
		}
		return ok
	}
	if !acquire("pod-a") || acquire("pod-b") {
		t.Fatalf("lease not exclusive")
	}
	if !acquire("pod-a") {
		t.Fatalf("holder could not renew")
	}
	if err := st.ReleaseShard(ctx, 3, "pod-b"); err != nil {
		t.Fatalf("ReleaseShard: %v", err)
	}
	if acquire("pod-b") {
		t.Fatalf("a release by a non-holder freed the lease")
	}
	if err := st.ReleaseShard(ctx, 3, "pod-a"); err != nil {
		t.Fatalf("ReleaseShard: %v", err)
	}
	if !acquire("pod-b") {
		t.Fatalf("released lease not taken")
	}
	// Expiry: pod-b stops renewing (Memory follows the clock, Redis PX).
	clk.Advance(ttl)
	eventually(t, "lease of pod-b expires", func() bool { return acquire("pod-a") })
	if acquire("pod-b") {
		t.Fatalf("pod-b took the lease back from pod-a")
	}
}

func testOutboxPark(t *testing.T, newStore newStoreFunc) {
	st := newStore(t, Options{})
	ctx := t.Context()
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	if err := st.AppendOutbox(ctx,
		OutboxEntry{Kind: OutboxEvent, EventID: "p1", CallSID: "CApark", ChannelID: "ch", Type: "ended", At: at, Body: []byte(`{"a":1}`)},
		OutboxEntry{Kind: OutboxEvent, EventID: "p2", CallSID: "CApark", At: at}); err != nil {
		t.Fatalf("AppendOutbox: %v", err)
	}
	shard := OutboxShard("CApark")
	es := readAll(t, st, "pod-a", shard)
	if len(es) != 2 {
		t.Fatalf("read %v", eventIDs(es))
	}
	for i, e := range es {
		if err := st.ParkOutbox(ctx, e, fmt.Sprintf("reason %d", i)); err != nil {
			t.Fatalf("ParkOutbox: %v", err)
		}
	}
	if rest, err := st.ClaimOutbox(ctx, shard, "pod-a"); err != nil || len(rest) != 0 {
		t.Fatalf("parked entries still pending: %v %v", eventIDs(rest), err)
	}
	parked, err := st.Parked(ctx, 10)
	if err != nil || len(parked) != 2 {
		t.Fatalf("Parked: %v %v", parked, err)
	}
	if parked[0].Entry.EventID != "p2" || parked[1].Entry.EventID != "p1" || parked[1].Reason != "reason 0" {
		t.Fatalf("parked not newest first: %+v", parked)
	}
	p := parked[1]
	if p.ID == "" || p.ParkedAt.IsZero() || string(p.Entry.Body) != `{"a":1}` || p.Entry.Type != "ended" || !p.Entry.At.Equal(at) || p.Entry.Shard != shard {
		t.Fatalf("parked entry round trip: %+v", p)
	}
	if one, err := st.Parked(ctx, 1); err != nil || len(one) != 1 {
		t.Fatalf("Parked limit 1: %v %v", one, err)
	}
	e, err := st.RedeliverParked(ctx, p.ID)
	if err != nil || e.EventID != "p1" {
		t.Fatalf("RedeliverParked: %+v %v", e, err)
	}
	if _, err := st.RedeliverParked(ctx, p.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second RedeliverParked: %v, want ErrNotFound", err)
	}
	if again := readAll(t, st, "pod-a", shard); len(again) != 1 || again[0].EventID != "p1" || string(again[0].Body) != `{"a":1}` {
		t.Fatalf("redelivered entry: %+v", again)
	}
	if parked, _ := st.Parked(ctx, 10); len(parked) != 1 || parked[0].Entry.EventID != "p2" {
		t.Fatalf("parked after redeliver: %+v", parked)
	}
}

func testOutboxDeliveries(t *testing.T, newStore newStoreFunc) {
	st := newStore(t, Options{})
	ctx := t.Context()
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	last := at.Add(time.Second)
	for _, d := range []Delivery{
		{EventID: session.EventID("CAd", 10), Type: "ended", State: DeliveryPending, CreatedAt: at},
		{EventID: session.EventID("CAd", 9), Type: "dtmf", State: DeliveryPending, CreatedAt: at},
		{EventID: session.EventID("CAd", 9), Type: "dtmf", State: DeliveryRetrying, Attempts: 2, CreatedAt: at,
			LastAttempt: &last, NextAttempt: &last, LastStatus: 503, LastError: "status 503"},
	} {
		if err := st.SetDelivery(ctx, "CAd", d); err != nil {
			t.Fatalf("SetDelivery: %v", err)
		}
	}
	got, err := st.Deliveries(ctx, "CAd")
	if err != nil {
		t.Fatalf("Deliveries: %v", err)
	}
	sameJSON(t, "deliveries", got, []Delivery{
		{EventID: session.EventID("CAd", 9), Type: "dtmf", State: DeliveryRetrying, Attempts: 2, CreatedAt: at,
			LastAttempt: &last, NextAttempt: &last, LastStatus: 503, LastError: "status 503"},
		{EventID: session.EventID("CAd", 10), Type: "ended", State: DeliveryPending, CreatedAt: at},
	})
	if none, err := st.Deliveries(ctx, "CAnone"); err != nil || len(none) != 0 {
		t.Fatalf("Deliveries of an unknown call: %v %v", none, err)
	}
}
