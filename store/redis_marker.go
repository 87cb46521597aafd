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

func (k keys) marker(pod string) string { return k.prefix + "marker:" + pod }

// SetMarker stores value as pod's marker (prefix "marker:<pod>", expiring
// markerTTL after the last SetMarker or CheckMarker). A pod writes one at
// start with a value of its own and checks it whenever the store comes
// back: a marker gone means the store lost its data.
func (r *Redis) SetMarker(ctx context.Context, pod, value string) error {
	if err := r.client.Set(ctx, r.k.marker(pod), value, markerTTL).Err(); err != nil {
		return fmt.Errorf("store: set marker %s: %w", pod, err)
	}
	return nil
}

// CheckMarker reports whether pod's marker holds value, and refreshes its
// expiry. An error is the store failing, not a missing marker.
func (r *Redis) CheckMarker(ctx context.Context, pod, value string) (bool, error) {
	got, err := r.client.GetEx(ctx, r.k.marker(pod), markerTTL).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: check marker %s: %w", pod, err)
	}
	return got == value, nil
}
