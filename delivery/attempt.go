package delivery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/store"
)

// storeRetry is the wait before trying again an entry whose outcome could
// not be recorded or acknowledged (the store failed).
const storeRetry = time.Second

// attempt makes one attempt at it and returns 0 when it is done
// (acknowledged or parked), else the wait before the next.
func (d *Deliverer) attempt(ctx context.Context, it *item) time.Duration {
	e := it.e
	log := d.cfg.Logger.With(zap.String("call_sid", e.CallSID), zap.String("channel_id", e.ChannelID),
		zap.String("event_id", e.EventID), zap.String("type", e.Type))
	if it.settled {
		return d.ack(ctx, it, log)
	}
	if it.parkReason != "" {
		return d.park(ctx, it, it.parkReason, log)
	}
	if !it.resumed && e.Kind == store.OutboxEvent {
		// Taken over from another pod (or an earlier run): continue its
		// attempts and backoff from the delivery record.
		it.resumed = true
		if wait := d.resume(ctx, it); wait > 0 {
			return wait
		}
	}
	if it.created.IsZero() {
		it.created = d.cfg.Now().UTC()
	}
	if e.Kind == store.OutboxJob {
		return d.runJob(ctx, it, log)
	}
	return d.postEvent(ctx, it, log)
}

// ack acknowledges a settled entry; on a store failure it is tried again.
func (d *Deliverer) ack(ctx context.Context, it *item, log *zap.Logger) time.Duration {
	it.settled = true
	if err := d.cfg.Outbox.AckOutbox(ctx, it.e.Shard, it.e.ID); err != nil {
		if ctx.Err() == nil {
			log.Warn("outbox entry not acknowledged", zap.Error(err))
		}
		return storeRetry
	}
	return 0
}

// park gives up on an entry; on a store failure it is tried again.
func (d *Deliverer) park(ctx context.Context, it *item, reason string, log *zap.Logger) time.Duration {
	it.parkReason = reason
	if err := d.cfg.Outbox.ParkOutbox(ctx, it.e, reason); err != nil {
		if ctx.Err() == nil {
			log.Warn("outbox entry not parked", zap.Error(err))
		}
		return storeRetry
	}
	d.m.parked.Inc()
	log.Warn("outbox entry parked", zap.String("reason", reason), zap.Int("attempts", it.attempts))
	return 0
}

func (d *Deliverer) setDelivery(ctx context.Context, it *item, del store.Delivery, log *zap.Logger) {
	if err := d.cfg.Outbox.SetDelivery(ctx, it.e.CallSID, del); err != nil && ctx.Err() == nil {
		log.Warn("delivery state not recorded", zap.Error(err))
	}
}

func (d *Deliverer) postEvent(ctx context.Context, it *item, log *zap.Logger) time.Duration {
	e := it.e
	ch, err := d.cfg.Channels.Channel(ctx, e.ChannelID)
	if errors.Is(err, channel.ErrNotFound) {
		return d.park(ctx, it, "channel not found", log)
	}
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("call event not posted: channel lookup", zap.Error(err))
		}
		return storeRetry
	}
	if ch.EventsURL == "" {
		return d.ack(ctx, it, log) // events not wanted: nothing to record
	}
	if channel.CheckEventsTarget(ch.EventsURL, d.cfg.AllowPrivate) != nil {
		// The reason names no URL: it is logged and listed.
		return d.refused(ctx, it, "target refused: not https, or an internal host", log)
	}
	status, retryAfter, err := d.post(ctx, ch, e)
	if ctx.Err() != nil {
		return storeRetry // cancelled (the pod stops): the next owner tries again
	}
	now := d.cfg.Now().UTC()
	it.attempts++
	del := store.Delivery{EventID: e.EventID, Type: e.Type, Attempts: it.attempts, CreatedAt: it.created,
		LastAttempt: &now, LastStatus: status}
	if err == nil {
		del.State, del.DeliveredAt = store.DeliveryDelivered, &now
		d.setDelivery(ctx, it, del, log)
		d.m.delivered.WithLabelValues(e.Type).Inc()
		return d.ack(ctx, it, log)
	}
	d.m.failed.Inc()
	del.LastError = err.Error()
	if errors.Is(err, channel.ErrForbiddenEventsTarget) {
		del.State = store.DeliveryParked
		d.setDelivery(ctx, it, del, log)
		return d.refused(ctx, it, "target refused: "+err.Error(), log)
	}
	wait := retryWait(retryAfter, it.attempts, d.cfg.Jitter)
	next := now.Add(wait)
	if next.After(e.At.Add(d.cfg.Horizon)) {
		del.State = store.DeliveryParked
		d.setDelivery(ctx, it, del, log)
		reason := "retry horizon: last error: " + err.Error()
		if status != 0 {
			reason = "retry horizon: last status " + strconv.Itoa(status)
		}
		return d.park(ctx, it, reason, log)
	}
	del.State, del.NextAttempt = store.DeliveryRetrying, &next
	d.setDelivery(ctx, it, del, log)
	log.Info("call event not posted; retrying", zap.Int("attempts", it.attempts), zap.Duration("wait", wait), zap.Error(err))
	return wait
}

// refused parks an entry whose target the policy refuses.
func (d *Deliverer) refused(ctx context.Context, it *item, reason string, log *zap.Logger) time.Duration {
	now := d.cfg.Now().UTC()
	d.setDelivery(ctx, it, store.Delivery{EventID: it.e.EventID, Type: it.e.Type, State: store.DeliveryParked,
		Attempts: it.attempts, CreatedAt: it.created, LastAttempt: &now, LastError: reason}, log)
	return d.park(ctx, it, reason, log)
}

// post makes one signed POST of e's body: the status (0 without an
// answer), the Retry-After asked for, and an error unless 2xx.
func (d *Deliverer) post(ctx context.Context, ch channel.Channel, e store.OutboxEntry) (int, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ch.EventsURL, bytes.NewReader(e.Body))
	if err != nil {
		return 0, 0, errors.New("post event: bad eventsUrl")
	}
	ts := d.cfg.Now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "vivi-bridge")
	req.Header.Set(channel.EventSignatureHeader, channel.SignEvent(ch.EventsSecret, ts, e.Body))
	req.Header.Set(HeaderID, e.EventID)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, SignStandard(ch.EventsSecret, e.EventID, ts, e.Body))
	resp, err := d.cfg.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL
		}
		return 0, 0, fmt.Errorf("post event: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp.StatusCode, 0, nil
	}
	return resp.StatusCode, ParseRetryAfter(resp.Header.Get("Retry-After"), d.cfg.Now()),
		fmt.Errorf("post event: status %d", resp.StatusCode)
}

func (d *Deliverer) runJob(ctx context.Context, it *item, log *zap.Logger) time.Duration {
	e := it.e
	h := d.cfg.Jobs[e.Type]
	if h == nil {
		return d.park(ctx, it, "unknown job type "+strconv.Quote(e.Type), log)
	}
	res := h.Run(ctx, e)
	if ctx.Err() != nil {
		return storeRetry
	}
	it.attempts++
	switch {
	case res.Done:
		return d.ack(ctx, it, log)
	case res.RetryAfter > 0:
		if d.cfg.Now().Add(res.RetryAfter).After(e.At.Add(d.cfg.Horizon)) {
			return d.park(ctx, it, "retry horizon: job not done", log)
		}
		return res.RetryAfter
	default:
		log.Warn("job failed", zap.Int("attempts", it.attempts), zap.Error(res.Err))
		return d.ack(ctx, it, log)
	}
}

// resume loads the delivery record of an entry retried by an earlier
// owner: its attempts, and the wait left before its next attempt.
func (d *Deliverer) resume(ctx context.Context, it *item) time.Duration {
	ds, err := d.cfg.Outbox.Deliveries(ctx, it.e.CallSID)
	if err != nil {
		return 0 // unknown: start afresh
	}
	for _, del := range ds {
		if del.EventID != it.e.EventID || del.State != store.DeliveryRetrying {
			continue
		}
		it.attempts, it.created = del.Attempts, del.CreatedAt
		if del.NextAttempt != nil {
			return del.NextAttempt.Sub(d.cfg.Now())
		}
	}
	return 0
}
