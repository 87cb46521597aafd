package store

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/vivi/bridge/channel"
)

// ConfigSource is what a ConfigCopy loads: every agent and every channel.
type ConfigSource interface {
	Agents(ctx context.Context) ([]channel.Agent, error)
	Channels(ctx context.Context) ([]channel.Channel, error)
}

// ConfigCopy is an in-process copy of the agents and channels (with the
// routing index) of a shared store, so that a pod can route calls and find
// their agents while the store is down or has lost its data. A loaded copy
// is an immutable Memory swapped in whole, so that readers never see half a
// reload and never wait for one. Who reloads it, and when, is the caller's
// (cmd: at start, on every config change notice, and periodically).
type ConfigCopy struct {
	src ConfigSource
	cur atomic.Pointer[copySnapshot]
}

type copySnapshot struct {
	mem      *Memory
	agents   int
	channels int
	at       time.Time
}

// NewConfigCopy returns an empty copy of src; Reload loads it.
func NewConfigCopy(src ConfigSource) *ConfigCopy {
	c := &ConfigCopy{src: src}
	c.cur.Store(&copySnapshot{mem: NewMemory(Options{})})
	return c
}

// Reload reads every agent and channel from the source and makes them the
// copy, unless keepNonEmpty is set and the source has no agents or no
// channels while the copy has some (the store may have lost its data: keep
// routing from what we had; the caller tells a loss from a deletion). It reports
// the counts of the copy now in use and whether the old one was kept.
func (c *ConfigCopy) Reload(ctx context.Context, now time.Time, keepNonEmpty bool) (agents, channels int, kept bool, err error) {
	ags, err := c.src.Agents(ctx)
	if err != nil {
		return 0, 0, false, fmt.Errorf("store: reload config copy: %w", err)
	}
	chs, err := c.src.Channels(ctx)
	if err != nil {
		return 0, 0, false, fmt.Errorf("store: reload config copy: %w", err)
	}
	// Agents and channels are two reads: a store that lost its data between
	// them gives one half empty, so either half gone counts.
	if old := c.cur.Load(); keepNonEmpty && (len(ags) == 0 && old.agents > 0 || len(chs) == 0 && old.channels > 0) {
		return old.agents, old.channels, true, nil
	}
	mem := NewMemory(Options{})
	// The source enforced the routing rules on every write, so a full
	// snapshot of it applies without conflict.
	if err := mem.Apply(ctx, ags, chs); err != nil {
		return 0, 0, false, fmt.Errorf("store: reload config copy: %w", err)
	}
	c.cur.Store(&copySnapshot{mem: mem, agents: len(ags), channels: len(chs), at: now})
	return len(ags), len(chs), false, nil
}

// Counts returns how many agents and channels the copy holds and when it
// was last loaded (zero before the first load).
func (c *ConfigCopy) Counts() (agents, channels int, loadedAt time.Time) {
	s := c.cur.Load()
	return s.agents, s.channels, s.at
}

// ChannelByOrigin is Memory.ChannelByOrigin on the copy.
func (c *ConfigCopy) ChannelByOrigin(ctx context.Context, ip, ext string) (channel.Channel, error) {
	return c.cur.Load().mem.ChannelByOrigin(ctx, ip, ext)
}

// Agent is Memory.Agent on the copy.
func (c *ConfigCopy) Agent(ctx context.Context, id string) (channel.Agent, error) {
	return c.cur.Load().mem.Agent(ctx, id)
}

// Channel is Memory.Channel on the copy.
func (c *ConfigCopy) Channel(ctx context.Context, id string) (channel.Channel, error) {
	return c.cur.Load().mem.Channel(ctx, id)
}
