package main

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// podPresence is the store's record of which pods take new calls
// (store.Redis and store.Memory implement it).
type podPresence interface {
	BeatPod(ctx context.Context, pod string, ready bool, now time.Time) error
	ReadyPods(ctx context.Context, since time.Time) ([]string, error)
}

// presenceEvery is how often a pod beats; a pod whose last ready beat is
// older than presenceWindow is not counted as ready.
const (
	presenceEvery  = time.Second
	presenceWindow = 3 * presenceEvery
)

// presence beats this pod's readiness into the store and follows whether
// another pod is ready, which a draining pod needs before it moves a call
// (migrator.CanMigrate): with no ready pod behind the load balancer, a
// moved call would find no endpoint and drop. A store that fails leaves
// the last answer in place (nothing can move then anyway: the move itself
// writes the session).
type presence struct {
	st       podPresence
	pod      string
	log      *zap.Logger
	draining atomic.Bool
	peers    atomic.Bool // another pod was ready at the last beat

	mu    sync.Mutex // one beat at a time (the ticker's, the drain's)
	alone bool       // "no other ready pod" was logged
}

const noPeerLog = "draining, but no other pod is ready to take the calls: they stay here until one is or SHUTDOWN_GRACE ends"

// beat records this pod's state and reads the others'.
func (p *presence) beat(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, presenceEvery)
	defer cancel()
	now := time.Now()
	draining := p.draining.Load()
	if err := p.st.BeatPod(ctx, p.pod, !draining, now); err != nil {
		return // the store watch reports the outage
	}
	pods, err := p.st.ReadyPods(ctx, now.Add(-presenceWindow))
	if err != nil {
		return
	}
	others := slices.ContainsFunc(pods, func(q string) bool { return q != p.pod })
	p.peers.Store(others)
	switch {
	case draining && !others && !p.alone:
		p.alone = true
		p.log.Warn(noPeerLog)
	case others && p.alone:
		p.alone = false
		p.log.Info("a ready pod is back: moving the calls")
	}
}

// drain makes this pod not ready in the store at once, so that the other
// pods stop counting it before it moves its first call.
func (p *presence) drain(ctx context.Context) {
	p.draining.Store(true)
	p.beat(ctx)
}

// run beats every presenceEvery until ctx ends.
func (p *presence) run(ctx context.Context) {
	t := time.NewTicker(presenceEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.beat(ctx)
		}
	}
}
