package transfer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"time"

	"go.uber.org/zap"

	"github.com/vivi/bridge/internal/redact"
	"github.com/vivi/bridge/session"
)

// Via says who asked for a transfer.
const (
	ViaTool     = "tool"
	ViaDTMF     = "dtmf"
	ViaOperator = "operator"
)

// Errors of Start.
var (
	// ErrUnknownDestination: the name is not one of the agent's destinations.
	// Only configured destinations can ever be reached.
	ErrUnknownDestination = errors.New("transfer: unknown destination")
	// ErrNotLive: the call is not streaming, so there is nothing to transfer.
	ErrNotLive = errors.New("transfer: call is not live")
	// ErrREST: Twilio did not accept the call update; the call goes on.
	ErrREST = errors.New("transfer: could not start the transfer")
)

// Target is a destination resolved for one call: the PBX extension and the
// channel's origin the REFER goes back to.
type Target struct {
	Number string
	Origin Origin
}

// Targets resolves a destination name of a call's agent.
// It returns ErrUnknownDestination when the agent has no such destination.
type Targets interface {
	Target(ctx context.Context, channelID, agentID, destination string) (Target, error)
}

// Sessions reads and writes call sessions.
type Sessions interface {
	UpdateSession(ctx context.Context, callSID string, fn func(*session.Session) error) (*session.Session, error)
}

// CallUpdater replaces the TwiML of a live call (Twilio REST UpdateCall).
type CallUpdater interface {
	UpdateTwiML(ctx context.Context, callSID, twiml string) error
}

// Config configures a Service.
type Config struct {
	// PublicURL: the <Refer action> is PublicURL + /twilio/refer-status,
	// with the attempt's id as query parameter session.TransferParam.
	PublicURL string
	Sessions  Sessions
	Targets   Targets
	Calls     CallUpdater
	Now       func() time.Time
	Logger    *zap.Logger
}

// Service starts transfers. It is called by the owner of the call (the call
// loop of the pod that holds the media stream), never concurrently for one call.
type Service struct {
	cfg Config
}

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &Service{cfg: cfg}
}

// Start hands the call to destination: it records the attempt (session ->
// transferring) and updates the live call with the Refer TwiML. When Twilio
// refuses the update, the attempt is recorded with the error, the session goes
// back to streaming and an error wrapping ErrREST is returned: the caller stays
// with the agent. A refused destination is recorded on the timeline too.
func (s *Service) Start(ctx context.Context, callSID, destination, via string) (session.Transfer, error) {
	return s.StartFenced(ctx, 0, callSID, destination, via)
}

// StartFenced is Start by the owner of the call holding fencing token fence
// (session.Session.Fence): when the session carries another token (a newer
// stream owns the call) nothing is recorded or sent and the error wraps
// session.ErrFenced. A zero fence is not checked (operator requests for a
// call whose owner is gone).
func (s *Service) StartFenced(ctx context.Context, fence int64, callSID, destination, via string) (session.Transfer, error) {
	log := s.cfg.Logger.With(zap.String("call_sid", callSID), zap.String("destination", destination), zap.String("via", via))
	id, err := attemptID()
	if err != nil {
		log.Error("transfer refused", zap.Error(err))
		return session.Transfer{}, fmt.Errorf("transfer %s to %q: %w", callSID, destination, err)
	}
	var attempt session.Transfer
	var refer string
	_, err = s.cfg.Sessions.UpdateSession(ctx, callSID, func(ss *session.Session) error {
		now := s.cfg.Now()
		if err := ss.CheckFence(fence); err != nil {
			return err
		}
		if ss.State != session.Streaming {
			return fmt.Errorf("%w: state %s", ErrNotLive, ss.State)
		}
		t, err := s.cfg.Targets.Target(ctx, ss.ChannelID, ss.AgentID, destination)
		if err != nil {
			return err
		}
		uri, err := ReferURI(t.Number, t.Origin)
		if err != nil {
			return err
		}
		if refer, err = ReferTwiML(s.referAction(id), uri); err != nil {
			return err
		}
		if err := ss.Transition(session.Transferring, now); err != nil {
			return err
		}
		attempt = session.Transfer{ID: id, Destination: destination, URI: uri, Via: via, At: now}
		ss.AddTransfer(attempt)
		ss.Record(now, session.EventTransferStarted, destination+" "+uri)
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrUnknownDestination) {
			s.refused(ctx, callSID, destination, via)
		}
		log.Warn("transfer refused", zap.Error(err))
		return session.Transfer{}, fmt.Errorf("transfer %s to %q: %w", callSID, destination, err)
	}
	log.Info("transfer started", zap.String("refer_to", attempt.URI))
	if rerr := s.cfg.Calls.UpdateTwiML(ctx, callSID, refer); rerr != nil {
		// Remote text: scrubbed before it is logged or stored (any
		// CallUpdater, not only the Twilio client, which scrubs too).
		msg := redact.Error(rerr)
		attempt.Error = msg
		log.Error("transfer failed to start", zap.String("error", msg))
		_, uerr := s.cfg.Sessions.UpdateSession(context.WithoutCancel(ctx), callSID, func(ss *session.Session) error {
			now := s.cfg.Now()
			if t := ss.LastTransfer(); t != nil {
				t.Error = msg
				c := now
				t.CompletedAt = &c
			}
			ss.Record(now, session.EventTransferFailed, "rest: "+msg)
			if ss.State == session.Transferring {
				return ss.Transition(session.Streaming, now)
			}
			return nil
		})
		if uerr != nil {
			log.Error("record failed transfer", zap.Error(uerr))
		}
		return attempt, fmt.Errorf("%w: %s", ErrREST, msg)
	}
	return attempt, nil
}

// referAction is the <Refer action> URL of attempt id. The id makes the
// outcome callback of one attempt distinguishable from any other's (twiml
// answers a refer-status about another attempt than the one in flight
// without touching the call).
func (s *Service) referAction(id string) string {
	return s.cfg.PublicURL + "/twilio/refer-status?" + url.Values{session.TransferParam: {id}}.Encode()
}

// attemptID draws a random transfer attempt id (hex, 24 characters).
func attemptID() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("transfer: random attempt id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// refused records a transfer to a destination that is not configured: a
// prompt-injected caller must leave a trace.
func (s *Service) refused(ctx context.Context, callSID, destination, via string) {
	_, err := s.cfg.Sessions.UpdateSession(ctx, callSID, func(ss *session.Session) error {
		ss.Record(s.cfg.Now(), session.EventTransferFailed, fmt.Sprintf("refused unknown destination %q (via %s)", destination, via))
		return nil
	})
	if err != nil {
		s.cfg.Logger.Error("record refused transfer", zap.String("call_sid", callSID), zap.Error(err))
	}
}
