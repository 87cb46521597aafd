package bridge

import (
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/vivi/bridge/session"
)

// ReasonFenced ends a stream whose call another stream has taken over (its
// session carries a newer fencing token): the stream ends, the session is
// not touched.
const ReasonFenced = "fenced"

// Ownership of a call (issue 10, part 2). The stream that takes a call
// (lookup's session update) increments the session's fencing token
// (session.Take) and holds a lease on it that it renews every LeaseRenew
// while the call is live. Every write of the call checks the token in the
// same check-and-set: the session writer's guard, the hang-up's update and
// the transfer's start (TransferRequest.Fence). So a stream that lost the
// call (its pod was paused, cut off from the store or killed late, or a
// newer stream took over) cannot overwrite newer state or start a transfer:
// the first refused write ends it, without touching the session. While the
// store is down nothing can be renewed, and nothing else can take the call
// either (a new stream needs the store to take it); when the store returns
// the queued renewal lands or finds the stream fenced.

// ownerFence is the fencing token of the call's writes, owned by the
// session writer's goroutine (its guard and its mutations run there). It is
// 0 until known: a stream accepted while the store was down takes the call
// with the writer's first write (adopt).
//
// adopted is what the adopting mutation took in the update being written:
// a store may run an update more than once (a check-and-set conflict), so
// it becomes v only once that write committed (written).
type ownerFence struct {
	v       int64
	adopted int64
	refused bool // the adopting mutation found the call ended or streaming elsewhere
}

// guard refuses a write to a session whose token is not ours.
func (f *ownerFence) guard(s *session.Session) error {
	f.adopted, f.refused = 0, false // this run of the update decides
	return s.CheckFence(f.v)
}

// renewLease queues the renewal of the call's lease and arms the next one.
func (c *call) renewLease() {
	c.leaseC = c.cfg.After(c.cfg.LeaseRenew)
	if c.writer == nil {
		return
	}
	now, ttl := c.now(), c.cfg.LeaseTTL
	c.writer.push(func(s *session.Session) {
		until := now.Add(ttl)
		s.LeaseUntil = &until // the guard checked the fence
	})
}

// writerFenced is closed when the session writer found the call taken over.
func (c *call) writerFenced() <-chan struct{} {
	if c.writer == nil {
		return nil
	}
	return c.writer.fenced
}

// onFenced ends the stream of a call that another stream owns now: logged
// once, no session write (endMutation), no transfer, no hang-up.
func (c *call) onFenced() {
	if c.endReason != "" {
		return
	}
	c.log.Warn("the call is owned by a newer stream (fenced): ending this stream without touching the session",
		zap.Int64("fence", c.fence))
	c.end(ReasonFenced)
}

// isFenced reports whether err is a refused write of a fenced owner.
func isFenced(err error) bool { return errors.Is(err, session.ErrFenced) }

// leaseTimerC is the lease renewal timer, nil before the call is live.
func (c *call) leaseTimerC() <-chan time.Time { return c.leaseC }
