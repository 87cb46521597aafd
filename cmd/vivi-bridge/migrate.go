package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/twilio/twilio-go/client"

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
	if errors.Is(err, twiml.ErrMigrateEnded) {
		return fmt.Errorf("%w: %w", bridge.ErrCannotMigrate, err)
	}
	if err != nil {
		return err
	}
	err = m.calls.UpdateTwiML(ctx, req.CallSID, doc)
	// A 4xx is Twilio refusing this update (the call completed, the TwiML
	// refused): retrying sends the same. 429 and 5xx are retried.
	var re *client.TwilioRestError
	if errors.As(err, &re) && re.Status >= 400 && re.Status < 500 && re.Status != http.StatusTooManyRequests {
		return fmt.Errorf("%w: %w", bridge.ErrCannotMigrate, err)
	}
	return err
}
