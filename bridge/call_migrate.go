package bridge

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
)

// Drain by migration (issue 10, part 1). When the server drains, every live
// call is moved to another pod at a quiet moment: no agent audio still
// playing by Twilio's marks (nor held back by pacing), the caller not
// speaking (speech_started without speech_stopped), no response asked for
// or being generated, no transfer or hang-up in flight, and every session
// change written (so that the new pod restores the whole conversation).
// When no such moment comes within MigrateQuietWait the call is moved at
// the next frame anyway, unless a transfer or hang-up is in flight: those
// end this stream themselves. The Migrator makes a fresh <Connect><Stream>
// the call's connect generation and updates the live call through Twilio's
// REST API; Twilio stops this stream (ReasonMigrated: the session is not
// ended) and opens the new one on a ready pod, which restores the
// conversation and does not greet (quietResume). A failed update is retried
// with backoff until the call's context ends (Shutdown's deadline).

// migration is the move of a call, owned by the loop.
type migration struct {
	asked   bool // the server drains: move the call
	late    bool // the quiet wait is over: move at the next frame
	started bool // the REST update is under way (or done): Twilio's stop is its effect
	done    bool // Twilio accepted the update
	timeout <-chan time.Time
}

func (m *migration) timerC() <-chan time.Time {
	if m.started || m.late {
		return nil
	}
	return m.timeout
}

// Backoff of a failed migration request.
const (
	migrateRetryMin = 200 * time.Millisecond
	migrateRetryMax = 3 * time.Second
)

// requestMigrate asks the call to move to another pod; safe from any
// goroutine, at most once.
func (c *call) requestMigrate() { c.migrateMu.Do(func() { close(c.migrateCh) }) }

func (c *call) migrateC() <-chan struct{} {
	if c.migr.asked {
		return nil
	}
	return c.migrateCh
}

func (c *call) onMigrateAsked() {
	c.migr.asked = true
	c.migr.timeout = c.cfg.After(c.cfg.MigrateQuietWait)
	if c.srv.deps.Migrator == nil && c.phase == live {
		c.log.Info("draining: no migrator configured, the call stays until the drain deadline")
	}
}

// tryMigrate moves the call when it was asked to and the moment is right.
// It runs after every event of the loop, so a late move happens at the
// next frame boundary.
func (c *call) tryMigrate() {
	m := &c.migr
	if !m.asked || m.started || c.endReason != "" || c.phase != live || c.srv.deps.Migrator == nil {
		return
	}
	if c.transfer || c.hangup.pending {
		return // the transfer or hang-up ends this stream itself
	}
	if !c.srv.deps.Migrator.CanMigrate() {
		return // no pod to take it yet: asked again at the next frame
	}
	why := "quiet moment"
	if !c.quiet() || c.writer == nil || !c.writer.idle() { // the record is written before the move
		if !m.late {
			return
		}
		why = "quiet wait over"
	}
	m.started = true
	m.timeout = nil
	req := MigrateRequest{CallSID: c.callSID, StreamSID: c.streamSID, PodID: c.cfg.PodID, Fence: c.fence}
	c.log.Info("migrating the call to another pod", zap.String("why", why))
	mig, after, timeout := c.srv.deps.Migrator, c.cfg.After, c.cfg.StoreTimeout
	c.async(func(ctx context.Context) func() {
		n, err := migrate(ctx, mig, req, after, timeout)
		return func() { c.onMigrated(n, err) }
	})
}

// migrate calls mig until it succeeds, the stream is fenced, the move is
// impossible (ErrCannotMigrate), or ctx ends,
// with backoff between attempts; it returns the number of attempts. One
// attempt is not cut by ctx (Twilio may stop the stream before the REST
// call has answered); timeout bounds it.
func migrate(ctx context.Context, mig Migrator, req MigrateRequest, after func(time.Duration) <-chan time.Time, timeout time.Duration) (int, error) {
	delay := migrateRetryMin
	for n := 1; ; n++ {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		err := mig.Migrate(actx, req)
		cancel()
		if err == nil || isFenced(err) || errors.Is(err, ErrCannotMigrate) {
			return n, err
		}
		select {
		case <-ctx.Done():
			return n, err
		case <-after(delay):
		}
		delay = min(2*delay, migrateRetryMax)
	}
}

func (c *call) onMigrated(attempts int, err error) {
	switch {
	case err == nil:
		c.migr.done = true
		c.log.Info("migration under way: Twilio moves the stream", zap.Int("attempts", attempts))
	case isFenced(err):
		c.onFenced()
	case errors.Is(err, ErrCannotMigrate):
		// Final: the call stays here until it ends or the drain does.
		c.log.Warn("the call cannot be moved: it stays on this pod", zap.Int("attempts", attempts), zap.Error(err))
	default:
		// Only when the call's context ended (the drain deadline): the
		// call ends with reason shutdown.
		c.log.Warn("migration failed", zap.Int("attempts", attempts), zap.Error(err))
	}
}

// quietResume reports whether this stream continues a call moved here from
// another pod: the agent does not greet or speak (no response.create); the
// caller carries on and the model answers their next turn.
func (c *call) quietResume() bool {
	q := c.migratedIn
	c.migratedIn = false // a later re-dial of this stream continues as usual
	return q
}
