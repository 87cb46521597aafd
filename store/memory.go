package store

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"sync"

	"github.com/vivi/bridge/channel"
)

// Memory is the in-process store, used when REDIS_URL is empty: one process
// only. Values are kept JSON-encoded, exactly as Redis keeps them, so nothing
// a caller holds aliases what is stored and both stores round-trip values the
// same way. Expiry follows Options.Now; expired entries are invisible at once
// and removed lazily.
type Memory struct {
	opts Options

	// cfgMu guards agents, channels and the routing index; the routing lookup
	// on the webhook's hot path takes it for reading only.
	cfgMu    sync.RWMutex
	agents   map[string][]byte
	channels map[string][]byte
	routes   map[pair]string
	ips      map[string]map[string]struct{} // ip -> IDs of channels listing it

	sessMu   sync.Mutex
	sessions map[string]*memSession
	tokens   map[string]memToken
	writes   int // session and token writes since the last sweep

	subMu sync.RWMutex
	subs  map[string]map[*memSub]struct{}

	pods memPods // pods.go

	// outbox is taken inside sessMu by session writes (lock order: sessMu, outbox.mu).
	outbox memOutbox // outbox_memory.go
}

// NewMemory returns an empty in-memory store.
func NewMemory(opts Options) *Memory {
	return &Memory{
		opts:     opts.withDefaults(),
		agents:   make(map[string][]byte),
		channels: make(map[string][]byte),
		routes:   make(map[pair]string),
		ips:      make(map[string]map[string]struct{}),
		sessions: make(map[string]*memSession),
		tokens:   make(map[string]memToken),
		subs:     make(map[string]map[*memSub]struct{}),
	}
}

// Ping reports whether the store is usable; memory always is.
func (m *Memory) Ping(ctx context.Context) error { return ctx.Err() }

// SaveAgent creates or replaces the agent with a.ID.
func (m *Memory) SaveAgent(_ context.Context, a channel.Agent) error {
	if a.ID == "" {
		return fmt.Errorf("store: save agent: %w", errEmptyID)
	}
	b, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("store: save agent %s: %w", a.ID, err)
	}
	m.cfgMu.Lock()
	defer m.cfgMu.Unlock()
	m.agents[a.ID] = b
	return nil
}

// Agent returns the agent with id, or an error wrapping channel.ErrNotFound.
func (m *Memory) Agent(_ context.Context, id string) (channel.Agent, error) {
	m.cfgMu.RLock()
	b, ok := m.agents[id]
	m.cfgMu.RUnlock()
	if !ok {
		return channel.Agent{}, fmt.Errorf("store: agent %s: %w", id, channel.ErrNotFound)
	}
	return decode[channel.Agent](b, "agent "+id)
}

// Agents returns every agent, sorted by ID.
func (m *Memory) Agents(_ context.Context) ([]channel.Agent, error) {
	m.cfgMu.RLock()
	defer m.cfgMu.RUnlock()
	return decodeAll[channel.Agent](m.agents, "agents", func(a channel.Agent) string { return a.ID })
}

// DeleteAgent deletes the agent with id unless a channel uses it (*InUseError).
func (m *Memory) DeleteAgent(_ context.Context, id string) error {
	m.cfgMu.Lock()
	defer m.cfgMu.Unlock()
	if _, ok := m.agents[id]; !ok {
		return fmt.Errorf("store: delete agent %s: %w", id, channel.ErrNotFound)
	}
	chans, err := decodeAll[channel.Channel](m.channels, "channels", func(c channel.Channel) string { return c.ID })
	if err != nil {
		return err
	}
	if err := inUse(id, chans); err != nil {
		return fmt.Errorf("store: delete agent %s: %w", id, err)
	}
	delete(m.agents, id)
	return nil
}

// SaveChannel creates or replaces c together with its routing index entries.
// A pair owned by another channel fails with a *ConflictError and changes nothing.
func (m *Memory) SaveChannel(_ context.Context, c channel.Channel) error {
	b, err := newBatch([]channel.Channel{c}, nil)
	if err != nil {
		return fmt.Errorf("store: save channel: %w", err)
	}
	m.cfgMu.Lock()
	defer m.cfgMu.Unlock()
	if err := m.applyLocked(b, nil); err != nil {
		return fmt.Errorf("store: save channel %s: %w", c.ID, err)
	}
	return nil
}

// SaveChannelIf saves c if the stored channel c.ID is prev (nil: none),
// checked and written under the config lock; see channel.Repository.
func (m *Memory) SaveChannelIf(_ context.Context, c channel.Channel, prev *channel.Channel) error {
	b, err := newBatch([]channel.Channel{c}, nil)
	if err != nil {
		return fmt.Errorf("store: save channel: %w", err)
	}
	b.expect = map[string]*channel.Channel{c.ID: prev}
	m.cfgMu.Lock()
	defer m.cfgMu.Unlock()
	if err := m.applyLocked(b, nil); err != nil {
		return fmt.Errorf("store: save channel %s: %w", c.ID, err)
	}
	return nil
}

// SaveAgentIf saves a if the stored agent a.ID is prev (nil: none), checked
// and written under the config lock; see channel.Repository.
func (m *Memory) SaveAgentIf(_ context.Context, a channel.Agent, prev *channel.Agent) error {
	enc, err := encodeAgents([]channel.Agent{a})
	if err != nil {
		return fmt.Errorf("store: save agent: %w", err)
	}
	m.cfgMu.Lock()
	defer m.cfgMu.Unlock()
	if err := checkAgent(a.ID, m.agents[a.ID], prev); err != nil {
		return fmt.Errorf("store: save agent %s: %w", a.ID, err)
	}
	m.agents[a.ID] = enc[a.ID]
	return nil
}

// checkAgent is the check of SaveAgentIf: data, the stored JSON of agent id
// (nil: none), must be prev.
func checkAgent(id string, data []byte, prev *channel.Agent) error {
	switch {
	case prev == nil && data != nil:
		return fmt.Errorf("agent %q %w", id, channel.ErrExists)
	case prev == nil:
		return nil
	case data == nil:
		return fmt.Errorf("agent %q: %w", id, channel.ErrStale)
	}
	got, err := decode[channel.Agent](data, "agent "+id)
	if err != nil {
		return err
	}
	if !reflect.DeepEqual(got, *prev) {
		return fmt.Errorf("agent %q: %w", id, channel.ErrStale)
	}
	return nil
}

// Channel returns the channel with id, or an error wrapping channel.ErrNotFound.
func (m *Memory) Channel(_ context.Context, id string) (channel.Channel, error) {
	m.cfgMu.RLock()
	b, ok := m.channels[id]
	m.cfgMu.RUnlock()
	if !ok {
		return channel.Channel{}, fmt.Errorf("store: channel %s: %w", id, channel.ErrNotFound)
	}
	return decode[channel.Channel](b, "channel "+id)
}

// Channels returns every channel, sorted by ID.
func (m *Memory) Channels(_ context.Context) ([]channel.Channel, error) {
	m.cfgMu.RLock()
	defer m.cfgMu.RUnlock()
	return decodeAll[channel.Channel](m.channels, "channels", func(c channel.Channel) string { return c.ID })
}

// DeleteChannel deletes the channel with id and its routing index entries.
func (m *Memory) DeleteChannel(_ context.Context, id string) error {
	m.cfgMu.Lock()
	defer m.cfgMu.Unlock()
	if _, ok := m.channels[id]; !ok {
		return fmt.Errorf("store: delete channel %s: %w", id, channel.ErrNotFound)
	}
	b, _ := newBatch(nil, []string{id})
	if err := m.applyLocked(b, nil); err != nil {
		return fmt.Errorf("store: delete channel %s: %w", id, err)
	}
	return nil
}

// ChannelByOrigin returns the channel that routes calls from ip to ext. It
// returns channel.ErrUnknownSourceIP when no channel lists ip and
// channel.ErrUnknownExtension when none of those that do lists ext.
func (m *Memory) ChannelByOrigin(_ context.Context, ip, ext string) (channel.Channel, error) {
	m.cfgMu.RLock()
	defer m.cfgMu.RUnlock()
	id, ok := m.routes[pair{ip, ext}]
	if !ok {
		if len(m.ips[ip]) > 0 {
			return channel.Channel{}, channel.ErrUnknownExtension
		}
		return channel.Channel{}, channel.ErrUnknownSourceIP
	}
	b, ok := m.channels[id]
	if !ok { // cannot happen while the index invariant holds
		return channel.Channel{}, channel.ErrUnknownExtension
	}
	return decode[channel.Channel](b, "channel "+id)
}

// Apply writes all agents and channels as one atomic change: on a conflict
// (between channels of the batch, or with a stored channel outside it)
// nothing is written. Channels of the batch replace their stored versions and
// may take pairs from one another; of two entries with one ID the last wins.
func (m *Memory) Apply(_ context.Context, agents []channel.Agent, channels []channel.Channel) error {
	b, err := newBatch(channels, nil)
	if err != nil {
		return fmt.Errorf("store: apply: %w", err)
	}
	enc, err := encodeAgents(agents)
	if err != nil {
		return fmt.Errorf("store: apply: %w", err)
	}
	m.cfgMu.Lock()
	defer m.cfgMu.Unlock()
	if err := m.applyLocked(b, enc); err != nil {
		return fmt.Errorf("store: apply: %w", err)
	}
	return nil
}

// applyLocked plans b against the current state and, when it has no
// conflict, writes it with agents (ID -> JSON). The caller holds cfgMu.
func (m *Memory) applyLocked(b channelBatch, agents map[string][]byte) error {
	stored := make(map[string]channel.Channel)
	for _, id := range b.ids() {
		if data, ok := m.channels[id]; ok {
			c, err := decode[channel.Channel](data, "channel "+id)
			if err != nil {
				return err
			}
			stored[id] = c
		}
	}
	owners := make(map[pair]string)
	for _, p := range b.pairs() {
		if id, ok := m.routes[p]; ok {
			owners[p] = id
		}
	}
	change, err := b.plan(stored, owners)
	if err != nil {
		return err
	}
	put := make(map[string][]byte, len(b.put))
	for _, c := range b.put {
		data, err := json.Marshal(c)
		if err != nil {
			return fmt.Errorf("channel %s: %w", c.ID, err)
		}
		put[c.ID] = data
	}
	// Nothing can fail from here on.
	for _, id := range b.del {
		delete(m.channels, id)
	}
	for id, data := range put {
		m.channels[id] = data
	}
	for _, p := range change.delRoutes {
		delete(m.routes, p)
	}
	for _, r := range change.setRoutes {
		m.routes[r.pair] = r.channelID
	}
	for _, im := range change.ipRemove {
		delete(m.ips[im.ip], im.channelID)
		if len(m.ips[im.ip]) == 0 {
			delete(m.ips, im.ip)
		}
	}
	for _, im := range change.ipAdd {
		if m.ips[im.ip] == nil {
			m.ips[im.ip] = make(map[string]struct{})
		}
		m.ips[im.ip][im.channelID] = struct{}{}
	}
	for id, data := range agents {
		m.agents[id] = data
	}
	return nil
}

// encodeAgents returns the agents as ID -> JSON (last one wins on duplicate IDs).
func encodeAgents(agents []channel.Agent) (map[string][]byte, error) {
	out := make(map[string][]byte, len(agents))
	for _, a := range agents {
		if a.ID == "" {
			return nil, fmt.Errorf("agent: %w", errEmptyID)
		}
		data, err := json.Marshal(a)
		if err != nil {
			return nil, fmt.Errorf("agent %s: %w", a.ID, err)
		}
		out[a.ID] = data
	}
	return out, nil
}

// inUse returns an *InUseError when any of chans uses agent id.
func inUse(id string, chans []channel.Channel) error {
	var users []string
	for _, c := range chans {
		if c.AgentID == id {
			users = append(users, c.ID)
		}
	}
	if len(users) == 0 {
		return nil
	}
	slices.Sort(users)
	return &InUseError{AgentID: id, ChannelIDs: users}
}

// decode unmarshals one stored value; what names it in the error.
func decode[T any](data []byte, what string) (T, error) {
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		return v, fmt.Errorf("store: decode %s: %w", what, err)
	}
	return v, nil
}

// decodeAll unmarshals every value of m and sorts them by key(v).
func decodeAll[T any](m map[string][]byte, what string, key func(T) string) ([]T, error) {
	out := make([]T, 0, len(m))
	for _, data := range m {
		v, err := decode[T](data, what)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return key(out[i]) < key(out[j]) })
	return out, nil
}
