package main

import (
	"context"

	"github.com/vivi/bridge/bridge"
	"github.com/vivi/bridge/transfer"
	"github.com/vivi/bridge/twiml"
)

// migrator moves a draining pod's call (bridge.Migrator): the webhook
// handler makes a fresh <Connect><Stream> the call's connect generation
// (the document the voice webhook answers, with PUBLIC_URL's stream URL, so
// that the load balancer picks a ready pod), then the live call is updated
// with it through Twilio's REST API. hooks is set once newApp has built the
// handler, before anything is served.
type migrator struct {
	hooks    *twiml.Handler
	calls    transfer.CallUpdater
	presence *presence // nil: a store without pod presence; moves are not held back
}

// CanMigrate reports whether another pod was ready at the last beat.
func (m *migrator) CanMigrate() bool { return m.presence == nil || m.presence.peers.Load() }

func (m *migrator) Migrate(ctx context.Context, req bridge.MigrateRequest) error {
	doc, err := m.hooks.MigrateConnect(ctx, req.CallSID, req.PodID, req.StreamSID, req.Fence)
	if err != nil {
		return err
	}
	return m.calls.UpdateTwiML(ctx, req.CallSID, doc)
}
