package store

import (
	"errors"
	"fmt"
	"strings"

	"github.com/vivi/bridge/channel"
)

// Errors of the store. Lookups of agents and channels return channel.ErrNotFound
// and lookups of sessions session.ErrNotFound (both wrapped), so that callers
// test them against the package that owns the type.
var (
	// ErrExists is returned (wrapped) by CreateSession when a session with the
	// same call SID is already stored.
	ErrExists = errors.New("store: already exists")

	// ErrNotFound is returned (wrapped) by RedeliverParked when no parked
	// entry has the id.
	ErrNotFound = errors.New("store: not found")

	// errContention is returned (wrapped) when an optimistic transaction lost
	// the race maxTxAttempts times in a row.
	errContention = errors.New("store: too much contention, transaction not applied")
)

// ConflictError is returned (wrapped) when a channel would take a routing pair
// (origin IP, extension) that another channel owns. It matches
// channel.ErrConflict with errors.Is.
type ConflictError struct {
	// ChannelID is the channel that owns (or, within one batch, also claims) the pair.
	ChannelID string
	IP        string
	Extension string
}

// Error names the pair and its owner.
func (e *ConflictError) Error() string {
	return fmt.Sprintf("channel conflict: origin %s extension %s belongs to channel %s", e.IP, e.Extension, e.ChannelID)
}

// Is reports whether target is channel.ErrConflict.
func (e *ConflictError) Is(target error) bool { return target == channel.ErrConflict }

// Unwrap returns channel.ErrConflict.
func (e *ConflictError) Unwrap() error { return channel.ErrConflict }

// InUseError is returned (wrapped) by DeleteAgent when channels still use the agent.
type InUseError struct {
	AgentID    string
	ChannelIDs []string // sorted
}

// Error names the agent and the channels that use it.
func (e *InUseError) Error() string {
	return fmt.Sprintf("agent %s is used by channels %s", e.AgentID, strings.Join(e.ChannelIDs, ", "))
}

// InUseChannels returns the ids of the channels that use the agent (the
// admin API answers 409 agent_in_use with them).
func (e *InUseError) InUseChannels() []string { return e.ChannelIDs }
