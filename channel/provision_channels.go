package channel

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.uber.org/zap"
)

// CreateChannel stores a new channel and returns it as an operator sees it:
// with destination details and, when it has an eventsUrl, its new
// eventsSecret (shown this once). An empty ID is generated ("ch_" + 12 hex).
// originHost is resolved and its IPv4 addresses replace originIps. The agent,
// when set, must exist and be realtime. An existing ID fails with ErrExists;
// overlapping another channel's (IP, extension) pairs matches ErrConflict.
func (p *Provisioner) CreateChannel(ctx context.Context, c Channel) (Channel, error) {
	if c.ID == "" {
		id, err := p.newID("ch_")
		if err != nil {
			return Channel{}, err
		}
		c.ID = id
	}
	c.EventsSecret, c.Destination = "", nil
	if err := c.Normalize(); err != nil {
		return Channel{}, err
	}
	if err := checkEventsTarget(c.EventsURL, p.allowPrivateEvents); err != nil {
		return Channel{}, err
	}
	if _, err := p.repo.Channel(ctx, c.ID); err == nil { // early answer; SaveChannelIf decides
		return Channel{}, fmt.Errorf("channel %q %w", c.ID, ErrExists)
	} else if !errors.Is(err, ErrNotFound) {
		return Channel{}, fmt.Errorf("channel: create channel %s: %w", c.ID, err)
	}
	if err := p.checkAgent(ctx, c.AgentID, nil); err != nil {
		return Channel{}, err
	}
	ips, err := p.resolver.LookupIPv4(ctx, c.OriginHost)
	if err != nil {
		return Channel{}, err
	}
	c.OriginIPs = ips
	newSecret := c.EventsURL != ""
	if newSecret {
		if c.EventsSecret, err = p.newEventsSecret(); err != nil {
			return Channel{}, err
		}
	}
	// Created only if no channel c.ID appeared meanwhile: of concurrent
	// creates of one id exactly one wins, the others get ErrExists.
	if err := p.repo.SaveChannelIf(ctx, c, nil); err != nil {
		return Channel{}, fmt.Errorf("channel: create channel %s: %w", c.ID, err)
	}
	p.log.Info("channel created", zap.String("channel_id", c.ID), zap.Strings("origin_ips", c.OriginIPs))
	return p.present(c, newSecret), nil
}

// UpdateChannel loads channel id, lets change edit a copy, and stores the
// result under the same rules as CreateChannel: a changed originHost is
// resolved again and replaces originIps; a new eventsUrl gets a new
// eventsSecret (returned this once), a removed one drops the secret; a
// changed agentId must name a realtime agent. change may not alter the ID.
//
// The write is a check-and-set against the version read: when another
// update landed in between, it fails with ErrStale and nothing is written.
func (p *Provisioner) UpdateChannel(ctx context.Context, id string, change func(*Channel) error) (Channel, error) {
	return p.UpdateChannelIf(ctx, id, "", change)
}

// UpdateChannelIf is UpdateChannel for the version whose ETag is etag (any
// version when etag is ""); another one fails with ErrPreconditionFailed.
func (p *Provisioner) UpdateChannelIf(ctx context.Context, id, etag string, change func(*Channel) error) (Channel, error) {
	old, err := p.repo.Channel(ctx, id)
	if err != nil {
		return Channel{}, lookupErr("update", "channel", id, err)
	}
	if err := checkIfMatch(etag, p.present(old, false)); err != nil {
		return Channel{}, err
	}
	c := cloneChannel(old)
	if err := change(&c); err != nil {
		return Channel{}, err
	}
	if c.ID != id {
		return Channel{}, invalid(CodeInvalidID, "id", "%q differs from the id %q in the path", c.ID, id)
	}
	c.EventsSecret, c.Destination = old.EventsSecret, nil
	followDefaultPort(&c, old)
	if err := c.Normalize(); err != nil {
		return Channel{}, err
	}
	if err := checkEventsTarget(c.EventsURL, p.allowPrivateEvents); err != nil {
		return Channel{}, err
	}
	if c.AgentID != old.AgentID {
		if err := p.checkAgent(ctx, c.AgentID, nil); err != nil {
			return Channel{}, err
		}
	}
	if c.OriginHost != old.OriginHost {
		if c.OriginIPs, err = p.resolver.LookupIPv4(ctx, c.OriginHost); err != nil {
			return Channel{}, err
		}
	}
	if len(c.OriginIPs) == 0 {
		return Channel{}, invalid(CodeInvalidOriginIP, "originIps", "at least one address is required")
	}
	newSecret := c.EventsURL != "" && c.EventsURL != old.EventsURL
	switch {
	case newSecret:
		if c.EventsSecret, err = p.newEventsSecret(); err != nil {
			return Channel{}, err
		}
	case c.EventsURL == "":
		c.EventsSecret = ""
	}
	if err := p.repo.SaveChannelIf(ctx, c, &old); err != nil {
		return Channel{}, fmt.Errorf("channel: update channel %s: %w", id, err)
	}
	p.log.Info("channel updated", zap.String("channel_id", id), zap.Strings("origin_ips", c.OriginIPs))
	return p.present(c, newSecret), nil
}

// SetOriginIPs replaces the channel's origin IPs by hand (validated IPv4,
// deduplicated, sorted; at least one). Errors name the field "ips".
func (p *Provisioner) SetOriginIPs(ctx context.Context, id string, ips []string) (Channel, error) {
	norm, verr := normalizeOriginIPs("ips", ips)
	if verr != nil {
		return Channel{}, verr
	}
	if len(norm) == 0 {
		return Channel{}, invalid(CodeInvalidOriginIP, "ips", "at least one address is required")
	}
	return p.UpdateChannel(ctx, id, func(c *Channel) error {
		c.OriginIPs = norm
		return nil
	})
}

// SetAgent makes agentID answer the channel's calls. An unknown agent
// matches ErrNotFound; one whose realtime mode is off is a *ValidationError
// with code agent_not_realtime.
func (p *Provisioner) SetAgent(ctx context.Context, id, agentID string) (Channel, error) {
	if v := checkID("agentId", agentID); v != nil {
		return Channel{}, v
	}
	if _, err := p.repo.Channel(ctx, id); err != nil {
		return Channel{}, lookupErr("set agent of", "channel", id, err)
	}
	a, err := p.repo.Agent(ctx, agentID)
	if err != nil {
		return Channel{}, lookupErr("set agent", "agent", agentID, err)
	}
	if !a.Realtime {
		return Channel{}, notRealtime(agentID)
	}
	return p.UpdateChannel(ctx, id, func(c *Channel) error {
		c.AgentID = agentID
		return nil
	})
}

// Channel returns the channel id with destination details and without its
// events secret (an error matching ErrNotFound when missing).
func (p *Provisioner) Channel(ctx context.Context, id string) (Channel, error) {
	c, err := p.repo.Channel(ctx, id)
	if err != nil {
		return Channel{}, lookupErr("get", "channel", id, err)
	}
	return p.present(c, false), nil
}

// Channels returns every channel, sorted by id, as Channel does.
func (p *Provisioner) Channels(ctx context.Context) ([]Channel, error) {
	cs, err := p.repo.Channels(ctx)
	if err != nil {
		return nil, fmt.Errorf("channel: channels: %w", err)
	}
	slices.SortFunc(cs, func(a, b Channel) int { return cmp.Compare(a.ID, b.ID) })
	for i := range cs {
		cs[i] = p.present(cs[i], false)
	}
	return cs, nil
}

// DeleteChannel deletes the channel id and its routes.
func (p *Provisioner) DeleteChannel(ctx context.Context, id string) error {
	if err := p.repo.DeleteChannel(ctx, id); err != nil {
		return lookupErr("delete", "channel", id, err)
	}
	p.log.Info("channel deleted", zap.String("channel_id", id))
	return nil
}

// checkAgent checks that agentID (when set) names a realtime agent, in the
// file (inFile, for apply) or else in the store.
func (p *Provisioner) checkAgent(ctx context.Context, agentID string, inFile map[string]Agent) error {
	if agentID == "" {
		return nil
	}
	a, ok := inFile[agentID]
	if !ok {
		var err error
		a, err = p.repo.Agent(ctx, agentID)
		if errors.Is(err, ErrNotFound) {
			return invalid(CodeUnknownAgent, "agentId", "agent %q does not exist", agentID)
		}
		if err != nil {
			return fmt.Errorf("channel: agent %s: %w", agentID, err)
		}
	}
	if !a.Realtime {
		return notRealtime(agentID)
	}
	return nil
}

func notRealtime(agentID string) *ValidationError {
	return invalid(CodeAgentNotRealtime, "agentId", "agent %q does not have realtime mode enabled", agentID)
}

// present is c as an operator sees it: destination details, and the events
// secret only when it was just generated.
func (p *Provisioner) present(c Channel, withSecret bool) Channel {
	c = cloneChannel(c)
	if !withSecret {
		c.EventsSecret = ""
	}
	c.Describe(p.sipDomain)
	return c
}

func cloneChannel(c Channel) Channel {
	c.Extensions = slices.Clone(c.Extensions)
	c.OriginIPs = slices.Clone(c.OriginIPs)
	c.Destination = nil
	return c
}

// followDefaultPort lets a port that was the old protocol's default follow a
// change of protocol (TLS 5061 -> UDP 5060) unless the change sets a port.
func followDefaultPort(c *Channel, old Channel) {
	oldProto, newProto := normalProtocol(old.OriginProtocol), normalProtocol(c.OriginProtocol)
	if newProto != oldProto && c.OriginPort == old.OriginPort && old.OriginPort == oldProto.DefaultPort() {
		c.OriginPort = 0
	}
}

func normalProtocol(p Protocol) Protocol {
	if p == "" {
		return TLS
	}
	return Protocol(strings.ToUpper(string(p)))
}
