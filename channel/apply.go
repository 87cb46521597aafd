package channel

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"go.uber.org/zap"
)

// Actions of a Change.
const (
	ActionCreated   = "created"
	ActionUpdated   = "updated"
	ActionUnchanged = "unchanged"
)

// Change is what Apply did to one agent or channel. EventsSecret is set when
// a channel got a new events secret (a new or changed eventsUrl): it is
// shown this once, like the API's create response.
type Change struct {
	ID           string `json:"id"`
	Action       string `json:"action"`
	EventsSecret string `json:"eventsSecret,omitempty"`
}

// Result lists what Apply did, in file order. ACLSync is how the IP
// allow-list sync after it went; nil when the file has no channels.
type Result struct {
	Agents   []Change   `json:"agents"`
	Channels []Change   `json:"channels"`
	ACLSync  *ACLStatus `json:"aclSync,omitempty"`
}

// resolveParallelism bounds concurrent DNS lookups of one apply.
const resolveParallelism = 8

// Apply creates or updates every agent and channel of cfg in one repository
// Apply: all of it or, on any error, nothing. Agents and channels absent
// from cfg are left alone. It checks first, with the API's rules, and
// reports every problem it finds as a *ConfigError (joined) naming the line
// and field: validation, duplicate ids, a channel's agent missing from the
// file and the store (unknown_agent) or not realtime, DNS failures, and
// (IP, extension) pairs that overlap within the file or with stored
// channels (channel_conflict). A channel without originIps gets them from
// resolving originHost; one with originIps keeps them as written (as if set
// with PUT /v1/channels/{id}/origin-ips). An unchanged eventsUrl keeps its
// secret, so applying the same file twice changes nothing.
func (p *Provisioner) Apply(ctx context.Context, cfg Config) (Result, error) {
	cfg = cfg.clone()
	if errs := cfg.check(); len(errs) > 0 {
		return Result{}, joinConfigErrors(errs)
	}
	if errs := p.checkEventsTargets(&cfg); len(errs) > 0 {
		return Result{}, joinConfigErrors(errs)
	}
	storedAgents, storedChans, err := p.snapshot(ctx)
	if err != nil {
		return Result{}, err
	}
	if errs := cfg.checkAgents(storedAgents); len(errs) > 0 {
		return Result{}, joinConfigErrors(errs)
	}
	if errs := p.resolveAll(ctx, &cfg); len(errs) > 0 {
		return Result{}, joinConfigErrors(errs)
	}
	if errs := cfg.checkOverlaps(storedChans); len(errs) > 0 {
		return Result{}, joinConfigErrors(errs)
	}
	res := Result{Agents: make([]Change, len(cfg.Agents)), Channels: make([]Change, len(cfg.Channels))}
	for i, a := range cfg.Agents {
		old, ok := storedAgents[a.ID]
		res.Agents[i] = Change{ID: a.ID, Action: action(ok, old, a)}
	}
	for i := range cfg.Channels {
		c := &cfg.Channels[i]
		old, ok := storedChans[c.ID]
		if ok && c.EventsURL != "" && c.EventsURL == old.EventsURL {
			c.EventsSecret = old.EventsSecret
		}
		res.Channels[i] = Change{ID: c.ID}
		if c.EventsURL != "" && c.EventsSecret == "" {
			if c.EventsSecret, err = p.newEventsSecret(); err != nil {
				return Result{}, err
			}
			res.Channels[i].EventsSecret = c.EventsSecret
		}
		res.Channels[i].Action = action(ok, old, *c)
	}
	if len(cfg.Agents)+len(cfg.Channels) == 0 {
		return res, nil
	}
	if err := p.repo.Apply(ctx, cfg.Agents, cfg.Channels); err != nil {
		if errors.Is(err, ErrConflict) {
			return Result{}, cfg.pos.errorAt("", CodeChannelConflict, conflictMessage(err), err)
		}
		return Result{}, fmt.Errorf("channel: apply: %w", err)
	}
	p.log.Info("config applied", zap.Int("agents", len(cfg.Agents)), zap.Int("channels", len(cfg.Channels)))
	if len(cfg.Channels) > 0 {
		st := p.SyncAllowList(ctx)
		res.ACLSync = &st
	}
	return res, nil
}

func (p *Provisioner) snapshot(ctx context.Context) (map[string]Agent, map[string]Channel, error) {
	as, err := p.repo.Agents(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("channel: apply: agents: %w", err)
	}
	cs, err := p.repo.Channels(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("channel: apply: channels: %w", err)
	}
	agents := make(map[string]Agent, len(as))
	for _, a := range as {
		agents[a.ID] = a
	}
	chans := make(map[string]Channel, len(cs))
	for _, c := range cs {
		chans[c.ID] = c
	}
	return agents, chans, nil
}

// action compares as stored (JSON), so that nil and empty lists are equal.
func action[T any](existed bool, old, cur T) string {
	if !existed {
		return ActionCreated
	}
	a, errA := json.Marshal(old)
	b, errB := json.Marshal(cur)
	if errA == nil && errB == nil && bytes.Equal(a, b) {
		return ActionUnchanged
	}
	return ActionUpdated
}

// clone copies what check normalizes in place, so Apply leaves the
// caller's Config as it was.
func (c Config) clone() Config {
	out := Config{Agents: slices.Clone(c.Agents), Channels: slices.Clone(c.Channels), pos: c.pos}
	for i := range out.Agents {
		out.Agents[i].TransferDestinations = slices.Clone(out.Agents[i].TransferDestinations)
	}
	for i := range out.Channels {
		out.Channels[i] = cloneChannel(out.Channels[i])
	}
	return out
}

// checkAgents checks each channel's agent: in the file, else in the store,
// and realtime.
func (c *Config) checkAgents(stored map[string]Agent) []*ConfigError {
	file := make(map[string]Agent, len(c.Agents))
	for _, a := range c.Agents {
		file[a.ID] = a
	}
	var errs []*ConfigError
	for i, ch := range c.Channels {
		if ch.AgentID == "" {
			continue
		}
		a, ok := file[ch.AgentID]
		if !ok {
			a, ok = stored[ch.AgentID]
		}
		prefix := fmt.Sprintf("channels[%d]", i)
		switch {
		case !ok:
			errs = append(errs, c.pos.validationAt(prefix,
				invalid(CodeUnknownAgent, "agentId", "agent %q is neither in the file nor in the store", ch.AgentID)))
		case !a.Realtime:
			errs = append(errs, c.pos.validationAt(prefix, notRealtime(ch.AgentID)))
		}
	}
	return errs
}

// resolveAll fills the origin IPs of channels that give none, a few
// lookups at a time.
// checkEventsTargets applies the eventsUrl target policy to every channel.
func (p *Provisioner) checkEventsTargets(c *Config) []*ConfigError {
	var errs []*ConfigError
	for i, ch := range c.Channels {
		if v := checkEventsTarget(ch.EventsURL, p.allowPrivateEvents); v != nil {
			errs = append(errs, c.pos.validationAt(fmt.Sprintf("channels[%d]", i), v))
		}
	}
	return errs
}

func (p *Provisioner) resolveAll(ctx context.Context, c *Config) []*ConfigError {
	verrs := make([]error, len(c.Channels))
	sem := make(chan struct{}, resolveParallelism)
	var wg sync.WaitGroup
	for i := range c.Channels {
		ch := &c.Channels[i]
		if len(ch.OriginIPs) > 0 {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ch.OriginIPs, verrs[i] = p.resolver.LookupIPv4(ctx, ch.OriginHost)
		}()
	}
	wg.Wait()
	var errs []*ConfigError
	for i, err := range verrs {
		if err == nil {
			continue
		}
		prefix := fmt.Sprintf("channels[%d]", i)
		var v *ValidationError
		if !errors.As(err, &v) {
			v = invalid(CodeDNSResolutionFailed, "originHost", "%v", err)
		}
		errs = append(errs, c.pos.validationAt(prefix, v))
	}
	return errs
}

// checkOverlaps finds (IP, extension) pairs that two channels would both
// route: within the file, or with a stored channel the file does not replace.
func (c *Config) checkOverlaps(stored map[string]Channel) []*ConfigError {
	type pair struct{ ip, ext string }
	owner := map[pair]string{}
	inFile := make(map[string]bool, len(c.Channels))
	for _, ch := range c.Channels {
		inFile[ch.ID] = true
	}
	for _, ch := range stored {
		if inFile[ch.ID] {
			continue
		}
		for _, ip := range ch.OriginIPs {
			for _, ext := range ch.Extensions {
				owner[pair{ip, ext}] = ch.ID
			}
		}
	}
	var errs []*ConfigError
	for i, ch := range c.Channels {
	next:
		for j, ext := range ch.Extensions {
			for _, ip := range ch.OriginIPs {
				if other, ok := owner[pair{ip, ext}]; ok && other != ch.ID {
					ce := &ConflictError{ChannelID: other, IP: ip, Extension: ext}
					errs = append(errs, c.pos.errorAt(fmt.Sprintf("channels[%d].extensions[%d]", i, j),
						CodeChannelConflict, ce.Error(), ce))
					continue next
				}
				owner[pair{ip, ext}] = ch.ID
			}
		}
	}
	return errs
}

// conflictMessage is the text of the most specific error in err's chain
// that matches ErrConflict (the store's, naming the other channel, the IP
// and the extension).
func conflictMessage(err error) string {
	var specific interface {
		error
		Is(error) bool
	}
	if errors.As(err, &specific) && specific.Is(ErrConflict) {
		return specific.Error()
	}
	return err.Error()
}
