// Package bridge is the Twilio Media Streams websocket server and the
// per-call relay between a Twilio call and the OpenAI realtime model.
//
// One call is owned by one loop goroutine (call.run): it holds the call's
// state, is the only writer of the session record (through a per-call
// session writer) and the only one that starts a transfer or a hang-up. Each
// websocket has exactly one reader and one writer goroutine; they talk to the
// loop over bounded channels. The first fatal error ends the loop, which
// cancels the call's context and closes both sockets.
//
// The answer path: Twilio sends start right after connected (within
// milliseconds) and the model to use is known only from the token's agent,
// so the bridge reads start, verifies the token, then claims it and loads
// the agent in parallel, moves the session to streaming (refusing a second
// live stream of the call), and takes a connection from the pod's pool of
// pre-opened model connections (dialling only on a miss or for an agent
// with a model of its own). Nothing is dialled before the token is verified
// and claimed, so a replayed handshake costs no model session. None of it
// runs on the loop: caller audio that arrives meanwhile is held (bounded)
// and sent, in order, once the model has accepted the session configuration.
//
// The package imports only session, usage and outside libraries; the small
// interfaces below are implemented elsewhere (store, channel, twiml,
// transfer) and wired together by cmd.
package bridge

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/vivi/bridge/session"
)

// Sessions loads and updates call sessions (the store implements it).
type Sessions interface {
	Session(ctx context.Context, callSID string) (*session.Session, error)
	UpdateSession(ctx context.Context, callSID string, fn func(*session.Session) error) (*session.Session, error)
}

// Tokens verifies stream tokens (session.Tokens implements it).
type Tokens interface {
	Verify(token, callSID string, now time.Time) (session.Claims, error)
}

// TokenClaimer records the use of a stream token so that it is accepted
// once: ClaimToken returns true the first time for an id, false after.
type TokenClaimer interface {
	ClaimToken(ctx context.Context, id string, ttl time.Duration) (bool, error)
}

// HandshakeValidator checks the X-Twilio-Signature of the websocket
// handshake (the twiml package's validator implements it).
type HandshakeValidator interface {
	ValidateStream(r *http.Request) bool
}

// Agents returns the agent that answers a call of a channel.
type Agents interface {
	CallAgent(ctx context.Context, channelID, agentID string) (Agent, error)
}

// CallControl ends live calls (Twilio REST UpdateCall Status=completed) and
// replaces the TwiML they run (UpdateCall Twiml=; the apology when the
// model cannot be reached).
type CallControl interface {
	Hangup(ctx context.Context, callSID string) error
	UpdateTwiML(ctx context.Context, callSID, twiml string) error
}

// Transferer hands a live call back to the customer's PBX.
type Transferer interface {
	Transfer(ctx context.Context, req TransferRequest) error
}

// Migrator moves a live call's media stream off this pod (drain by
// migration): it makes a fresh <Connect><Stream> the call's current connect
// generation, unless the session's fencing token is not req.Fence (an error
// wrapping session.ErrFenced), and updates the live call with it through
// Twilio's REST API, which stops this stream and opens the new one on a
// pod the load balancer picks. Retrying a request that failed is safe.
//
// CanMigrate reports whether another pod is ready to take a moved call; it
// is asked on the call loop (an atomic read, no I/O). While it is false a
// draining pod keeps its calls, so that a call is not sent to a load
// balancer with no ready pod behind it (the last pod of a deployment).
//
// An error wrapping ErrCannotMigrate is final (the call ended, Twilio
// refused the update as a client error): the move is not retried and the
// call stays on this pod until it ends or the drain does.
type Migrator interface {
	Migrate(ctx context.Context, req MigrateRequest) error
	CanMigrate() bool
}

// ErrCannotMigrate marks a Migrator error that retrying cannot fix.
var ErrCannotMigrate = errors.New("bridge: the call cannot be moved")

// MigrateRequest names the stream to move and its owner.
type MigrateRequest struct {
	CallSID   string
	StreamSID string
	PodID     string
	Fence     int64 // the stream's fencing token; 0: not checked
}

// Agent is what a call needs to know of its agent.
type Agent struct {
	ID           string
	Instructions string
	// Greeting is what the agent says first; empty lets the model greet
	// from its instructions.
	Greeting string
	Voice    string
	// Model overrides the server's default realtime model.
	Model         string
	TurnDetection TurnDetection
	Destinations  []Destination
	// FallbackDestination names the destination a call is transferred to
	// when the model cannot be reached (ViaFallback); "" for none (the
	// caller hears an apology and the call ends).
	FallbackDestination string
	// DTMF binds a digit ("0"-"9", "*", "#") to a destination name.
	DTMF map[string]string
}

// TurnDetection tunes the model's server VAD; zero fields keep its defaults.
type TurnDetection struct {
	Threshold       float64
	SilenceMs       int
	PrefixPaddingMs int
}

// Destination is a transfer target the model chooses by name.
type Destination struct {
	Name    string
	Number  string
	Trigger string
}

// Destination returns the agent's destination called name.
func (a *Agent) Destination(name string) (Destination, bool) {
	for _, d := range a.Destinations {
		if d.Name == name {
			return d, true
		}
	}
	return Destination{}, false
}

// How a transfer was asked for (session.Transfer.Via).
const (
	ViaTool     = "tool"
	ViaDTMF     = "dtmf"
	ViaOperator = "operator"
	ViaFallback = "fallback" // the model could not be reached
)

// TransferRequest asks to transfer a live call to one of its agent's
// destinations.
type TransferRequest struct {
	CallSID     string
	ChannelID   string
	AgentID     string
	Destination Destination
	Via         string // ViaTool, ViaDTMF, ViaOperator or ViaFallback
	// Fence is the stream's fencing token: the transfer starts only if the
	// session still carries it (else an error wrapping session.ErrFenced).
	// 0 is not checked.
	Fence int64
}

// End reasons recorded on the session (session.Session.EndReason).
const (
	ReasonCallerHangup       = "caller_hangup"
	ReasonTwilioDisconnected = "twilio_disconnected"
	ReasonModelDropped       = "model_dropped" // no longer set: see ReasonModelUnavailable
	ReasonAgentHangup        = "agent_hangup"
	ReasonOperatorHangup     = "operator_hangup"
	ReasonShutdown           = "shutdown"
	// ReasonMigrated ends a stream that moved to another pod; the call
	// goes on there and the session is not ended.
	ReasonMigrated = "migrated"
)
