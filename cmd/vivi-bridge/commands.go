package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/vivi/bridge/bridge"
	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/session"
)

// An operator's transfer or hang-up may land on any pod; the pod that holds
// the call's media stream is the only one that acts on it (it owns the
// call). The API pod checks the request against the session, subscribes to
// a reply topic of its own for the request, and publishes the command on
// the owning pod's topic; each pod listens on its own and replies once its
// call loop has taken the command (or why not). No reply within
// replyTimeout means no live owner: a hang-up then goes through the Twilio
// REST API directly, a transfer is refused (no_owner).

// podCommand is the message published to the owning pod.
type podCommand struct {
	Op          string `json:"op"` // transfer | hangup
	CallSID     string `json:"callSid"`
	Destination string `json:"destination,omitempty"`
	// ReplyTo is the topic the owner answers on (a podReply).
	ReplyTo string `json:"replyTo,omitempty"`
}

// podReply is the owner's answer to a podCommand.
type podReply struct {
	// Result is ok, not_here, not_live or busy.
	Result string `json:"result"`
}

// Results of a podReply.
const (
	replyOK      = "ok"
	replyNotHere = "not_here"
	replyNotLive = "not_live"
	replyBusy    = "busy"
)

func podTopic(podID string) string { return "pod:" + podID }

// replyTimeout bounds the wait for the owning pod's reply. It is longer
// than the owner's own hand-over bound (the call loop's deliver, 2 s), so
// that an owner that gives up says so before the requester stops waiting.
const replyTimeout = 3 * time.Second

// callOwner is the bridge side of commands: it acts on a call it holds
// (nil once the call loop took it, or a bridge.ErrCall* error).
type callOwner interface {
	TransferCall(callSID, destination string) error
	HangupCall(callSID string) error
}

// callHanger ends a call through the Twilio REST API (transfer.Twilio).
type callHanger interface {
	Hangup(ctx context.Context, callSID string) error
}

// commander implements channel.CallCommander over the store's pub/sub.
type commander struct {
	st    storeAPI
	calls callHanger    // for a hang-up with no live owner
	wait  time.Duration // reply timeout; 0 means replyTimeout
	log   *zap.Logger
}

// liveSession returns the session of a call that has a live stream.
func (c commander) liveSession(ctx context.Context, callSID string) (*session.Session, error) {
	s, err := c.st.Session(ctx, callSID)
	if err != nil {
		return nil, err
	}
	if s.State != session.Streaming || s.PodID == "" {
		return nil, fmt.Errorf("%w: call %s is %s", channel.ErrCallNotLive, callSID, s.State)
	}
	return s, nil
}

func (c commander) TransferCall(ctx context.Context, callSID, destination string) error {
	s, err := c.liveSession(ctx, callSID)
	if err != nil {
		return err
	}
	ag, err := c.st.Agent(ctx, s.AgentID)
	if err != nil {
		return fmt.Errorf("agent of call %s: %w", callSID, err)
	}
	if _, ok := ag.DestinationByName(destination); !ok {
		return fmt.Errorf("%w: %q is not a destination of agent %s", channel.ErrUnknownDestination, destination, ag.ID)
	}
	return c.ask(ctx, s.PodID, podCommand{Op: "transfer", CallSID: callSID, Destination: destination})
}

func (c commander) HangupCall(ctx context.Context, callSID string) error {
	s, err := c.liveSession(ctx, callSID)
	if err != nil {
		return err
	}
	err = c.ask(ctx, s.PodID, podCommand{Op: "hangup", CallSID: callSID})
	if !errors.Is(err, channel.ErrNoOwner) || c.calls == nil {
		return err
	}
	return c.hangupDirect(ctx, s, err)
}

// hangupDirect ends a call whose owner did not answer through the REST API
// and records it on the session (the owner, gone, will not).
func (c commander) hangupDirect(ctx context.Context, s *session.Session, why error) error {
	log := c.logger().With(zap.String("call_sid", s.CallSID), zap.String("channel_id", s.ChannelID), zap.String("pod_id", s.PodID))
	if err := c.calls.Hangup(ctx, s.CallSID); err != nil {
		log.Warn("operator hang-up failed: no live owner and the REST hang-up failed", zap.Error(err))
		return fmt.Errorf("%w: %w", channel.ErrHangupFailed, err)
	}
	log.Info("operator hang-up through the REST API: the owning pod did not answer", zap.NamedError("owner", why))
	_, err := c.st.UpdateSession(ctx, s.CallSID, func(s *session.Session) error {
		now := time.Now()
		s.Record(now, session.EventOperator, "hang-up requested; pod "+s.PodID+" did not answer: hung up through the REST API")
		s.End(bridge.ReasonOperatorHangup, now)
		return nil
	})
	if err != nil { // the call is hung up; the record lags, say so in the log
		log.Warn("operator hang-up done but not recorded on the session", zap.Error(err))
	}
	return nil
}

func (c commander) logger() *zap.Logger {
	if c.log == nil {
		return zap.NewNop()
	}
	return c.log
}

// ask publishes cmd to podID and waits for its reply.
func (c commander) ask(ctx context.Context, podID string, cmd podCommand) error {
	id := make([]byte, 12)
	_, _ = rand.Read(id) // crypto/rand.Read never fails
	cmd.ReplyTo = "reply:" + hex.EncodeToString(id)
	wait := c.wait
	if wait <= 0 {
		wait = replyTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	replies, unsubscribe, err := c.st.Subscribe(ctx, cmd.ReplyTo)
	if err != nil {
		return fmt.Errorf("%s for call %s: %w", cmd.Op, cmd.CallSID, err)
	}
	defer unsubscribe()
	b, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	if err := c.st.Publish(ctx, podTopic(podID), b); err != nil {
		return fmt.Errorf("publish %s to pod %s: %w", cmd.Op, podID, err)
	}
	select {
	case <-ctx.Done():
		return fmt.Errorf("%w: pod %s did not answer for call %s", channel.ErrNoOwner, podID, cmd.CallSID)
	case b, ok := <-replies:
		var r podReply
		if !ok || json.Unmarshal(b, &r) != nil {
			return fmt.Errorf("%w: no usable answer from pod %s for call %s", channel.ErrNoOwner, podID, cmd.CallSID)
		}
		switch r.Result {
		case replyOK:
			return nil
		case replyNotLive:
			return fmt.Errorf("%w: call %s is not live on pod %s", channel.ErrCallNotLive, cmd.CallSID, podID)
		case replyBusy:
			return fmt.Errorf("%w: call %s on pod %s did not take the command in time", channel.ErrCallBusy, cmd.CallSID, podID)
		default: // not_here: the session names a pod that no longer holds the stream
			return fmt.Errorf("%w: pod %s does not hold call %s", channel.ErrNoOwner, podID, cmd.CallSID)
		}
	}
}

// listenCommands delivers this pod's commands to the calls it owns until ctx
// ends, and replies to each. It returns once subscribed, so no command
// published after it returns is missed.
func listenCommands(ctx context.Context, st storeAPI, podID string, owner callOwner, log *zap.Logger) error {
	msgs, cancel, err := st.Subscribe(ctx, podTopic(podID))
	if err != nil {
		return fmt.Errorf("subscribe to pod commands: %w", err)
	}
	go func() {
		defer cancel()
		for {
			select {
			case <-ctx.Done():
				return
			case b, ok := <-msgs:
				if !ok {
					log.Warn("pod command subscription closed")
					return
				}
				runCommand(ctx, st, owner, b, log)
			}
		}
	}()
	return nil
}

// runCommand acts on one pod command and publishes the reply.
func runCommand(ctx context.Context, st storeAPI, owner callOwner, b []byte, log *zap.Logger) {
	var cmd podCommand
	if err := json.Unmarshal(b, &cmd); err != nil {
		log.Warn("pod command ignored: malformed", zap.Error(err))
		return
	}
	var err error
	switch cmd.Op {
	case "transfer":
		err = owner.TransferCall(cmd.CallSID, cmd.Destination)
	case "hangup":
		err = owner.HangupCall(cmd.CallSID)
	default:
		log.Warn("pod command ignored: unknown op", zap.String("call_sid", cmd.CallSID), zap.String("op", clipOp(cmd.Op)))
		return
	}
	result := replyOK
	switch {
	case errors.Is(err, bridge.ErrCallNotHere):
		result = replyNotHere
	case errors.Is(err, bridge.ErrCallNotLive):
		result = replyNotLive
	case err != nil:
		result = replyBusy
	}
	log.Info("operator command", zap.String("call_sid", cmd.CallSID), zap.String("op", cmd.Op),
		zap.String("destination", cmd.Destination), zap.String("result", result))
	if cmd.ReplyTo == "" {
		return
	}
	rb, _ := json.Marshal(podReply{Result: result})
	rctx, cancel := context.WithTimeout(ctx, replyTimeout)
	defer cancel()
	if err := st.Publish(rctx, cmd.ReplyTo, rb); err != nil {
		log.Warn("operator command reply not sent", zap.String("call_sid", cmd.CallSID), zap.Error(err))
	}
}

// clipOp bounds an unknown op name before it is logged.
func clipOp(op string) string {
	if len(op) > 32 {
		return op[:32]
	}
	return op
}
