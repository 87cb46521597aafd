package channel_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/store"
)

func mustParse(t *testing.T, doc string) channel.Config {
	t.Helper()
	cfg, err := channel.ParseConfig(strings.NewReader(doc))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	return cfg
}

// snapshot is everything the store holds about agents and channels.
type snapshot struct {
	Agents   []channel.Agent
	Channels []channel.Channel
}

func takeSnapshot(t *testing.T, repo channel.Repository) snapshot {
	t.Helper()
	ctx := context.Background()
	as, err := repo.Agents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := repo.Channels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return snapshot{as, cs}
}

func TestApplyCreatesThenIsIdempotent(t *testing.T) {
	e := newEnv(t)
	e.dns.setA("pbx.acme.test", "198.51.100.20", "198.51.100.21")
	ctx := context.Background()

	res, err := e.prov.Apply(ctx, mustParse(t, goodYAML))
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if res.Agents[0] != (channel.Change{ID: "front", Action: channel.ActionCreated}) ||
		res.Channels[0].Action != channel.ActionCreated || !strings.HasPrefix(res.Channels[0].EventsSecret, channel.EventsSecretPrefix) || len(res.Channels[0].EventsSecret) != 50 ||
		res.Channels[1] != (channel.Change{ID: "beta", Action: channel.ActionCreated}) {
		t.Fatalf("result = %+v", res)
	}
	acme, err := e.store.Channel(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(acme.OriginIPs, []string{"198.51.100.20", "198.51.100.21"}) || acme.EventsSecret != res.Channels[0].EventsSecret {
		t.Fatalf("stored acme = %+v", acme)
	}
	beta, _ := e.store.Channel(ctx, "beta")
	if !reflect.DeepEqual(beta.OriginIPs, []string{"192.0.2.20", "192.0.2.21"}) {
		t.Errorf("originIps given in the file must be kept as written: %v", beta.OriginIPs)
	}
	m, err := channel.NewRouter(e.store).Route(ctx, "198.51.100.21", "01002")
	if err != nil || m.Channel.ID != "acme" || m.Agent.ID != "front" {
		t.Fatalf("Route after apply = %+v, %v", m, err)
	}

	before := takeSnapshot(t, e.store)
	res, err = e.prov.Apply(ctx, mustParse(t, goodYAML))
	if err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	for _, c := range append(res.Agents, res.Channels...) {
		if c.Action != channel.ActionUnchanged || c.EventsSecret != "" {
			t.Errorf("second apply: %+v; want unchanged and no new secret", c)
		}
	}
	if after := takeSnapshot(t, e.store); !reflect.DeepEqual(before, after) {
		t.Errorf("a second apply changed the store:\n%+v\n%+v", before, after)
	}

	changed := strings.Replace(goodYAML, "https://hooks.acme.test/vivi", "https://hooks.acme.test/v2", 1)
	res, err = e.prov.Apply(ctx, mustParse(t, changed))
	if err != nil {
		t.Fatal(err)
	}
	if res.Channels[0].Action != channel.ActionUpdated || !strings.HasPrefix(res.Channels[0].EventsSecret, channel.EventsSecretPrefix) || len(res.Channels[0].EventsSecret) != 50 ||
		res.Channels[0].EventsSecret == acme.EventsSecret {
		t.Errorf("a new eventsUrl must get a new secret: %+v", res.Channels[0])
	}
}

func TestApplyErrors(t *testing.T) {
	const realtimeOff = "agents:\n  - id: off\n    name: Off\n    realtime: false\n"
	tests := map[string]struct {
		yaml string
		want []string
	}{
		"unknown agent": {
			yaml: "channels:\n  - id: c\n    originHost: 192.0.2.1\n    extensions: [\"1\"]\n    agentId: nobody\n",
			want: []string{`config:5: channels[0].agentId: unknown_agent: agent "nobody" is neither in the file nor in the store`},
		},
		"agent not realtime": {
			yaml: realtimeOff + "channels:\n  - id: c\n    originHost: 192.0.2.1\n    extensions: [\"1\"]\n    agentId: off\n",
			want: []string{`config:9: channels[0].agentId: agent_not_realtime: `},
		},
		"dns failure": {
			yaml: "channels:\n  - id: c\n    originHost: nowhere.acme.test\n    extensions: [\"1\"]\n",
			want: []string{`config:3: channels[0].originHost: dns_resolution_failed: nowhere.acme.test has no IPv4 address`},
		},
		"overlap within the file": {
			yaml: "channels:\n  - id: a\n    originHost: 192.0.2.1\n    extensions: [\"1\"]\n" +
				"  - id: b\n    originHost: 192.0.2.1\n    extensions:\n      - \"2\"\n      - \"1\"\n",
			want: []string{`config:9: channels[1].extensions[1]: channel_conflict: channel conflict: origin IP 192.0.2.1 with extension 1 is already routed to channel a`},
		},
		"overlap with a stored channel": {
			yaml: "channels:\n  - id: new\n    originHost: 203.0.113.10\n    extensions: [\"1001\"]\n",
			want: []string{`config:4: channels[0].extensions[0]: channel_conflict: channel conflict: origin IP 203.0.113.10 with extension 1001 is already routed to channel acme`},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			if _, err := e.prov.CreateChannel(ctx, baseChannel()); err != nil {
				t.Fatal(err)
			}
			before := takeSnapshot(t, e.store)
			_, err := e.prov.Apply(ctx, mustParse(t, tc.yaml))
			errs := channel.ConfigErrors(err)
			if len(errs) != len(tc.want) {
				t.Fatalf("errors = %v; want %d", err, len(tc.want))
			}
			for i, w := range tc.want {
				if got := errs[i].Error(); !strings.HasPrefix(got, w) {
					t.Errorf("error %d = %q\nwant prefix      %q", i, got, w)
				}
			}
			if after := takeSnapshot(t, e.store); !reflect.DeepEqual(before, after) {
				t.Errorf("a refused apply changed the store")
			}
		})
	}
}

// TestApplyBadFileLeavesStoreUnchanged applies a file whose agent is good
// and whose channel is bad: nothing of it is written.
func TestApplyBadFileLeavesStoreUnchanged(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.prov.Apply(ctx, mustParse(t, "agents:\n  - id: keep\n    name: Keep\n    realtime: true\n")); err != nil {
		t.Fatal(err)
	}
	before := takeSnapshot(t, e.store)
	bad := "agents:\n  - id: keep\n    name: Renamed\n    realtime: true\n  - id: extra\n    name: Extra\n" +
		"channels:\n  - id: c\n    originHost: missing.acme.test\n    extensions: [\"1\"]\n    agentId: keep\n"
	if _, err := e.prov.Apply(ctx, mustParse(t, bad)); err == nil {
		t.Fatal("Apply of a file whose host does not resolve succeeded")
	}
	if after := takeSnapshot(t, e.store); !reflect.DeepEqual(before, after) {
		t.Fatalf("store changed:\n%+v\n%+v", before, after)
	}
}

// failingApplyRepo refuses Apply as the store does when it finds a
// conflict the checks could not see (a concurrent writer).
type failingApplyRepo struct {
	*store.Memory
	err error
}

func (f failingApplyRepo) Apply(context.Context, []channel.Agent, []channel.Channel) error {
	return f.err
}

func TestApplyStoreConflictIsReported(t *testing.T) {
	e := newEnv(t)
	conflict := &store.ConflictError{ChannelID: "other", IP: "192.0.2.1", Extension: "1"}
	prov := e.provisioner(failingApplyRepo{Memory: e.store, err: errors.Join(errors.New("store: apply"), conflict)})
	_, err := prov.Apply(context.Background(), mustParse(t, "channels:\n  - id: c\n    originHost: 192.0.2.1\n    extensions: [\"1\"]\n"))
	if !errors.Is(err, channel.ErrConflict) || !strings.Contains(err.Error(), "channel_conflict: channel conflict: origin 192.0.2.1 extension 1 belongs to channel other") {
		t.Fatalf("err = %v", err)
	}
}

func TestApplyLeavesCallerConfigAlone(t *testing.T) {
	e := newEnv(t)
	cfg := channel.Config{Channels: []channel.Channel{{ID: "c", OriginHost: "192.0.2.7", OriginProtocol: "udp", Extensions: []string{"1"}}}}
	if _, err := e.prov.Apply(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if c := cfg.Channels[0]; c.OriginProtocol != "udp" || c.OriginIPs != nil {
		t.Errorf("Apply changed its argument: %+v", c)
	}
	got, _ := e.store.Channel(context.Background(), "c")
	if got.OriginProtocol != channel.UDP || got.OriginPort != 5060 || !reflect.DeepEqual(got.OriginIPs, []string{"192.0.2.7"}) {
		t.Errorf("stored %+v", got)
	}
}
