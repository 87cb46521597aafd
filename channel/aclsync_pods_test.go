package channel_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/store"
	"github.com/vivi/bridge/twiliotest"
)

// channelsWith returns one channel per IP.
func channelsWith(ips ...string) []channel.Channel {
	var cs []channel.Channel
	for i, ip := range ips {
		c := baseChannel()
		c.ID = "ch" + string(rune('a'+i))
		c.OriginIPs = []string{ip}
		cs = append(cs, c)
	}
	return cs
}

// TestACLSyncToleratesOtherPods: what another pod (or a person in the
// console) did meanwhile is no failure, and the end state is exact.
func TestACLSyncToleratesOtherPods(t *testing.T) {
	tests := map[string]struct {
		// before prepares Twilio; during runs between the sync's listing of
		// Twilio's entries and its reading of the channels.
		before func(t *testing.T, f *sipState)
		during func(f *sipState)
		want   []string
		// wantStatus is a REST status the sync must have met (and survived).
		wantStatus int
	}{
		"duplicate lists are reduced to one": {
			before: func(t *testing.T, f *sipState) {
				a, b := f.sip.CreateList(aclList), f.sip.CreateList(aclList)
				f.sip.AddIP(a, "192.0.2.99")
				f.sip.AddIP(b, "192.0.2.98")
				f.keep = min(a, b)
			},
			want: []string{"203.0.113.10"},
		},
		"another pod added the IP first": {
			during:     func(f *sipState) { f.sip.AddIP(f.list(), "203.0.113.10") },
			want:       []string{"203.0.113.10"},
			wantStatus: http.StatusBadRequest,
		},
		"another pod removed a stale IP first": {
			before: func(t *testing.T, f *sipState) {
				f.sip.AddIP(f.sip.CreateList(aclList), "192.0.2.99")
			},
			during:     func(f *sipState) { f.sip.RemoveIP(f.list(), "192.0.2.99") },
			want:       []string{"203.0.113.10"},
			wantStatus: http.StatusNotFound,
		},
		"a stale IP goes, a wanted one stays": {
			before: func(t *testing.T, f *sipState) {
				l := f.sip.CreateList(aclList)
				f.sip.AddIP(l, "192.0.2.99")
				f.sip.AddIP(l, "203.0.113.10")
			},
			want: []string{"203.0.113.10"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			rest, sip := newSIPFake(t)
			f := &sipState{t: t, sip: sip}
			if tc.before != nil {
				tc.before(t, f)
			}
			lister := channelsFunc(func(context.Context) ([]channel.Channel, error) {
				if tc.during != nil {
					tc.during(f)
				}
				return channelsWith("203.0.113.10"), nil
			})
			s := newACLSync(t, rest, lister, channel.ACLSyncConfig{})
			if _, err := s.Sync(context.Background()); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			wantInSync(t, sip, tc.want...)
			if f.keep != "" && theList(t, sip) != f.keep {
				t.Errorf("kept list %s; want the smallest SID %s", theList(t, sip), f.keep)
			}
			if tc.wantStatus != 0 && !slices.ContainsFunc(rest.Requests(), func(r twiliotest.RESTRequest) bool { return r.Status == tc.wantStatus }) {
				t.Errorf("no request was answered %d: the case did not happen", tc.wantStatus)
			}
		})
	}
}

// sipState is what a TestACLSyncToleratesOtherPods case works on.
type sipState struct {
	t    *testing.T
	sip  *twiliotest.SIP
	keep string
}

func (f *sipState) list() string { return theList(f.t, f.sip) }

// TestACLSyncPodsConcurrently: several pods syncing the same channels at
// once end with one list, mapped once, holding exactly the channels' IPs.
func TestACLSyncPodsConcurrently(t *testing.T) {
	rest, sip := newSIPFake(t)
	st := store.NewMemory(store.Options{})
	for _, c := range channelsWith("203.0.113.10", "203.0.113.11", "198.51.100.5") {
		if err := st.SaveChannel(context.Background(), c); err != nil {
			t.Fatal(err)
		}
	}
	pods := []*channel.ACLSync{
		newACLSync(t, rest, st, channel.ACLSyncConfig{}),
		newACLSync(t, rest, st, channel.ACLSyncConfig{}),
		newACLSync(t, rest, st, channel.ACLSyncConfig{}),
	}
	var wg sync.WaitGroup
	for range 3 {
		for _, p := range pods {
			wg.Go(func() { _, _ = p.Sync(context.Background()) }) // a lost race may fail; the next sync repairs
		}
	}
	wg.Wait()
	for _, p := range pods {
		if _, err := p.Sync(context.Background()); err != nil {
			t.Fatalf("Sync after the race: %v", err)
		}
	}
	wantInSync(t, sip, "198.51.100.5", "203.0.113.10", "203.0.113.11")
}

// TestACLSyncRunStops: Run reconciles periodically and returns, leaving no
// goroutine behind, when its context ends. It runs in a synctest bubble
// (see aclsync_time_test.go): the periodic reconcile comes exactly one
// Interval after the first, in fake time.
func TestACLSyncRunStops(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) }) // registered first, so it runs last
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		ips := []string{"203.0.113.10"}
		lister := channelsFunc(func(context.Context) ([]channel.Channel, error) {
			mu.Lock()
			defer mu.Unlock()
			return channelsWith(ips...), nil
		})
		const interval = 5 * time.Minute
		m := newMemSync(t, lister, channel.ACLSyncConfig{Interval: interval})
		sip := m.sip
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			m.sync.Run(ctx)
		}()
		synctest.Wait()
		l := sip.Lists(aclList)
		if len(l) != 1 || !slices.Equal(sip.IPs(l[0]), []string{"203.0.113.10"}) {
			t.Fatalf("after the first reconcile: lists %v", l)
		}
		// A change nobody synced (another pod's, say) is picked up by the
		// periodic reconcile, and not before.
		mu.Lock()
		ips = []string{"198.51.100.9"}
		mu.Unlock()
		time.Sleep(interval - time.Nanosecond)
		synctest.Wait()
		if got := sip.IPs(theList(t, sip)); !slices.Equal(got, []string{"203.0.113.10"}) {
			t.Fatalf("IPs before the Interval ended: %v", got)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if got := sip.IPs(theList(t, sip)); !slices.Equal(got, []string{"198.51.100.9"}) {
			t.Fatalf("IPs after the periodic reconcile: %v", got)
		}
		cancel()
		<-done // a Run that did not return would fail the bubble as deadlocked
		if !strings.HasPrefix(m.sync.ListName(), "vivi-") {
			t.Errorf("ListName = %q", m.sync.ListName())
		}
	})
}
