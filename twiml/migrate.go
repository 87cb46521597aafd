package twiml

import (
	"context"
	"errors"
	"fmt"

	"github.com/vivi/bridge/session"
)

// ErrMigrateEnded: the call ended before it could be moved (retrying
// cannot help).
var ErrMigrateEnded = errors.New("twiml: migrate: the call is not live")

// MigrateConnect prepares the move of the call's live stream streamSID off
// pod (drain by migration): in one atomic update it checks that the stream
// still owns the call (fence; 0 is not checked, else an error wrapping
// session.ErrFenced), makes a fresh connect generation the call's current
// one (a new stream token), marks streamSID as replaced (so its
// stream-stopped callback does not end the call) and records the move. It
// returns the <Connect><Stream> document of that generation, the same one
// the voice webhook and connect-ended answer, for the caller to send with a
// REST call update. A retry for the same stream returns the same document.
func (h *Handler) MigrateConnect(ctx context.Context, callSID, pod, streamSID string, fence int64) (string, error) {
	now := h.now()
	s, err := h.sessions.UpdateSession(ctx, callSID, func(s *session.Session) error {
		if err := s.CheckFence(fence); err != nil {
			return err
		}
		if s.State != session.Streaming {
			return fmt.Errorf("%w: state %s", ErrMigrateEnded, s.State)
		}
		if m := s.Migration; m != nil && m.FromStream == streamSID && s.Connect != nil {
			return nil // a retry: the same generation
		}
		if s.StreamSID != "" && s.StreamSID != streamSID {
			return fmt.Errorf("%w: stream %s is not the call's (%s)", session.ErrFenced, streamSID, s.StreamSID)
		}
		if err := h.newConnect(s, now); err != nil {
			return err
		}
		s.Migration = &session.Migration{FromPod: pod, FromStream: streamSID, At: now}
		s.StreamSID = "" // no stream is live until the new one starts
		s.Record(now, session.EventMigrating, "stream "+streamSID+" from "+pod)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("twiml: migrate call %s: %w", callSID, err)
	}
	return h.connectStream(s)
}
