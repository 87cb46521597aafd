package channel_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
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
// goroutine behind, when its context ends.
func TestACLSyncRunStops(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) }) // registered first, so it runs last
	rest, sip := newSIPFake(t)
	var mu sync.Mutex
	ips := []string{"203.0.113.10"}
	lister := channelsFunc(func(context.Context) ([]channel.Channel, error) {
		mu.Lock()
		defer mu.Unlock()
		return channelsWith(ips...), nil
	})
	s := newACLSync(t, rest, lister, channel.ACLSyncConfig{Interval: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	waitFor(t, "the first reconcile", func() bool {
		l := sip.Lists(aclList)
		return len(l) == 1 && slices.Equal(sip.IPs(l[0]), []string{"203.0.113.10"})
	})
	// A change nobody synced (another pod's, say) is picked up by the
	// periodic reconcile.
	mu.Lock()
	ips = []string{"198.51.100.9"}
	mu.Unlock()
	waitFor(t, "the periodic reconcile", func() bool { return slices.Equal(sip.IPs(theList(t, sip)), []string{"198.51.100.9"}) })
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if !strings.HasPrefix(s.ListName(), "vivi-") {
		t.Errorf("ListName = %q", s.ListName())
	}
}
