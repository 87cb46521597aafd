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

// marker names a process's marker: its pod name and its own value, so two
// processes with one name (no POD_NAME, one host) never overwrite each other.
func (k keys) marker(pod, value string) string { return k.prefix + "marker:" + pod + ":" + value }

// SetMarker stores the marker of pod's process value (prefix
// "marker:<pod>:<value>", expiring markerTTL after the last SetMarker or
// CheckMarker). A pod writes one at
// start with a value of its own and checks it whenever the store comes
// back: a marker gone means the store lost its data.
func (r *Redis) SetMarker(ctx context.Context, pod, value string) error {
	if err := r.client.Set(ctx, r.k.marker(pod, value), "1", markerTTL).Err(); err != nil {
		return fmt.Errorf("store: set marker %s: %w", pod, err)
	}
	return nil
}

// CheckMarker reports whether the marker of pod's process value is stored,
// and refreshes its expiry. An error is the store failing, not a missing marker.
func (r *Redis) CheckMarker(ctx context.Context, pod, value string) (bool, error) {
	_, err := r.client.GetEx(ctx, r.k.marker(pod, value), markerTTL).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: check marker %s: %w", pod, err)
	}
	return true, nil
}
