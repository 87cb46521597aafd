package channel_test

import (
	"context"
	"errors"
	"testing"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/store"
)

// fakeRouteStore is a RouteStore with function fields.
type fakeRouteStore struct {
	channelByOrigin func(ip, ext string) (channel.Channel, error)
	agent           func(id string) (channel.Agent, error)
}

func (f fakeRouteStore) ChannelByOrigin(_ context.Context, ip, ext string) (channel.Channel, error) {
	return f.channelByOrigin(ip, ext)
}

func (f fakeRouteStore) Agent(_ context.Context, id string) (channel.Agent, error) {
	return f.agent(id)
}

func TestRouterRoute(t *testing.T) {
	ctx := context.Background()
	mem := store.NewMemory(store.Options{})
	realtime := baseAgent()
	off := baseAgent()
	off.ID, off.Realtime = "off", false
	for _, a := range []channel.Agent{realtime, off} {
		if err := mem.SaveAgent(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	chans := []channel.Channel{
		{ID: "ok", OriginHost: "203.0.113.10", OriginIPs: []string{"203.0.113.10"}, Extensions: []string{"1001"}, AgentID: "front"},
		{ID: "noagent", OriginHost: "203.0.113.11", OriginIPs: []string{"203.0.113.11"}, Extensions: []string{"1001"}},
		{ID: "gone", OriginHost: "203.0.113.12", OriginIPs: []string{"203.0.113.12"}, Extensions: []string{"1001"}, AgentID: "deleted"},
		{ID: "notrt", OriginHost: "203.0.113.13", OriginIPs: []string{"203.0.113.13"}, Extensions: []string{"1001"}, AgentID: "off"},
	}
	for _, c := range chans {
		if err := mem.SaveChannel(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	r := channel.NewRouter(mem)
	tests := map[string]struct {
		ip, ext   string
		reason    string
		channelID string
	}{
		"match":              {ip: "203.0.113.10", ext: "1001", channelID: "ok"},
		"unknown source IP":  {ip: "198.51.100.1", ext: "1001", reason: channel.ReasonUnknownSourceIP},
		"unknown extension":  {ip: "203.0.113.10", ext: "1002", reason: channel.ReasonUnknownExtension},
		"channel no agent":   {ip: "203.0.113.11", ext: "1001", reason: channel.ReasonNoAgent},
		"agent missing":      {ip: "203.0.113.12", ext: "1001", reason: channel.ReasonNoAgent},
		"agent not realtime": {ip: "203.0.113.13", ext: "1001", reason: channel.ReasonAgentNotRealtime},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			m, err := r.Route(ctx, tc.ip, tc.ext)
			if tc.reason != "" {
				var rej interface{ RejectReason() string }
				if !errors.As(err, &rej) || rej.RejectReason() != tc.reason {
					t.Fatalf("Route = %v; want reject %s", err, tc.reason)
				}
				return
			}
			if err != nil || m.Channel.ID != tc.channelID || m.Agent.ID != "front" || !m.Agent.Realtime {
				t.Fatalf("Route = %+v, %v", m, err)
			}
		})
	}
}

func TestRouterStoreFailureIsNotAReject(t *testing.T) {
	boom := errors.New("redis down")
	tests := map[string]fakeRouteStore{
		"channel lookup": {channelByOrigin: func(string, string) (channel.Channel, error) { return channel.Channel{}, boom }},
		"agent lookup": {
			channelByOrigin: func(string, string) (channel.Channel, error) { return channel.Channel{ID: "c", AgentID: "a"}, nil },
			agent:           func(string) (channel.Agent, error) { return channel.Agent{}, boom },
		},
	}
	for name, fake := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := channel.NewRouter(fake).Route(context.Background(), "203.0.113.1", "1001")
			var rej *channel.RejectError
			if !errors.Is(err, boom) || errors.As(err, &rej) {
				t.Fatalf("err = %v; want the store error, not a reject", err)
			}
		})
	}
}
