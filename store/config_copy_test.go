package store

import (
	"errors"
	"testing"
	"time"

	"github.com/vivi/bridge/channel"
)

// TestConfigCopyRoutesLikeTheStore: the copy of a Redis store answers the
// routing lookups and agents as the store does, and keeps answering them
// once the client is closed (the store unreachable).
func TestConfigCopyRoutesLikeTheStore(t *testing.T) {
	ctx := t.Context()
	client := testClient(t)
	st := NewRedis(client, Options{Prefix: testPrefix(t)})
	if err := st.Apply(ctx, []channel.Agent{agent("a", "A")}, []channel.Channel{
		chann("c1", "a", []string{"10.0.0.1"}, []string{"1001"}),
		chann("c2", "a", []string{"10.0.0.1"}, []string{"2001"}),
	}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	cp := NewConfigCopy(st)
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	if a, c, kept, err := cp.Reload(ctx, at, false); err != nil || a != 1 || c != 2 || kept {
		t.Fatalf("Reload = %d, %d, %v, %v; want 1, 2, false, nil", a, c, kept, err)
	}
	_ = client.Close() // the store is gone; the copy is not
	for _, l := range []lookup{
		{ip: "10.0.0.1", ext: "1001", id: "c1"},
		{ip: "10.0.0.1", ext: "2001", id: "c2"},
		{ip: "10.0.0.1", ext: "3001", err: channel.ErrUnknownExtension},
		{ip: "10.0.0.9", ext: "1001", err: channel.ErrUnknownSourceIP},
	} {
		ch, err := cp.ChannelByOrigin(ctx, l.ip, l.ext)
		if l.err != nil {
			if !errors.Is(err, l.err) {
				t.Errorf("ChannelByOrigin(%s, %s) err = %v; want %v", l.ip, l.ext, err, l.err)
			}
			continue
		}
		if err != nil || ch.ID != l.id {
			t.Errorf("ChannelByOrigin(%s, %s) = %q, %v; want %q", l.ip, l.ext, ch.ID, err, l.id)
		}
	}
	if ag, err := cp.Agent(ctx, "a"); err != nil || ag.Instructions != "be kind" {
		t.Errorf("Agent(a) = %+v, %v", ag, err)
	}
	if _, err := cp.Agent(ctx, "zz"); !errors.Is(err, channel.ErrNotFound) {
		t.Errorf("Agent(zz) err = %v; want channel.ErrNotFound", err)
	}
	if _, _, _, err := cp.Reload(ctx, at, false); err == nil {
		t.Error("Reload from a closed client: no error")
	}
	if a, c, loaded := cp.Counts(); a != 1 || c != 2 || !loaded.Equal(at) {
		t.Errorf("Counts after a failed reload = %d, %d, %v; want the old copy", a, c, loaded)
	}
}

// TestConfigCopyKeepsWhenSourceEmptied: with keepNonEmpty an emptied source
// (a store that lost its data) does not empty the copy; without it, it does
// (an operator deleted everything).
func TestConfigCopyKeepsWhenSourceEmptied(t *testing.T) {
	ctx := t.Context()
	src := NewMemory(Options{})
	if err := src.Apply(ctx, []channel.Agent{agent("a", "A")}, []channel.Channel{chann("c1", "a", []string{"10.0.0.1"}, []string{"1001"})}); err != nil {
		t.Fatal(err)
	}
	cp := NewConfigCopy(src)
	now := time.Now()
	if _, _, _, err := cp.Reload(ctx, now, false); err != nil {
		t.Fatal(err)
	}
	empty := NewConfigCopy(NewMemory(Options{}))
	cp.src = empty.src
	if a, c, kept, err := cp.Reload(ctx, now, true); err != nil || !kept || a != 1 || c != 1 {
		t.Fatalf("Reload(keep) of an empty source = %d, %d, %v, %v; want the old copy kept", a, c, kept, err)
	}
	if ch, err := cp.ChannelByOrigin(ctx, "10.0.0.1", "1001"); err != nil || ch.ID != "c1" {
		t.Fatalf("route after keep = %q, %v", ch.ID, err)
	}
	if a, c, kept, err := cp.Reload(ctx, now, false); err != nil || kept || a+c != 0 {
		t.Fatalf("Reload(no keep) of an empty source = %d, %d, %v, %v; want empty", a, c, kept, err)
	}
	if _, err := cp.ChannelByOrigin(ctx, "10.0.0.1", "1001"); !errors.Is(err, channel.ErrUnknownSourceIP) {
		t.Fatalf("route after emptying: err = %v", err)
	}
}

func TestRedisMarker(t *testing.T) {
	ctx := t.Context()
	st := NewRedis(testClient(t), Options{Prefix: testPrefix(t)})
	if ok, err := st.CheckMarker(ctx, "pod-a", "v1"); err != nil || ok {
		t.Fatalf("CheckMarker before SetMarker = %v, %v; want false, nil", ok, err)
	}
	if err := st.SetMarker(ctx, "pod-a", "v1"); err != nil {
		t.Fatal(err)
	}
	if ok, err := st.CheckMarker(ctx, "pod-a", "v1"); err != nil || !ok {
		t.Fatalf("CheckMarker = %v, %v; want true", ok, err)
	}
	if ok, _ := st.CheckMarker(ctx, "pod-a", "v2"); ok {
		t.Fatal("CheckMarker with another value = true")
	}
	if ok, _ := st.CheckMarker(ctx, "pod-b", "v1"); ok {
		t.Fatal("CheckMarker of another pod = true")
	}
	// One group's data lost (on a Cluster, one master failed over to a
	// replica without it): the marker check says lost.
	for _, k := range st.k.markers("pod-a", "v1") {
		if err := st.SetMarker(ctx, "pod-a", "v1"); err != nil {
			t.Fatal(err)
		}
		if err := st.client.Del(ctx, k).Err(); err != nil {
			t.Fatal(err)
		}
		if ok, err := st.CheckMarker(ctx, "pod-a", "v1"); err != nil || ok {
			t.Fatalf("CheckMarker with %s gone = %v, %v; want false", k, ok, err)
		}
	}
}
