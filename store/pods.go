package store

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Pod presence: each pod says, every second or so, whether it takes new
// calls (ready: serving and not draining). A draining pod moves its calls
// only while another pod is ready to take them; without one a moved call
// would find no endpoint behind the load balancer.

// podsTTL is how long a ready pod's last beat keeps it listed at most;
// older entries are removed by the next beat of any pod.
const podsTTL = time.Minute

func (k keys) pods() string { return k.prefix + "pods" }

// BeatPod records that pod is ready at now (ready) or not ready any more.
func (r *Redis) BeatPod(ctx context.Context, pod string, ready bool, now time.Time) error {
	key := r.k.pods()
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		if ready {
			p.ZAdd(ctx, key, redis.Z{Score: score(now), Member: pod})
		} else {
			p.ZRem(ctx, key, pod)
		}
		p.ZRemRangeByScore(ctx, key, "-inf", "("+strconv.FormatFloat(score(now.Add(-podsTTL)), 'f', -1, 64))
		p.Expire(ctx, key, podsTTL)
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: beat pod %s: %w", pod, err)
	}
	return nil
}

// ReadyPods lists the pods whose last beat said ready at or after since, sorted.
func (r *Redis) ReadyPods(ctx context.Context, since time.Time) ([]string, error) {
	pods, err := r.client.ZRangeByScore(ctx, r.k.pods(), &redis.ZRangeBy{
		Min: strconv.FormatFloat(score(since), 'f', -1, 64), Max: "+inf",
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("store: ready pods: %w", err)
	}
	slices.Sort(pods)
	return pods, nil
}

// memPods is the presence of the pods sharing a Memory store (in one
// process: tests and demo).
type memPods struct {
	mu    sync.Mutex
	ready map[string]time.Time
}

// BeatPod records that pod is ready at now (ready) or not ready any more.
func (m *Memory) BeatPod(ctx context.Context, pod string, ready bool, now time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.pods.mu.Lock()
	defer m.pods.mu.Unlock()
	if m.pods.ready == nil {
		m.pods.ready = map[string]time.Time{}
	}
	if ready {
		m.pods.ready[pod] = now
	} else {
		delete(m.pods.ready, pod)
	}
	for p, at := range m.pods.ready {
		if at.Before(now.Add(-podsTTL)) {
			delete(m.pods.ready, p)
		}
	}
	return nil
}

// ReadyPods lists the pods whose last beat said ready at or after since, sorted.
func (m *Memory) ReadyPods(ctx context.Context, since time.Time) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.pods.mu.Lock()
	defer m.pods.mu.Unlock()
	var out []string
	for p, at := range m.pods.ready {
		if !at.Before(since) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out, nil
}
