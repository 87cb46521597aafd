package store

import (
	"errors"
	"reflect"
	"testing"

	"github.com/vivi/bridge/channel"
)

func agent(id, name string) channel.Agent {
	return channel.Agent{
		ID: id, Name: name, Realtime: true, Instructions: "be kind",
		TransferDestinations: []channel.Destination{{Name: "Front Desk", Number: "2001"}},
		DTMF:                 map[string]string{"0": "Front Desk"},
		TurnDetection:        &channel.TurnDetection{Threshold: 0.5},
	}
}

func chann(id, agentID string, ips, exts []string) channel.Channel {
	return channel.Channel{
		ID: id, Name: "name-" + id, OriginHost: "pbx.example.com", OriginProtocol: channel.TLS,
		OriginIPs: ips, Extensions: exts, AgentID: agentID,
	}
}

func testAgents(t *testing.T, newStore newStoreFunc) {
	ctx, st := t.Context(), newStore(t, Options{})
	if _, err := st.Agent(ctx, "a1"); !errors.Is(err, channel.ErrNotFound) {
		t.Fatalf("Agent(missing) = %v, want ErrNotFound", err)
	}
	if err := st.DeleteAgent(ctx, "a1"); !errors.Is(err, channel.ErrNotFound) {
		t.Fatalf("DeleteAgent(missing) = %v, want ErrNotFound", err)
	}
	list, err := st.Agents(ctx)
	if err != nil || len(list) != 0 {
		t.Fatalf("Agents(empty) = %v, %v; want none", list, err)
	}
	a2, a1 := agent("a2", "Two"), agent("a1", "One")
	for _, a := range []channel.Agent{a2, a1} {
		if err := st.SaveAgent(ctx, a); err != nil {
			t.Fatalf("SaveAgent(%s): %v", a.ID, err)
		}
	}
	// The store must not alias what callers hold: change the saved value and a read one.
	a1.DTMF["0"] = "changed"
	a1.TransferDestinations[0].Number = "9999"
	got, err := st.Agent(ctx, "a1")
	if err != nil {
		t.Fatalf("Agent(a1): %v", err)
	}
	sameJSON(t, "Agent(a1)", got, agent("a1", "One"))
	got.DTMF["0"] = "changed"
	got.TurnDetection.Threshold = 1
	if again, _ := st.Agent(ctx, "a1"); !reflect.DeepEqual(again, agent("a1", "One")) {
		t.Fatalf("stored agent changed through a returned value: %+v", again)
	}

	upd := agent("a2", "Two v2")
	if err := st.SaveAgent(ctx, upd); err != nil {
		t.Fatalf("SaveAgent(update): %v", err)
	}
	list, err = st.Agents(ctx)
	if err != nil {
		t.Fatalf("Agents: %v", err)
	}
	sameJSON(t, "Agents (sorted by ID, upserted)", list, []channel.Agent{agent("a1", "One"), upd})

	if err := st.DeleteAgent(ctx, "a1"); err != nil {
		t.Fatalf("DeleteAgent: %v", err)
	}
	if _, err := st.Agent(ctx, "a1"); !errors.Is(err, channel.ErrNotFound) {
		t.Fatalf("Agent(deleted) = %v, want ErrNotFound", err)
	}
}

func testChannels(t *testing.T, newStore newStoreFunc) {
	ctx, st := t.Context(), newStore(t, Options{})
	if _, err := st.Channel(ctx, "c1"); !errors.Is(err, channel.ErrNotFound) {
		t.Fatalf("Channel(missing) = %v, want ErrNotFound", err)
	}
	if err := st.DeleteChannel(ctx, "c1"); !errors.Is(err, channel.ErrNotFound) {
		t.Fatalf("DeleteChannel(missing) = %v, want ErrNotFound", err)
	}
	c3 := chann("c3", "a", []string{"10.0.0.3"}, []string{"3001"})
	c1 := chann("c1", "a", []string{"10.0.0.1"}, []string{"1001", "1002"})
	c1.EventsURL, c1.EventsSecret = "https://hooks.example.com/x", "secret"
	c1.Destination = &channel.DestinationInfo{Host: "vivi.sip.twilio.com", Port: 5061, Protocol: channel.TLS, URIs: []string{"sip:1001@vivi"}}
	want1 := c1
	want1.Extensions = []string{"1001", "1002"}
	for _, c := range []channel.Channel{c3, c1} {
		if err := st.SaveChannel(ctx, c); err != nil {
			t.Fatalf("SaveChannel(%s): %v", c.ID, err)
		}
	}
	c1.Extensions[0] = "changed" // caller's slice, must not alias the stored one
	got, err := st.Channel(ctx, "c1")
	if err != nil {
		t.Fatalf("Channel(c1): %v", err)
	}
	sameJSON(t, "Channel(c1)", got, want1)
	got.OriginIPs[0] = "changed"
	got.Destination.URIs[0] = "changed"
	if again, _ := st.Channel(ctx, "c1"); again.OriginIPs[0] != "10.0.0.1" || again.Destination.URIs[0] != "sip:1001@vivi" {
		t.Fatalf("stored channel changed through a returned value: %+v", again)
	}
	list, err := st.Channels(ctx)
	if err != nil {
		t.Fatalf("Channels: %v", err)
	}
	sameJSON(t, "Channels (sorted by ID)", list, []channel.Channel{want1, c3})

	if err := st.DeleteChannel(ctx, "c1"); err != nil {
		t.Fatalf("DeleteChannel: %v", err)
	}
	if _, err := st.Channel(ctx, "c1"); !errors.Is(err, channel.ErrNotFound) {
		t.Fatalf("Channel(deleted) = %v, want ErrNotFound", err)
	}
}

// lookup is one ChannelByOrigin expectation: a channel ID, or an error.
type lookup struct {
	ip, ext string
	id      string
	err     error
}

func checkLookups(t *testing.T, st Store, stage string, lookups []lookup) {
	t.Helper()
	for _, l := range lookups {
		c, err := st.ChannelByOrigin(t.Context(), l.ip, l.ext)
		if l.err != nil {
			if !errors.Is(err, l.err) {
				t.Errorf("%s: ChannelByOrigin(%s, %s) = %q, %v; want %v", stage, l.ip, l.ext, c.ID, err, l.err)
			}
			continue
		}
		if err != nil || c.ID != l.id {
			t.Errorf("%s: ChannelByOrigin(%s, %s) = %q, %v; want %q", stage, l.ip, l.ext, c.ID, err, l.id)
		}
	}
}

func testRouting(t *testing.T, newStore newStoreFunc) {
	ctx, st := t.Context(), newStore(t, Options{})
	unknownIP, unknownExt := channel.ErrUnknownSourceIP, channel.ErrUnknownExtension
	checkLookups(t, st, "empty", []lookup{{ip: "10.0.0.1", ext: "1001", err: unknownIP}})
	for _, c := range []channel.Channel{
		chann("c1", "a", []string{"10.0.0.1", "10.0.0.2"}, []string{"1001", "1002"}),
		chann("c2", "a", []string{"10.0.0.1"}, []string{"2001"}),
		chann("c3", "a", []string{"10.0.0.3"}, nil), // an IP with no extension yet
	} {
		if err := st.SaveChannel(ctx, c); err != nil {
			t.Fatalf("SaveChannel(%s): %v", c.ID, err)
		}
	}
	checkLookups(t, st, "saved", []lookup{
		{ip: "10.0.0.1", ext: "1001", id: "c1"},
		{ip: "10.0.0.2", ext: "1002", id: "c1"},
		{ip: "10.0.0.1", ext: "2001", id: "c2"},
		{ip: "10.0.0.2", ext: "2001", err: unknownExt},
		{ip: "10.0.0.1", ext: "3001", err: unknownExt},
		{ip: "10.0.0.3", ext: "1001", err: unknownExt},
		{ip: "10.0.0.9", ext: "1001", err: unknownIP},
	})
	// Update c1: old pairs go, new pairs come.
	if err := st.SaveChannel(ctx, chann("c1", "a", []string{"10.0.0.2", "10.0.0.4"}, []string{"1001", "1003"})); err != nil {
		t.Fatalf("SaveChannel(c1 update): %v", err)
	}
	checkLookups(t, st, "updated", []lookup{
		{ip: "10.0.0.1", ext: "1001", err: unknownExt}, // 10.0.0.1 still listed by c2
		{ip: "10.0.0.2", ext: "1002", err: unknownExt},
		{ip: "10.0.0.2", ext: "1001", id: "c1"},
		{ip: "10.0.0.4", ext: "1003", id: "c1"},
		{ip: "10.0.0.1", ext: "2001", id: "c2"},
	})
	if err := st.DeleteChannel(ctx, "c2"); err != nil {
		t.Fatalf("DeleteChannel(c2): %v", err)
	}
	if err := st.DeleteChannel(ctx, "c1"); err != nil {
		t.Fatalf("DeleteChannel(c1): %v", err)
	}
	checkLookups(t, st, "deleted", []lookup{
		{ip: "10.0.0.1", ext: "2001", err: unknownIP},
		{ip: "10.0.0.2", ext: "1001", err: unknownIP},
		{ip: "10.0.0.4", ext: "1003", err: unknownIP},
		{ip: "10.0.0.3", ext: "1001", err: unknownExt},
	})
}

func testConflict(t *testing.T, newStore newStoreFunc) {
	ctx, st := t.Context(), newStore(t, Options{})
	c1 := chann("c1", "a", []string{"10.0.0.1"}, []string{"1001", "1002"})
	c2 := chann("c2", "a", []string{"10.0.0.2"}, []string{"2001"})
	for _, c := range []channel.Channel{c1, c2, c1} { // re-saving its own pairs is no conflict
		if err := st.SaveChannel(ctx, c); err != nil {
			t.Fatalf("SaveChannel(%s): %v", c.ID, err)
		}
	}
	before := snapshot(t, st)
	tests := map[string]channel.Channel{
		"new channel":      chann("c3", "a", []string{"10.0.0.3", "10.0.0.1"}, []string{"3001", "1002"}),
		"existing channel": chann("c2", "b", []string{"10.0.0.2", "10.0.0.1"}, []string{"2001", "1002"}),
	}
	for name, c := range tests {
		err := st.SaveChannel(ctx, c)
		var ce *ConflictError
		if !errors.Is(err, channel.ErrConflict) || !errors.As(err, &ce) {
			t.Fatalf("%s: SaveChannel = %v, want a *ConflictError matching channel.ErrConflict", name, err)
		}
		if *ce != (ConflictError{ChannelID: "c1", IP: "10.0.0.1", Extension: "1002"}) {
			t.Fatalf("%s: conflict = %+v", name, *ce)
		}
		sameJSON(t, name+": store after a conflict", snapshot(t, st), before)
	}
	// A pair is free once its owner lets it go.
	if err := st.SaveChannel(ctx, chann("c1", "a", []string{"10.0.0.1"}, []string{"1001"})); err != nil {
		t.Fatalf("SaveChannel(c1 shrink): %v", err)
	}
	if err := st.SaveChannel(ctx, tests["existing channel"]); err != nil {
		t.Fatalf("SaveChannel(c2 takes a freed pair): %v", err)
	}
	checkLookups(t, st, "moved", []lookup{{ip: "10.0.0.1", ext: "1002", id: "c2"}, {ip: "10.0.0.1", ext: "1001", id: "c1"}})
}

// storeState is everything visible of a store's configuration.
type storeState struct {
	Agents   []channel.Agent
	Channels []channel.Channel
	Routes   map[string]string // "ip ext" -> channel ID or error
}

// snapshot reads the configuration and the route of every pair of a fixed
// set of IPs and extensions.
func snapshot(t *testing.T, st Store) storeState {
	t.Helper()
	var s storeState
	var err error
	if s.Agents, err = st.Agents(t.Context()); err != nil {
		t.Fatalf("Agents: %v", err)
	}
	if s.Channels, err = st.Channels(t.Context()); err != nil {
		t.Fatalf("Channels: %v", err)
	}
	s.Routes = make(map[string]string)
	for _, ip := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"} {
		for _, ext := range []string{"1001", "1002", "2001", "3001"} {
			c, err := st.ChannelByOrigin(t.Context(), ip, ext)
			if err != nil {
				s.Routes[ip+" "+ext] = err.Error()
			} else {
				s.Routes[ip+" "+ext] = c.ID
			}
		}
	}
	return s
}

func testApply(t *testing.T, newStore newStoreFunc) {
	ctx, st := t.Context(), newStore(t, Options{})
	if err := st.Apply(ctx, []channel.Agent{agent("a1", "One")},
		[]channel.Channel{chann("old", "a1", []string{"10.0.0.1"}, []string{"1001", "1002"})}); err != nil {
		t.Fatalf("Apply(seed): %v", err)
	}
	before := snapshot(t, st)
	if err := st.Apply(ctx, nil, nil); err != nil {
		t.Fatalf("Apply(empty): %v", err)
	}
	sameJSON(t, "store after an empty Apply", snapshot(t, st), before)
	conflicting := map[string][]channel.Channel{
		"within the batch": {
			chann("x", "a2", []string{"10.0.0.2"}, []string{"2001"}),
			chann("y", "a2", []string{"10.0.0.3", "10.0.0.2"}, []string{"2001"}),
		},
		"with a stored channel outside the batch": {
			chann("x", "a2", []string{"10.0.0.3"}, []string{"3001"}),
			chann("z", "a2", []string{"10.0.0.1"}, []string{"1002"}),
		},
	}
	for name, chans := range conflicting {
		err := st.Apply(ctx, []channel.Agent{agent("a1", "changed"), agent("a2", "Two")}, chans)
		if !errors.Is(err, channel.ErrConflict) {
			t.Fatalf("%s: Apply = %v, want ErrConflict", name, err)
		}
		sameJSON(t, name+": store after a failed Apply", snapshot(t, st), before)
	}
	// A batch may move a pair between its own channels and replaces stored versions.
	agents := []channel.Agent{agent("a1", "One v2"), agent("a2", "Two")}
	chans := []channel.Channel{
		chann("old", "a2", []string{"10.0.0.1"}, []string{"1001"}),
		chann("z", "a1", []string{"10.0.0.1", "10.0.0.4"}, []string{"1002"}),
	}
	if err := st.Apply(ctx, agents, chans); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	after := snapshot(t, st)
	sameJSON(t, "agents after Apply", after.Agents, agents)
	sameJSON(t, "channels after Apply", after.Channels, chans)
	checkLookups(t, st, "applied", []lookup{
		{ip: "10.0.0.1", ext: "1001", id: "old"},
		{ip: "10.0.0.1", ext: "1002", id: "z"},
		{ip: "10.0.0.4", ext: "1002", id: "z"},
		{ip: "10.0.0.4", ext: "1001", err: channel.ErrUnknownExtension},
	})
}

func testDeleteAgentInUse(t *testing.T, newStore newStoreFunc) {
	ctx, st := t.Context(), newStore(t, Options{})
	if err := st.Apply(ctx, []channel.Agent{agent("a", "A"), agent("b", "B")}, []channel.Channel{
		chann("c2", "a", []string{"10.0.0.2"}, []string{"1"}),
		chann("c1", "a", []string{"10.0.0.1"}, []string{"1"}),
		chann("c3", "b", []string{"10.0.0.3"}, []string{"1"}),
	}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	err := st.DeleteAgent(ctx, "a")
	var iu *InUseError
	if !errors.As(err, &iu) || !reflect.DeepEqual(iu.ChannelIDs, []string{"c1", "c2"}) {
		t.Fatalf("DeleteAgent(in use) = %v, want *InUseError{c1, c2}", err)
	}
	if _, err := st.Agent(ctx, "a"); err != nil {
		t.Fatalf("agent deleted although in use: %v", err)
	}
	for _, id := range []string{"c1", "c2"} {
		if err := st.DeleteChannel(ctx, id); err != nil {
			t.Fatalf("DeleteChannel(%s): %v", id, err)
		}
	}
	if err := st.DeleteAgent(ctx, "a"); err != nil {
		t.Fatalf("DeleteAgent(unused): %v", err)
	}
}
