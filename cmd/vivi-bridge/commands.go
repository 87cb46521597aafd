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
//
// The same channel carries stream probes (op probe): before connect-ended
// reconnects a streaming call, the webhook asks the owning pod whether the
// stream is really live (bridge.Server.ProbeStream); the owner answers live
// or not_live, and no answer within probeTimeout counts as not live.

// podCommand is the message published to the owning pod.
type podCommand struct {
	Op          string `json:"op"` // transfer | hangup | probe
	CallSID     string `json:"callSid"`
	Destination string `json:"destination,omitempty"`
	StreamSID   string `json:"streamSid,omitempty"` // probe: the stream the session names
	// ReplyTo is the topic the owner answers on (a podReply).
	ReplyTo string `json:"replyTo,omitempty"`
}

// podReply is the owner's answer to a podCommand.
type podReply struct {
	// Result is ok, not_here, not_live or busy; live or not_live for a probe.
	Result string `json:"result"`
}

// Results of a podReply.
const (
	replyOK      = "ok"
	replyNotHere = "not_here"
	replyNotLive = "not_live"
	replyBusy    = "busy"
	replyLive    = "live"
)

// opProbe asks the owner whether a call's stream is really live.
const opProbe = "probe"

// probeTimeout bounds the wait for a probe's answer: the owner's window
// (300 ms) and a pub/sub round trip. It is short because Twilio waits on the
// connect-ended answer with the caller on the line.
const probeTimeout = time.Second

// maxProbes bounds the probes a pod answers at once (each waits up to the
// bridge's probe window); beyond it they are answered in turn.
const maxProbes = 64

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
	ProbeStream(ctx context.Context, callSID, streamSID string) (bool, error)
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
	// podID and local, when set, let a probe of a stream on this very pod
	// ask the bridge directly instead of going through pub/sub.
	podID string
	local callOwner
}

// ProbeStream implements twiml.StreamProber: it asks pod podID whether it
// holds a live stream of callSID (streamSID, when not empty). An error means
// the pod did not answer within probeTimeout.
func (c commander) ProbeStream(ctx context.Context, podID, callSID, streamSID string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if c.local != nil && podID == c.podID {
		live, err := c.local.ProbeStream(ctx, callSID, streamSID)
		if errors.Is(err, bridge.ErrCallNotHere) {
			return false, nil // an answer: the stream is not here
		}
		return live && err == nil, err
	}
	r, err := c.request(ctx, podID, podCommand{Op: opProbe, CallSID: callSID, StreamSID: streamSID}, probeTimeout)
	if err != nil {
		return false, err
	}
	return r == replyLive, nil
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
	wait := c.wait
	if wait <= 0 {
		wait = replyTimeout
	}
	r, err := c.request(ctx, podID, cmd, wait)
	if err != nil {
		return err
	}
	switch r {
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

// request publishes cmd to podID and returns the result of its reply, or
// an error wrapping channel.ErrNoOwner when none came within wait.
func (c commander) request(ctx context.Context, podID string, cmd podCommand, wait time.Duration) (string, error) {
	id := make([]byte, 12)
	_, _ = rand.Read(id) // crypto/rand.Read never fails
	cmd.ReplyTo = "reply:" + hex.EncodeToString(id)
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	replies, unsubscribe, err := c.st.Subscribe(ctx, cmd.ReplyTo)
	if err != nil {
		return "", fmt.Errorf("%s for call %s: %w", cmd.Op, cmd.CallSID, err)
	}
	defer unsubscribe()
	b, err := json.Marshal(cmd)
	if err != nil {
		return "", err
	}
	if err := c.st.Publish(ctx, podTopic(podID), b); err != nil {
		return "", fmt.Errorf("publish %s to pod %s: %w", cmd.Op, podID, err)
	}
	select {
	case <-ctx.Done():
		return "", fmt.Errorf("%w: pod %s did not answer for call %s", channel.ErrNoOwner, podID, cmd.CallSID)
	case b, ok := <-replies:
		var r podReply
		if !ok || json.Unmarshal(b, &r) != nil {
			return "", fmt.Errorf("%w: no usable answer from pod %s for call %s", channel.ErrNoOwner, podID, cmd.CallSID)
		}
		return r.Result, nil
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
		probes := make(chan struct{}, maxProbes) // slots of the probes being answered
		for {
			select {
			case <-ctx.Done():
				return
			case b, ok := <-msgs:
				if !ok {
					log.Warn("pod command subscription closed")
					return
				}
				dispatch(ctx, st, owner, b, probes, log)
			}
		}
	}()
	return nil
}

// dispatch parses one pod command and acts on it. Operator commands run in
// turn; a probe, which waits for a Twilio frame, runs aside while one of
// the slots is free (in turn when none is, so the work stays bounded).
func dispatch(ctx context.Context, st storeAPI, owner callOwner, b []byte, slots chan struct{}, log *zap.Logger) {
	var cmd podCommand
	if err := json.Unmarshal(b, &cmd); err != nil {
		log.Warn("pod command ignored: malformed", zap.Error(err))
		return
	}
	if cmd.Op != opProbe {
		runCommand(ctx, st, owner, cmd, log)
		return
	}
	select {
	case slots <- struct{}{}:
		go func() {
			defer func() { <-slots }()
			runProbe(ctx, st, owner, cmd, log)
		}()
	default:
		runProbe(ctx, st, owner, cmd, log)
	}
}

// runProbe answers one stream probe: live or not_live.
func runProbe(ctx context.Context, st storeAPI, owner callOwner, cmd podCommand, log *zap.Logger) {
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	live, err := owner.ProbeStream(pctx, cmd.CallSID, cmd.StreamSID)
	cancel()
	result := replyNotLive
	if live && err == nil {
		result = replyLive
	}
	log.Debug("stream probe", zap.String("call_sid", cmd.CallSID), zap.String("stream_sid", clipField(cmd.StreamSID, 64)),
		zap.String("result", result), zap.NamedError("why", err))
	reply(ctx, st, cmd, result, log)
}

// reply publishes result to the command's reply topic, if any.
func reply(ctx context.Context, st storeAPI, cmd podCommand, result string, log *zap.Logger) {
	if cmd.ReplyTo == "" {
		return
	}
	rb, _ := json.Marshal(podReply{Result: result})
	rctx, cancel := context.WithTimeout(ctx, replyTimeout)
	defer cancel()
	if err := st.Publish(rctx, cmd.ReplyTo, rb); err != nil {
		log.Warn("pod command reply not sent", zap.String("call_sid", cmd.CallSID), zap.String("op", clipOp(cmd.Op)), zap.Error(err))
	}
}

// runCommand acts on one operator command and publishes the reply.
func runCommand(ctx context.Context, st storeAPI, owner callOwner, cmd podCommand, log *zap.Logger) {
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
	reply(ctx, st, cmd, result, log)
}

// clipOp bounds an unknown op name before it is logged.
func clipOp(op string) string { return clipField(op, 32) }

// clipField bounds a field from the topic before it is logged.
func clipField(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
