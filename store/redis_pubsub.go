package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// resubscribePause is how long the receive loop waits after a receive error
// before reading again.
const resubscribePause = 100 * time.Millisecond

// Publish sends msg to every subscriber of topic on every pod (PUBLISH on the
// prefixed channel name).
func (r *Redis) Publish(ctx context.Context, topic string, msg []byte) error {
	if err := r.client.Publish(ctx, r.k.topic(topic), msg).Err(); err != nil {
		return fmt.Errorf("store: publish %s: %w", topic, err)
	}
	return nil
}

// Subscribe returns the messages published to topic once the subscription is
// confirmed, until the returned cancel func is called (or the client is
// closed). ctx bounds the subscription only. cancel closes the channel and
// returns after the one receive goroutine has ended. A subscriber that lags
// subscriberBuffer messages behind misses new ones rather than stalling the
// connection.
func (r *Redis) Subscribe(ctx context.Context, topic string) (<-chan []byte, func(), error) {
	ps := r.client.Subscribe(ctx, r.k.topic(topic))
	if _, err := ps.Receive(ctx); err != nil { // the subscription confirmation
		_ = ps.Close()
		return nil, nil, fmt.Errorf("store: subscribe %s: %w", topic, err)
	}
	loopCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	out := make(chan []byte, subscriberBuffer)
	done := make(chan struct{})
	go func() { // the only sender on out, and its closer
		defer close(done)
		defer close(out)
		for {
			msg, err := ps.ReceiveMessage(loopCtx)
			if loopCtx.Err() != nil || errors.Is(err, redis.ErrClosed) {
				return
			}
			if err != nil { // go-redis reconnects and resubscribes; read again shortly
				pause := time.NewTimer(resubscribePause)
				select {
				case <-loopCtx.Done():
					pause.Stop()
					return
				case <-pause.C:
				}
				continue
			}
			select {
			case out <- []byte(msg.Payload):
			default: // slow subscriber: drop
			}
		}
	}()
	var once sync.Once
	cancel := func() {
		once.Do(func() {
			stop()
			_ = ps.Close() // unblocks ReceiveMessage
			<-done
		})
	}
	return out, cancel, nil
}
