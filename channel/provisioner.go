package channel

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"

	"go.uber.org/zap"
)

// DefaultSIPDomain is the Twilio SIP Domain shown as channels' destination host.
const DefaultSIPDomain = "vivi.sip.twilio.com"

// Repository is the persistence of agents and channels: the whole of what
// the admin API and the apply command read and write. store.Memory and
// store.Redis implement it. SaveChannel and Apply fail with an error
// matching ErrConflict when a channel's (origin IP, extension) pairs overlap
// another channel's; DeleteAgent refuses an agent in use; lookups of missing
// ids match ErrNotFound. Apply writes everything or nothing.
type Repository interface {
	SaveAgent(ctx context.Context, a Agent) error
	Agent(ctx context.Context, id string) (Agent, error)
	Agents(ctx context.Context) ([]Agent, error)
	DeleteAgent(ctx context.Context, id string) error
	SaveChannel(ctx context.Context, c Channel) error
	// SaveChannelIf saves c only if the stored channel c.ID is prev (nil:
	// none is stored), checked and written in one store transaction. A
	// stored one when prev is nil matches ErrExists, another version
	// ErrStale; either way nothing is written.
	SaveChannelIf(ctx context.Context, c Channel, prev *Channel) error
	// SaveAgentIf is SaveChannelIf for agents.
	SaveAgentIf(ctx context.Context, a Agent, prev *Agent) error
	Channel(ctx context.Context, id string) (Channel, error)
	Channels(ctx context.Context) ([]Channel, error)
	DeleteChannel(ctx context.Context, id string) error
	Apply(ctx context.Context, agents []Agent, channels []Channel) error
}

// HostResolver resolves an origin host to IPv4 addresses; *Resolver is one.
type HostResolver interface {
	LookupIPv4(ctx context.Context, host string) ([]string, error)
}

// ProvisionerConfig configures a Provisioner. Only Repo is required.
type ProvisionerConfig struct {
	Repo Repository
	// Resolver resolves origin hosts; default &Resolver{} (system DNS, 3 s).
	Resolver HostResolver
	// SIPDomain is the host of channels' destination details; default DefaultSIPDomain.
	SIPDomain string
	// Rand is the source of generated ids and events secrets; default crypto/rand.
	Rand io.Reader
	// Logger logs what changed (never secrets); default zap.NewNop().
	Logger *zap.Logger
	// AllowList, when set, is synced after every change of channels (see
	// SyncAllowList); nil disables it (status "disabled").
	AllowList IPAllowList
	// AllowPrivateEvents accepts eventsUrl values on loopback, private,
	// link-local and other internal addresses, and http for loopback
	// (EVENTS_ALLOW_PRIVATE); otherwise they are refused with
	// invalid_events_url.
	AllowPrivateEvents bool
}

// Provisioner creates, changes and deletes agents and channels with one set
// of rules, shared by the admin API and the YAML apply: validation and
// defaults, DNS resolution of origin hosts, the agent's realtime check,
// events secrets, and destination details.
type Provisioner struct {
	repo      Repository
	resolver  HostResolver
	sipDomain string
	rand      io.Reader
	log       *zap.Logger
	allow     IPAllowList // nil: disabled
	// allowPrivateEvents: see ProvisionerConfig.AllowPrivateEvents.
	allowPrivateEvents bool
}

// NewProvisioner returns a Provisioner; cfg.Repo is required.
func NewProvisioner(cfg ProvisionerConfig) (*Provisioner, error) {
	if cfg.Repo == nil {
		return nil, errors.New("channel: provisioner: a repository is required")
	}
	p := &Provisioner{repo: cfg.Repo, resolver: cfg.Resolver, sipDomain: cfg.SIPDomain, rand: cfg.Rand, log: cfg.Logger,
		allow: cfg.AllowList, allowPrivateEvents: cfg.AllowPrivateEvents}
	if p.resolver == nil {
		p.resolver = &Resolver{}
	}
	if p.sipDomain == "" {
		p.sipDomain = DefaultSIPDomain
	}
	if p.rand == nil {
		p.rand = rand.Reader
	}
	if p.log == nil {
		p.log = zap.NewNop()
	}
	return p, nil
}

// SIPDomain returns the host shown in channels' destination details.
func (p *Provisioner) SIPDomain() string { return p.sipDomain }

func (p *Provisioner) randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(p.rand, b); err != nil {
		return "", fmt.Errorf("channel: random bytes: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// newEventsSecret returns a channel's events secret in the Standard
// Webhooks form, "whsec_" and the base64 of 32 random bytes: the libraries
// of that convention take it as it is (the key is what the base64 decodes
// to), and X-Vivi-Signature is keyed with the whole string.
func (p *Provisioner) newEventsSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := io.ReadFull(p.rand, b); err != nil {
		return "", fmt.Errorf("channel: random bytes: %w", err)
	}
	return EventsSecretPrefix + base64.StdEncoding.EncodeToString(b), nil
}

// EventsSecretPrefix starts the events secrets the bridge makes.
const EventsSecretPrefix = "whsec_"

// newID returns prefix + 12 random hex digits ("ch_3f2a9c0d81b4").
func (p *Provisioner) newID(prefix string) (string, error) {
	h, err := p.randomHex(6)
	if err != nil {
		return "", err
	}
	return prefix + h, nil
}

// CreateAgent stores a new agent. An empty ID is generated ("ag_" + 12 hex).
// An existing ID fails with ErrExists.
func (p *Provisioner) CreateAgent(ctx context.Context, a Agent) (Agent, error) {
	if a.ID == "" {
		id, err := p.newID("ag_")
		if err != nil {
			return Agent{}, err
		}
		a.ID = id
	}
	if err := a.Normalize(); err != nil {
		return Agent{}, err
	}
	if _, err := p.repo.Agent(ctx, a.ID); err == nil {
		return Agent{}, fmt.Errorf("agent %q %w", a.ID, ErrExists)
	} else if !errors.Is(err, ErrNotFound) {
		return Agent{}, fmt.Errorf("channel: create agent %s: %w", a.ID, err)
	}
	if err := p.repo.SaveAgentIf(ctx, a, nil); err != nil { // one of concurrent creates wins
		return Agent{}, fmt.Errorf("channel: create agent %s: %w", a.ID, err)
	}
	p.log.Info("agent created", zap.String("agent_id", a.ID))
	return a, nil
}

// PutAgent creates or replaces the agent id; created tells which. The body's
// ID may be empty (it is id) but may not differ from id. The write is a
// check-and-set against the version read (ErrStale, or ErrExists for a
// create, when another write landed in between).
func (p *Provisioner) PutAgent(ctx context.Context, id string, a Agent) (_ Agent, created bool, _ error) {
	return p.PutAgentIf(ctx, id, "", a)
}

// PutAgentIf is PutAgent for the version whose ETag is etag (any, or none,
// when etag is ""); another one, or none, fails with ErrPreconditionFailed.
func (p *Provisioner) PutAgentIf(ctx context.Context, id, etag string, a Agent) (_ Agent, created bool, _ error) {
	if a.ID == "" {
		a.ID = id
	}
	if a.ID != id {
		return Agent{}, false, invalid(CodeInvalidID, "id", "%q differs from the id %q in the path", a.ID, id)
	}
	if err := a.Normalize(); err != nil {
		return Agent{}, false, err
	}
	old, err := p.repo.Agent(ctx, id)
	var prev *Agent
	switch {
	case errors.Is(err, ErrNotFound):
		created = true
		if etag != "" {
			return Agent{}, false, ErrPreconditionFailed
		}
	case err != nil:
		return Agent{}, false, fmt.Errorf("channel: put agent %s: %w", id, err)
	default:
		prev = &old
		if err := checkIfMatch(etag, old); err != nil {
			return Agent{}, false, err
		}
	}
	if err := p.repo.SaveAgentIf(ctx, a, prev); err != nil {
		return Agent{}, false, fmt.Errorf("channel: put agent %s: %w", id, err)
	}
	p.log.Info("agent saved", zap.String("agent_id", id), zap.Bool("created", created))
	return a, created, nil
}

// Agent returns the agent id (an error matching ErrNotFound when missing).
func (p *Provisioner) Agent(ctx context.Context, id string) (Agent, error) {
	a, err := p.repo.Agent(ctx, id)
	if err != nil {
		return Agent{}, lookupErr("get", "agent", id, err)
	}
	return a, nil
}

// Agents returns every agent, sorted by id.
func (p *Provisioner) Agents(ctx context.Context) ([]Agent, error) {
	as, err := p.repo.Agents(ctx)
	if err != nil {
		return nil, fmt.Errorf("channel: agents: %w", err)
	}
	slices.SortFunc(as, func(a, b Agent) int { return cmp.Compare(a.ID, b.ID) })
	return as, nil
}

// DeleteAgent deletes the agent id. An agent that channels use is refused
// with an *InUseError naming them.
func (p *Provisioner) DeleteAgent(ctx context.Context, id string) error {
	if _, err := p.repo.Agent(ctx, id); err != nil {
		return lookupErr("delete", "agent", id, err)
	}
	chans, err := p.repo.Channels(ctx)
	if err != nil {
		return fmt.Errorf("channel: delete agent %s: %w", id, err)
	}
	var users []string
	for _, c := range chans {
		if c.AgentID == id {
			users = append(users, c.ID)
		}
	}
	if len(users) > 0 {
		slices.Sort(users)
		return &InUseError{ChannelIDs: users}
	}
	if err := p.repo.DeleteAgent(ctx, id); err != nil {
		return lookupErr("delete", "agent", id, err)
	}
	p.log.Info("agent deleted", zap.String("agent_id", id))
	return nil
}

// NotFoundError is a missing agent or channel; it matches ErrNotFound.
type NotFoundError struct {
	Kind string // "agent" or "channel"
	ID   string
}

func (e *NotFoundError) Error() string { return fmt.Sprintf("%s %q does not exist", e.Kind, e.ID) }

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// lookupErr turns a store lookup error into a *NotFoundError, or wraps it
// with op.
func lookupErr(op, kind, id string, err error) error {
	if errors.Is(err, ErrNotFound) {
		return &NotFoundError{Kind: kind, ID: id}
	}
	return fmt.Errorf("channel: %s %s %s: %w", op, kind, id, err)
}
