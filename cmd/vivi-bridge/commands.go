package main

import (
	"context"
	"encoding/json"
	"fmt"

	"go.uber.org/zap"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/session"
)

// An operator's transfer or hang-up may land on any pod; the pod that holds
// the call's media stream is the only one that acts on it (it owns the
// call). The API pod checks the request against the session and publishes a
// command on the owning pod's topic; each pod listens on its own.

// podCommand is the message published to the owning pod.
type podCommand struct {
	Op          string `json:"op"` // transfer | hangup
	CallSID     string `json:"callSid"`
	Destination string `json:"destination,omitempty"`
}

func podTopic(podID string) string { return "pod:" + podID }

// callOwner is the bridge side of commands: it acts on a call it holds.
type callOwner interface {
	TransferCall(callSID, destination string) bool
	HangupCall(callSID string) bool
}

// commander implements channel.CallCommander over the store's pub/sub.
type commander struct {
	st storeAPI
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
	return c.publish(ctx, s.PodID, podCommand{Op: "transfer", CallSID: callSID, Destination: destination})
}

func (c commander) HangupCall(ctx context.Context, callSID string) error {
	s, err := c.liveSession(ctx, callSID)
	if err != nil {
		return err
	}
	return c.publish(ctx, s.PodID, podCommand{Op: "hangup", CallSID: callSID})
}

func (c commander) publish(ctx context.Context, podID string, cmd podCommand) error {
	b, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	if err := c.st.Publish(ctx, podTopic(podID), b); err != nil {
		return fmt.Errorf("publish %s to pod %s: %w", cmd.Op, podID, err)
	}
	return nil
}

// listenCommands delivers this pod's commands to the calls it owns until ctx
// ends. It returns once subscribed, so no command published after it
// returns is missed.
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
				var cmd podCommand
				if err := json.Unmarshal(b, &cmd); err != nil {
					log.Warn("pod command ignored: malformed", zap.Error(err))
					continue
				}
				var found bool
				switch cmd.Op {
				case "transfer":
					found = owner.TransferCall(cmd.CallSID, cmd.Destination)
				case "hangup":
					found = owner.HangupCall(cmd.CallSID)
				default:
					log.Warn("pod command ignored: unknown op", zap.String("op", cmd.Op))
					continue
				}
				log.Info("operator command", zap.String("call_sid", cmd.CallSID), zap.String("op", cmd.Op),
					zap.String("destination", cmd.Destination), zap.Bool("delivered", found))
			}
		}
	}()
	return nil
}
