package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/delivery"
	"github.com/vivi/bridge/store"
)

// deliveryStop bounds the drain of the deliverer at shutdown: the attempts
// in flight finish (each bounded by the HTTP timeout, an analysis by
// ANALYSIS_TIMEOUT: one cut short would be paid for again on another pod),
// then the shard leases are released.
const deliveryStop = 15 * time.Second

// deliveryStopFor is deliveryStop, or longer when an analysis may take longer.
func deliveryStopFor(c config) time.Duration {
	return max(deliveryStop, c.AnalysisTimeout+5*time.Second)
}

// newDeliverer returns the pod's consumer of the outbox, or nil when the
// store keeps none. Its fair share of the shards follows the ready pods
// of the presence records, when the store keeps them.
func newDeliverer(c config, ob store.Outbox, channels delivery.Channels, ps podPresence, pod string,
	jobs map[string]delivery.JobHandler, log *zap.Logger, reg prometheus.Registerer) *delivery.Deliverer {
	var peers func(ctx context.Context) (int, error)
	if ps != nil {
		peers = func(ctx context.Context) (int, error) {
			// The other ready pods: this one counts itself while it runs,
			// ready or draining, so that its share does not grow as it drains.
			pods, err := ps.ReadyPods(ctx, time.Now().Add(-presenceWindow))
			n := 0
			for _, p := range pods {
				if p != pod {
					n++
				}
			}
			return n, err
		}
	}
	return delivery.New(delivery.Config{
		Outbox: ob, Channels: channels, AllowPrivate: c.EventsAllowPrivate, Consumer: pod,
		Workers: c.EventsWorkers, Horizon: c.EventsRetryHorizon, Peers: peers,
		Jobs: jobs, Logger: log, Registerer: reg,
	})
}

// stopDeliveries drains the deliverer (after the calls drained: the
// events of their last writes are delivered by then, or left to the pod
// that takes the shards).
func (a *app) stopDeliveries() {
	if a.deliverer == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.deliveryStop)
	defer cancel()
	if err := a.deliverer.Stop(ctx); err != nil {
		a.log.Warn("deliveries did not drain in time", zap.Error(err))
	}
}

// outboxAPI adapts the store's outbox to the admin API.
type outboxAPI struct{ ob store.Outbox }

// callsWithDeliveries is the calls store of the admin API with the
// delivery states of each call's events.
type callsWithDeliveries struct {
	storeAPI
	outboxAPI
}

// CallDeliveries returns the delivery states of a call's events.
func (a outboxAPI) CallDeliveries(ctx context.Context, callSID string) (any, error) {
	return a.ob.Deliveries(ctx, callSID)
}

// ParkedEvents lists parked entries, newest first.
func (a outboxAPI) ParkedEvents(ctx context.Context, limit int) ([]channel.ParkedEvent, error) {
	ps, err := a.ob.Parked(ctx, limit)
	if err != nil {
		return nil, err
	}
	out := make([]channel.ParkedEvent, 0, len(ps))
	for _, p := range ps {
		pe := channel.ParkedEvent{ID: p.ID, EventID: p.Entry.EventID, CallSID: p.Entry.CallSID, Kind: p.Entry.Kind,
			Type: p.Entry.Type, Reason: p.Reason, ParkedAt: p.ParkedAt}
		if json.Valid(p.Entry.Body) {
			pe.Body = p.Entry.Body
		}
		out = append(out, pe)
	}
	return out, nil
}

// RedeliverParked appends a parked entry to the outbox again.
func (a outboxAPI) RedeliverParked(ctx context.Context, id string) error {
	_, err := a.ob.RedeliverParked(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %w", channel.ErrNotFound, err)
	}
	return err
}
