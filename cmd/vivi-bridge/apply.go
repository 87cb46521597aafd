package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"go.uber.org/zap"

	"github.com/vivi/bridge/channel"
)

// apply upserts agents and channels from a YAML file into the store that
// REDIS_URL names. A bad file is refused as a whole.
func apply(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("apply", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "YAML file of agents and channels")
	if err := fs.Parse(args); err != nil {
		return errConfig("apply: %v", err)
	}
	if *file == "" {
		return errConfig("apply: -f FILE is required")
	}
	c, err := loadConfig(getenv, false)
	if err != nil {
		return err
	}
	if c.RedisURL == "" && len(c.RedisAddrs) == 0 {
		return errConfig("apply: REDIS_URL is required (the in-memory store lives inside one serve process; use CONFIG_FILE there)")
	}
	log, err := newLogger(c, stderr)
	if err != nil {
		return err
	}
	setRedisLogger(log)
	st, closeStore, err := openStore(ctx, c)
	if err != nil {
		return err
	}
	defer closeStore()
	acl, err := newACLSync(c, st, log)
	if err != nil {
		return err
	}
	var allow channel.IPAllowList
	if acl != nil {
		allow = acl
	}
	prov, err := channel.NewProvisioner(channel.ProvisionerConfig{
		Repo: st, Resolver: &channel.Resolver{}, SIPDomain: c.SIPDomain, Logger: log.Named("channel"), AllowList: allow,
		AllowPrivateEvents: c.EventsAllowPrivate,
	})
	if err != nil {
		return err
	}
	cfg, err := channel.ParseConfigFile(*file)
	if err != nil {
		return err
	}
	res, err := prov.Apply(ctx, cfg)
	if err != nil {
		return err
	}
	printResult(stdout, res)
	log.Debug("applied", zap.String("file", *file))
	return nil
}

func printResult(w io.Writer, res channel.Result) {
	for _, ch := range res.Agents {
		fmt.Fprintf(w, "agent %s %s\n", ch.ID, ch.Action)
	}
	for _, ch := range res.Channels {
		fmt.Fprintf(w, "channel %s %s\n", ch.ID, ch.Action)
		if ch.EventsSecret != "" {
			fmt.Fprintf(w, "  eventsSecret %s (shown once; keep it to verify X-Vivi-Signature)\n", ch.EventsSecret)
		}
	}
	if a := res.ACLSync; a != nil {
		fmt.Fprintf(w, "twilio ip acl sync %s %s\n", a.Status, a.Error)
	}
}
