package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// markerTTL is how long a pod's marker outlives the pod's last check, so
// that the markers of pods gone for good expire.
const markerTTL = 24 * time.Hour

// markers name a process's markers: its pod name and its own value, so two
// processes with one name (no POD_NAME, one host) never overwrite each
// other. There is one in each hash-tag group ({cfg}, {sess}): on Redis
// Cluster those live on different masters, and either one failing over to
// a replica without the data must be noticed.
func (k keys) markers(pod, value string) [2]string {
	return [2]string{k.prefix + "{cfg}:marker:" + pod + ":" + value, k.prefix + "{sess}:marker:" + pod + ":" + value}
}

// SetMarker stores the markers of pod's process value (one beside the
// configuration, one beside the sessions), expiring markerTTL after the
// last SetMarker or CheckMarker. A pod writes them at start with a value of
// its own and checks them whenever the store comes back: a marker gone
// means the store (or that part of a Cluster) lost its data.
func (r *Redis) SetMarker(ctx context.Context, pod, value string) error {
	ks := r.k.markers(pod, value)
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range ks {
			p.Set(ctx, k, "1", markerTTL)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: set marker %s: %w", pod, err)
	}
	return nil
}

// CheckMarker reports whether both markers of pod's process value are
// stored, and refreshes their expiry. An error is the store failing, not a
// missing marker.
func (r *Redis) CheckMarker(ctx context.Context, pod, value string) (bool, error) {
	ks := r.k.markers(pod, value)
	cmds := make([]*redis.StringCmd, len(ks))
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range ks {
			cmds[i] = p.GetEx(ctx, k, markerTTL)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return false, fmt.Errorf("store: check marker %s: %w", pod, err)
	}
	for _, c := range cmds {
		if errors.Is(c.Err(), redis.Nil) {
			return false, nil
		}
		if c.Err() != nil {
			return false, fmt.Errorf("store: check marker %s: %w", pod, c.Err())
		}
	}
	return true, nil
}
