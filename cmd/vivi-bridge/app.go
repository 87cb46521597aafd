package main

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/vivi/bridge/bridge"
	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/delivery"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/store"
	"github.com/vivi/bridge/transfer"
	"github.com/vivi/bridge/twiml"
	"github.com/vivi/bridge/usage"
)

// streamTokenTTL is how long Twilio has to open the stream after the
// webhook answered (it does so within a second or two).
const streamTokenTTL = 2 * time.Minute

// app is one bridge process: every component wired, ready to serve.
type app struct {
	handler  http.Handler
	watch    *storeWatch
	presence *presence // nil without a store that records pods
	bridge   *bridge.Server
	health   *health
	prov     *channel.Provisioner
	log      *zap.Logger
	registry *prometheus.Registry
	// prices is the price table of the calls' model usage: the defaults
	// with PRICES_FILE merged over them.
	prices usage.Prices
	// tokens counts the models' tokens and cost (on registry).
	tokens *usage.Tokens
	// deliverer consumes the outbox (nil: the store keeps none).
	deliverer *delivery.Deliverer
	// deliveryStop bounds the deliverer's drain (deliveryStopFor).
	deliveryStop time.Duration
}

// appDeps are the outside parts: the store and how the REST API and the
// realtime model are reached (real in serve, fakes in demo and tests).
type appDeps struct {
	store    storeAPI
	resolver channel.HostResolver // nil: system DNS
	// storeCheck and configReload override how often the store is pinged
	// (defaultStoreCheck) and the config copy reloaded (defaultConfigReload).
	storeCheck   time.Duration
	configReload time.Duration
	// force, when closed while the pod drains, ends the drain at once (a
	// second SIGINT/SIGTERM): the remaining calls end with reason shutdown.
	force <-chan struct{}
}

// newApp wires the components of DESIGN.md section 3. base is the parent of
// every call's context: cancelling it ends the calls (after draining).
func newApp(base context.Context, c config, log *zap.Logger, d appDeps) (*app, error) {
	prices, err := loadPrices(c.PricesFile)
	if err != nil {
		return nil, err
	}
	callsEnded := newCallsEnded()
	st := storeAPI(eventingStore{d.store, callsEnded})
	podID := c.PodID
	if podID == "" {
		podID, _ = os.Hostname()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), callsEnded)
	// Calls are routed, and find their agents, from the store and, when it
	// fails, from an in-process copy of the configuration (config_copy.go).
	cfgCopy := store.NewConfigCopy(st)
	watch := newStoreWatch(st, cfgCopy, log.Named("store"), podID, c.ConfigFile, d.storeCheck, reg)
	watch.markers, _ = d.store.(markerStore) // the wrappers hide it
	cfg := configReader{st: st, copy: cfgCopy, watch: watch}
	creates := newBufferedCreates(st, log.Named("store"), watch.checkEvery, reg)

	tokens, err := session.NewTokens([]byte(c.StreamTokenSecret), streamTokenTTL)
	if err != nil {
		return nil, errConfig("STREAM_TOKEN_SECRET: %v", err)
	}
	validator, err := twiml.NewValidator(c.TwilioAuthToken, c.PublicURL, c.ValidateSignatures)
	if err != nil {
		return nil, errConfig("PUBLIC_URL: %v", err)
	}
	modelTokens := usage.NewTokens(reg)
	rest, err := transfer.NewTwilio(transfer.TwilioConfig{
		AccountSID: c.TwilioAccountSID, AuthToken: c.TwilioAuthToken, BaseURL: c.TwilioAPIBaseURL,
	})
	if err != nil {
		return nil, errConfig("TWILIO_*: %v", err)
	}
	resolver := d.resolver
	if resolver == nil {
		resolver = &channel.Resolver{}
	}
	acl, err := newACLSync(c, st, log)
	if err != nil {
		return nil, err
	}
	var allow channel.IPAllowList
	if acl != nil {
		allow = acl
	}
	prov, err := channel.NewProvisioner(channel.ProvisionerConfig{
		Repo: configNotifier{st}, Resolver: resolver, SIPDomain: c.SIPDomain, Logger: log.Named("channel"), AllowList: allow,
		AllowPrivateEvents: c.EventsAllowPrivate,
	})
	if err != nil {
		return nil, err
	}
	xfer := transfer.New(transfer.Config{
		PublicURL: c.PublicURL, Sessions: st, Targets: targets{cfg}, Calls: rest, Logger: log.Named("transfer"),
	})
	// Calls answered here count against MAX_CALLS until their stream starts
	// here (the bridge claims the token, and counts the stream from then on)
	// or twiml.AnswerTimeout passes.
	answered := twiml.NewAnswered(twiml.AnswerTimeout, nil)
	mig := &migrator{calls: rest}
	if ps, ok := d.store.(podPresence); ok {
		mig.presence = &presence{st: ps, pod: podID, log: log.Named("presence")}
		mig.presence.beat(base) // listed as ready before it serves, so a draining peer can count on it
		go mig.presence.run(base)
	}
	br, err := bridge.NewServer(bridge.Config{
		PodID:         podID,
		RealtimeURL:   c.RealtimeURL,
		RealtimeModel: c.RealtimeModel,
		APIKey:        c.OpenAIAPIKey,
		BaseContext:   base,
		ModelPoolSize: c.ModelPoolSize,
		Prices:        prices,
	}, bridge.Deps{
		Sessions:   st,
		Tokens:     tokens,
		Claims:     startedClaims{st, answered},
		Handshake:  validator,
		Agents:     callAgents{cfg},
		Calls:      rest,
		Transfers:  transfers{xfer},
		Migrator:   mig,
		Logger:     log,
		Registerer: reg,
		Usage:      modelTokens,
	})
	if err != nil {
		return nil, err
	}
	// Commands and stream probes go to the pod that owns the call; a probe
	// of a stream on this pod asks the bridge directly.
	cmds := commander{st: st, calls: rest, log: log.Named("commands"), podID: podID, local: br}
	hooks, err := twiml.NewHandler(twiml.Config{
		PublicURL: c.PublicURL, MaxCalls: c.MaxCalls, Logger: log.Named("twilio"),
	}, twiml.Deps{
		Validator: validator, Router: routes{channel.NewRouter(cfg)}, Sessions: creates, Tokens: tokens, Calls: br,
		Answered: answered, Prober: cmds,
	})
	if err != nil {
		return nil, err
	}
	mig.hooks = hooks

	mux := http.NewServeMux()
	hooks.Register(mux)
	br.Register(mux)
	admin := channel.NewAPI(channel.APIConfig{AdminToken: c.AdminToken, Logger: log.Named("admin")}, prov)
	admin.Register(mux)
	if ob, ok := d.store.(store.Outbox); ok {
		admin.RegisterCalls(mux, callsWithDeliveries{st, outboxAPI{ob}}, cmds)
		admin.RegisterParked(mux, outboxAPI{ob})
	} else {
		admin.RegisterCalls(mux, st, cmds)
	}
	if err := listenCommands(base, st, podID, br, log.Named("commands")); err != nil {
		return nil, err
	}
	var deliverer *delivery.Deliverer
	if ob, ok := d.store.(store.Outbox); ok {
		ps, _ := d.store.(podPresence)
		job, err := newAnalyzeJob(c, st, cfg, prices, modelTokens, podID, log.Named("analysis"))
		if err != nil {
			return nil, err
		}
		deliverer = newDeliverer(c, ob, cfg, ps, podID, map[string]delivery.JobHandler{analyzeJobType: job}, log.Named("events"), reg)
		go deliverer.Run(base) // posts call events and runs post-call jobs; drained by stopDeliveries
	}
	if acl != nil {
		go acl.Run(base) // retries failed syncs, reconciles every few minutes; ends with base
	}
	watch.rewrite, watch.retry = br.RewriteSessions, br.RetrySessionWrites
	if c.ConfigFile != "" {
		watch.reapply = func(ctx context.Context) error {
			cf, err := channel.ParseConfigFile(c.ConfigFile)
			if err != nil {
				return err
			}
			_, err = prov.Apply(ctx, cf)
			return err
		}
	}
	watch.start(base)
	go watch.run(base)
	go watch.runConfigCopy(base, cmp.Or(d.configReload, defaultConfigReload))
	go creates.run(base)
	h := &health{detail: watch.healthLines}
	h.register(mux)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	return &app{handler: mux, watch: watch, presence: mig.presence, bridge: br, health: h, prov: prov, log: log, registry: reg,
		prices: prices, tokens: modelTokens, deliverer: deliverer, deliveryStop: deliveryStopFor(c)}, nil
}

// startedClaims tells the answered-call count that a stream started on this
// pod when the bridge claims its token.
type startedClaims struct {
	bridge.TokenClaimer
	answered *twiml.Answered
}

func (c startedClaims) ClaimToken(ctx context.Context, id string, ttl time.Duration) (bool, error) {
	c.answered.Started(id)
	return c.TokenClaimer.ClaimToken(ctx, id, ttl)
}

// applyFile applies a YAML file of agents and channels (CONFIG_FILE, apply -f).
func (a *app) applyFile(ctx context.Context, path string) (channel.Result, error) {
	cfg, err := channel.ParseConfigFile(path)
	if err != nil {
		return channel.Result{}, err
	}
	return a.prov.Apply(ctx, cfg)
}

// listen opens the HTTP listener.
func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return ln, nil
}

// newACLSync returns the sync that keeps the SIP Domain's IP access control
// list equal to the channels' origin IPs, or nil without TWILIO_SIP_DOMAIN_SID.
func newACLSync(c config, st storeAPI, log *zap.Logger) (*channel.ACLSync, error) {
	if c.TwilioSIPDomainSID == "" {
		return nil, nil
	}
	if c.TwilioAccountSID == "" || c.TwilioAuthToken == "" {
		return nil, errConfig("TWILIO_SIP_DOMAIN_SID needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
	}
	rc, err := transfer.NewRESTClient(transfer.TwilioConfig{
		AccountSID: c.TwilioAccountSID, AuthToken: c.TwilioAuthToken, BaseURL: c.TwilioAPIBaseURL,
	})
	if err != nil {
		return nil, errConfig("TWILIO_*: %v", err)
	}
	return channel.NewACLSync(channel.ACLSyncConfig{
		API: rc.Api, DomainSID: c.TwilioSIPDomainSID, Channels: st, Logger: log.Named("acl"),
	})
}

// loadPrices returns the price table of the calls' model usage: the
// defaults, with the prices file (PRICES_FILE) merged over them when set.
func loadPrices(path string) (usage.Prices, error) {
	if path == "" {
		return usage.Default(), nil
	}
	p, err := usage.LoadFile(path)
	if err != nil {
		return nil, errConfig("PRICES_FILE: %v", err)
	}
	return p, nil
}
