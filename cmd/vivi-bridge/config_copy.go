package main

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/store"
)

// configTopic is the pub/sub topic on which every config write is announced
// (no payload), so that every pod reloads its in-process copy at once.
const configTopic = "config-changed"

// publishTimeout bounds the announcement of a config write.
const publishTimeout = time.Second

// configNotifier is the store as the admin API and CONFIG_FILE write it:
// each successful config write is announced on configTopic. A lost notice
// (the store down between the write and the publish) is made up by the
// periodic reload.
type configNotifier struct {
	storeAPI
}

func (n configNotifier) notify(ctx context.Context, err error) error {
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	_ = n.Publish(pctx, configTopic, nil)
	return nil
}

func (n configNotifier) SaveAgent(ctx context.Context, a channel.Agent) error {
	return n.notify(ctx, n.storeAPI.SaveAgent(ctx, a))
}

func (n configNotifier) DeleteAgent(ctx context.Context, id string) error {
	return n.notify(ctx, n.storeAPI.DeleteAgent(ctx, id))
}

func (n configNotifier) SaveChannel(ctx context.Context, c channel.Channel) error {
	return n.notify(ctx, n.storeAPI.SaveChannel(ctx, c))
}

func (n configNotifier) SaveChannelIf(ctx context.Context, c channel.Channel, prev *channel.Channel) error {
	return n.notify(ctx, n.storeAPI.SaveChannelIf(ctx, c, prev))
}

func (n configNotifier) SaveAgentIf(ctx context.Context, a channel.Agent, prev *channel.Agent) error {
	return n.notify(ctx, n.storeAPI.SaveAgentIf(ctx, a, prev))
}

func (n configNotifier) DeleteChannel(ctx context.Context, id string) error {
	return n.notify(ctx, n.storeAPI.DeleteChannel(ctx, id))
}

func (n configNotifier) Apply(ctx context.Context, agents []channel.Agent, channels []channel.Channel) error {
	return n.notify(ctx, n.storeAPI.Apply(ctx, agents, channels))
}

// configReader answers the config look-ups of calls (routing the voice
// webhook, the agent of a stream, a transfer's target): from the store while
// it works, so an edit is seen at once, and from the in-process copy when
// the store errors, is known to be down, or lost its configuration.
type configReader struct {
	st    storeAPI
	copy  *store.ConfigCopy
	watch *storeWatch
}

// fromCopy reports whether to skip the store: it is known to be down (a
// look-up would only add its timeout to the webhook) or lost its config.
func (r configReader) fromCopy() bool { return !r.watch.storeUp() || r.watch.configLost() }

// storeFailed reports whether err is the store failing rather than an
// answer (a refusal, not found).
func storeFailed(err error) bool {
	var rej *channel.RejectError
	return err != nil && !errors.As(err, &rej) && !errors.Is(err, channel.ErrNotFound)
}

func (r configReader) ChannelByOrigin(ctx context.Context, ip, ext string) (channel.Channel, error) {
	if r.fromCopy() {
		return r.copy.ChannelByOrigin(ctx, ip, ext)
	}
	ch, err := r.st.ChannelByOrigin(ctx, ip, ext)
	if storeFailed(err) {
		r.watch.failed(err)
		return r.copy.ChannelByOrigin(ctx, ip, ext)
	}
	return ch, err
}

func (r configReader) Agent(ctx context.Context, id string) (channel.Agent, error) {
	if r.fromCopy() {
		return r.copy.Agent(ctx, id)
	}
	a, err := r.st.Agent(ctx, id)
	if storeFailed(err) {
		r.watch.failed(err)
		return r.copy.Agent(ctx, id)
	}
	return a, err
}

func (r configReader) Channel(ctx context.Context, id string) (channel.Channel, error) {
	if r.fromCopy() {
		return r.copy.Channel(ctx, id)
	}
	c, err := r.st.Channel(ctx, id)
	if storeFailed(err) {
		r.watch.failed(err)
		return r.copy.Channel(ctx, id)
	}
	return c, err
}

// runConfigCopy keeps the copy fresh until ctx ends: a reload on every
// notice on configTopic and every reloadEvery. The subscription is made
// again whenever it is lost (the store down at start, or closed).
func (w *storeWatch) runConfigCopy(ctx context.Context, reloadEvery time.Duration) {
	var notices <-chan []byte
	unsubscribe := func() {}
	defer func() { unsubscribe() }()
	tick := time.NewTicker(reloadEvery)
	defer tick.Stop()
	retry := time.NewTicker(w.checkEvery)
	defer retry.Stop()
	for {
		if notices == nil {
			sctx, cancel := context.WithTimeout(ctx, w.checkEvery+time.Second)
			ch, cancelSub, err := w.st.Subscribe(sctx, configTopic)
			cancel()
			if err == nil {
				notices, unsubscribe = ch, cancelSub
				w.reload(ctx) // what changed while we were not listening
			}
		}
		select {
		case <-ctx.Done():
			return
		case _, ok := <-notices:
			if !ok {
				unsubscribe()
				notices, unsubscribe = nil, func() {}
				continue
			}
			w.reload(ctx)
		case <-tick.C:
			w.reload(ctx)
		case <-retry.C: // only to retry a failed subscription
		case <-w.reloadNow: // the store is back: subscribe anew (its connection may be dead), then reload
			unsubscribe()
			notices, unsubscribe = nil, func() {}
		}
	}
}

// reload loads the copy from the store. An empty store does not empty a
// non-empty copy until the pod's marker says the store kept its data (an
// operator deleted everything); a missing marker is the store's loss,
// handled by lost. While the configuration is lost, a non-empty store ends
// the loss.
func (w *storeWatch) reload(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, w.checkEvery+time.Second)
	defer cancel()
	agents, channels, kept, err := w.copy.Reload(rctx, w.now(), true)
	if err == nil && kept && !w.configLost() {
		if intact, merr := w.markerIntact(rctx); merr != nil {
			err = merr
		} else if !intact {
			w.storeLost(ctx)
			return
		} else {
			agents, channels, kept, err = w.copy.Reload(rctx, w.now(), false)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.reloadErr = err.Error()
		return
	}
	w.reloadErr = ""
	if w.lost && !kept && agents+channels > 0 {
		w.lost = false
		w.metrics.configLost.Set(0)
		w.log.Info("configuration is back in the store; routing from it again",
			zap.Int("agents", agents), zap.Int("channels", channels))
	}
}
