package channel

import (
	"context"
	"errors"
	"sync"
	"time"

	openapi "github.com/twilio/twilio-go/rest/api/v2010"
	"go.uber.org/zap"
)

// Defaults of ACLSyncConfig.
const (
	DefaultACLRetryMin    = 5 * time.Second
	DefaultACLRetryMax    = 5 * time.Minute
	DefaultACLInterval    = 5 * time.Minute
	DefaultACLSyncTimeout = 30 * time.Second
)

// ChannelLister lists every stored channel; a Repository is one.
type ChannelLister interface {
	Channels(ctx context.Context) ([]Channel, error)
}

// ACLSyncConfig configures an ACLSync. API, DomainSID and Channels are required.
type ACLSyncConfig struct {
	// API is twilio-go's 2010 API (RestClient.Api) of the account that owns
	// the SIP Domain.
	API *openapi.ApiService
	// DomainSID is the SIP Domain (TWILIO_SIP_DOMAIN_SID) whose calls the
	// list admits.
	DomainSID string
	// ListName is the FriendlyName of the IP access control list this sync
	// owns; default "vivi-" + DomainSID. Entries in it that no channel has
	// are removed.
	ListName string
	// Channels is where the origin IPs come from.
	Channels ChannelLister
	// RetryMin and RetryMax bound the backoff of retries after a failure
	// (doubling from RetryMin); defaults DefaultACLRetryMin, DefaultACLRetryMax.
	RetryMin, RetryMax time.Duration
	// Interval is how often Run reconciles when nothing failed, to repair
	// changes made elsewhere (another pod, the console, vivi-bridge apply);
	// default DefaultACLInterval.
	Interval time.Duration
	// SyncTimeout bounds one reconcile; default DefaultACLSyncTimeout.
	SyncTimeout time.Duration
	// Logger logs Run's reconciles; default zap.NewNop().
	Logger *zap.Logger
}

// ACLSync keeps a Twilio IP access control list, mapped to a SIP Domain for
// calls, equal to the set of all channels' origin IPs, so that Twilio
// admits exactly the PBXs the channels name. It is an IPAllowList.
//
// Several pods may reconcile at the same time. Each reconcile is
// idempotent and only reads when the list is in sync; it lists Twilio's
// entries before it reads the channels, so an entry it removes was added
// before a channel stopped naming it; creates that fail because another
// pod got there first ("already exists") are checked by listing again; and
// duplicate lists of the same name, created in a race, are reduced to the
// one with the smallest SID on every pod.
type ACLSync struct {
	api      *openapi.ApiService
	domain   string
	name     string
	channels ChannelLister
	retryMin time.Duration
	retryMax time.Duration
	interval time.Duration
	timeout  time.Duration
	log      *zap.Logger

	// mu serializes reconciles in this process (API requests and Run).
	mu sync.Mutex
	// retry wakes Run after a failed Sync; one pending wake-up is enough.
	retry chan struct{}
}

// NewACLSync returns an ACLSync; call Run to retry failures and reconcile
// periodically.
func NewACLSync(cfg ACLSyncConfig) (*ACLSync, error) {
	switch {
	case cfg.API == nil:
		return nil, errors.New("channel: acl sync: a twilio-go API service is required")
	case cfg.DomainSID == "":
		return nil, errors.New("channel: acl sync: a SIP Domain SID is required")
	case cfg.Channels == nil:
		return nil, errors.New("channel: acl sync: a channel lister is required")
	}
	s := &ACLSync{
		api: cfg.API, domain: cfg.DomainSID, name: cfg.ListName, channels: cfg.Channels,
		retryMin: cfg.RetryMin, retryMax: cfg.RetryMax, interval: cfg.Interval, timeout: cfg.SyncTimeout,
		log: cfg.Logger, retry: make(chan struct{}, 1),
	}
	if s.name == "" {
		s.name = "vivi-" + cfg.DomainSID
	}
	if s.retryMin <= 0 {
		s.retryMin = DefaultACLRetryMin
	}
	if s.retryMax < s.retryMin {
		s.retryMax = max(DefaultACLRetryMax, s.retryMin)
	}
	if s.interval <= 0 {
		s.interval = DefaultACLInterval
	}
	if s.timeout <= 0 {
		s.timeout = DefaultACLSyncTimeout
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	return s, nil
}

// ListName returns the FriendlyName of the list the sync owns.
func (s *ACLSync) ListName() string { return s.name }

// Sync reconciles now and reports what changed. A failure makes Run retry
// soon (with backoff).
func (s *ACLSync) Sync(ctx context.Context) (SyncResult, error) {
	res, err := s.reconcile(ctx)
	if err != nil {
		select {
		case s.retry <- struct{}{}:
		default: // a retry is already pending
		}
	}
	return res, err
}

// Run reconciles at once, then every Interval, and after a failure (its own
// or a Sync's) again after a backoff that doubles from RetryMin up to
// RetryMax. It returns when ctx ends.
func (s *ACLSync) Run(ctx context.Context) {
	backoff := s.retryMin
	t := time.NewTimer(0) // at once: changes may have been missed while no pod ran
	defer t.Stop()
	due := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.retry:
			// A Sync failed: try again after the backoff, unless a
			// reconcile is due sooner anyway.
			if at := time.Now().Add(backoff); at.Before(due) {
				t.Reset(backoff)
				due = at
			}
			continue
		case <-t.C:
		}
		next := s.interval
		res, err := s.reconcile(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			s.log.Warn("IP access control list sync failed; retrying", zap.Error(err), zap.Float64("retry_in_s", backoff.Seconds()))
			next, backoff = backoff, min(2*backoff, s.retryMax)
		default:
			backoff = s.retryMin
			if len(res.Added)+len(res.Removed) > 0 {
				s.log.Info("IP access control list synced", zap.String("list_sid", res.ListSID),
					zap.Strings("added", res.Added), zap.Strings("removed", res.Removed))
			}
		}
		t.Reset(next)
		due = time.Now().Add(next)
	}
}
