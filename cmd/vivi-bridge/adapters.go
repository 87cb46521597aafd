package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/vivi/bridge/bridge"
	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/transfer"
	"github.com/vivi/bridge/twiml"
)

// The adapters below translate between the packages' own small interfaces:
// twiml, bridge and transfer know nothing of channel or store (DESIGN.md
// section 3), so cmd maps channel types onto theirs.

// storeAPI is what cmd wires from a store; store.Memory and store.Redis both
// provide it.
type storeAPI interface {
	channel.Repository
	channel.RouteStore
	twiml.Sessions
	bridge.Sessions
	bridge.TokenClaimer
	Ping(ctx context.Context) error
	Sessions(ctx context.Context, active bool, limit int) ([]*session.Session, error)
	Publish(ctx context.Context, topic string, msg []byte) error
	Subscribe(ctx context.Context, topic string) (<-chan []byte, func(), error)
}

// routes answers the voice webhook's routing question with channel.Router.
type routes struct{ r *channel.Router }

func (a routes) Route(ctx context.Context, ip, ext string) (twiml.Route, error) {
	m, err := a.r.Route(ctx, ip, ext)
	if err != nil {
		return twiml.Route{}, err
	}
	return twiml.Route{ChannelID: m.Channel.ID, AgentID: m.Agent.ID}, nil
}

// configLookup is what calls read of the configuration: storeAPI, or the
// configReader that falls back on the in-process copy.
type configLookup interface {
	Agent(ctx context.Context, id string) (channel.Agent, error)
	Channel(ctx context.Context, id string) (channel.Channel, error)
}

// callAgents gives the bridge the agent of a call.
type callAgents struct{ st configLookup }

func (a callAgents) CallAgent(ctx context.Context, channelID, agentID string) (bridge.Agent, error) {
	ag, err := a.st.Agent(ctx, agentID)
	switch {
	case errors.Is(err, channel.ErrNotFound):
		// Deleted since the token was issued: the bridge ends the session.
		return bridge.Agent{}, fmt.Errorf("agent %s of channel %s: %w", agentID, channelID, bridge.ErrAgentNotFound)
	case err != nil:
		return bridge.Agent{}, fmt.Errorf("agent %s of channel %s: %w", agentID, channelID, err)
	case !ag.Realtime:
		// Realtime mode turned off since the token was issued.
		return bridge.Agent{}, fmt.Errorf("agent %s of channel %s: %w", agentID, channelID, bridge.ErrAgentNotRealtime)
	}
	out := bridge.Agent{
		ID:           ag.ID,
		Instructions: ag.Instructions,
		Greeting:     ag.Greeting,
		Voice:        ag.Voice,
		Model:        ag.Model,
		DTMF:         ag.DTMF,
		// Validated against the destinations when the agent is stored.
		FallbackDestination: ag.FallbackDestination,
	}
	if td := ag.TurnDetection; td != nil {
		out.TurnDetection = bridge.TurnDetection{Threshold: td.Threshold, SilenceMs: td.SilenceMs, PrefixPaddingMs: td.PrefixPaddingMs}
	}
	for _, d := range ag.TransferDestinations {
		out.Destinations = append(out.Destinations, bridge.Destination{Name: d.Name, Number: d.Number, Trigger: d.Trigger})
	}
	return out, nil
}

// targets resolves a destination name of a call's agent to the PBX
// extension and the channel's origin, for the Refer-To URI.
type targets struct{ st configLookup }

func (a targets) Target(ctx context.Context, channelID, agentID, name string) (transfer.Target, error) {
	ag, err := a.st.Agent(ctx, agentID)
	if err != nil {
		return transfer.Target{}, fmt.Errorf("agent %s: %w", agentID, err)
	}
	d, ok := ag.DestinationByName(name)
	if !ok {
		return transfer.Target{}, fmt.Errorf("%w: %q is not a destination of agent %s", transfer.ErrUnknownDestination, name, agentID)
	}
	ch, err := a.st.Channel(ctx, channelID)
	if err != nil {
		return transfer.Target{}, fmt.Errorf("channel %s: %w", channelID, err)
	}
	port := ch.OriginPort
	if port == 0 {
		port = ch.OriginProtocol.DefaultPort()
	}
	proto := string(ch.OriginProtocol)
	if proto == "" {
		proto = string(channel.TLS)
	}
	return transfer.Target{Number: d.Number, Origin: transfer.Origin{Host: ch.OriginHost, Port: port, Protocol: proto}}, nil
}

// transfers lets the bridge start transfers through the transfer service.
type transfers struct{ svc *transfer.Service }

func (a transfers) Transfer(ctx context.Context, req bridge.TransferRequest) error {
	_, err := a.svc.StartFenced(ctx, req.Fence, req.CallSID, req.Destination.Name, req.Via)
	return err
}
