package channel

import (
	"context"
	"errors"
	"fmt"
)

// RouteStore is what the Router reads: the channel that authorizes a
// (source IP, extension) pair, and agents by id.
type RouteStore interface {
	ChannelByOrigin(ctx context.Context, ip, ext string) (Channel, error)
	Agent(ctx context.Context, id string) (Agent, error)
}

// Match is the channel and agent that answer a call.
type Match struct {
	Channel Channel
	Agent   Agent
}

// Router matches an incoming call to its channel and agent.
type Router struct {
	store RouteStore
}

// NewRouter returns a Router reading from store.
func NewRouter(store RouteStore) *Router { return &Router{store: store} }

// Route finds the channel that authorizes sourceIP and lists extension, and
// its agent. A refusal is a *RejectError (its RejectReason is logged):
// ErrUnknownSourceIP and ErrUnknownExtension from the store unchanged,
// ErrNoAgent when the channel has no agent or the agent is gone,
// ErrAgentNotRealtime when the agent's realtime mode is off. Any other
// error is the store failing, wrapped.
func (r *Router) Route(ctx context.Context, sourceIP, extension string) (Match, error) {
	ch, err := r.store.ChannelByOrigin(ctx, sourceIP, extension)
	if err != nil {
		var rej *RejectError
		if errors.As(err, &rej) {
			return Match{}, err
		}
		return Match{}, fmt.Errorf("channel: route %s extension %s: %w", sourceIP, extension, err)
	}
	if ch.AgentID == "" {
		return Match{}, ErrNoAgent
	}
	ag, err := r.store.Agent(ctx, ch.AgentID)
	if errors.Is(err, ErrNotFound) {
		return Match{}, ErrNoAgent
	}
	if err != nil {
		return Match{}, fmt.Errorf("channel: route %s extension %s: agent %s: %w", sourceIP, extension, ch.AgentID, err)
	}
	if !ag.Realtime {
		return Match{}, ErrAgentNotRealtime
	}
	return Match{Channel: ch, Agent: ag}, nil
}
