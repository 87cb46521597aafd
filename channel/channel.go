// Package channel owns agents and channels: their types and validation, the
// rule that matches a call to a channel by (source IP, extension), DNS
// provisioning of origin IPs, the YAML apply format and the admin API.
package channel

import (
	"errors"
	"fmt"
	"strings"
)

// Protocol is the SIP transport of a channel's origin (the customer's PBX).
type Protocol string

// Transports accepted for a channel's origin.
const (
	TLS Protocol = "TLS"
	TCP Protocol = "TCP"
	UDP Protocol = "UDP"
)

// DefaultPort returns the default SIP port for the protocol: 5061 for TLS, else 5060.
func (p Protocol) DefaultPort() int {
	if p == TLS {
		return 5061
	}
	return 5060
}

// Destination is a place an agent may transfer a caller to: an extension on
// the customer's PBX, chosen by name, never by number, by the model.
type Destination struct {
	Name    string `json:"name" yaml:"name"`
	Number  string `json:"number" yaml:"number"`
	Trigger string `json:"trigger,omitempty" yaml:"trigger,omitempty"`
}

// TurnDetection tunes the model's server VAD. Zero fields keep the model's default.
type TurnDetection struct {
	Threshold       float64 `json:"threshold,omitempty" yaml:"threshold,omitempty"`
	SilenceMs       int     `json:"silenceMs,omitempty" yaml:"silenceMs,omitempty"`
	PrefixPaddingMs int     `json:"prefixPaddingMs,omitempty" yaml:"prefixPaddingMs,omitempty"`
}

// Agent is the AI voice agent a channel's calls are connected to.
type Agent struct {
	ID                   string            `json:"id" yaml:"id"`
	Name                 string            `json:"name" yaml:"name"`
	Instructions         string            `json:"instructions,omitempty" yaml:"instructions,omitempty"`
	Greeting             string            `json:"greeting,omitempty" yaml:"greeting,omitempty"`
	Voice                string            `json:"voice,omitempty" yaml:"voice,omitempty"`
	Model                string            `json:"model,omitempty" yaml:"model,omitempty"`
	Realtime             bool              `json:"realtime" yaml:"realtime"`
	TransferDestinations []Destination     `json:"transferDestinations,omitempty" yaml:"transferDestinations,omitempty"`
	DTMF                 map[string]string `json:"dtmf,omitempty" yaml:"dtmf,omitempty"`
	FallbackDestination  string            `json:"fallbackDestination,omitempty" yaml:"fallbackDestination,omitempty"`
	TurnDetection        *TurnDetection    `json:"turnDetection,omitempty" yaml:"turnDetection,omitempty"`
	// Analysis configures the post-call analysis (nil: on, with no fields
	// of the agent's own).
	Analysis *AgentAnalysis `json:"analysis,omitempty" yaml:"analysis,omitempty"`
}

// DestinationByName returns the agent's transfer destination called name.
func (a *Agent) DestinationByName(name string) (Destination, bool) {
	for _, d := range a.TransferDestinations {
		if d.Name == name {
			return d, true
		}
	}
	return Destination{}, false
}

// DestinationInfo tells an operator where the PBX must send calls for a channel.
type DestinationInfo struct {
	Host     string   `json:"host" yaml:"host"`
	Port     int      `json:"port" yaml:"port"`
	Protocol Protocol `json:"protocol" yaml:"protocol"`
	URIs     []string `json:"uris" yaml:"uris"`
}

// Channel is one customer PBX trunk: the origin it calls from, the extensions
// it may dial, and the agent that answers them.
type Channel struct {
	ID             string           `json:"id" yaml:"id"`
	Name           string           `json:"name" yaml:"name"`
	OriginHost     string           `json:"originHost" yaml:"originHost"`
	OriginPort     int              `json:"originPort,omitempty" yaml:"originPort,omitempty"`
	OriginProtocol Protocol         `json:"originProtocol,omitempty" yaml:"originProtocol,omitempty"`
	Extensions     []string         `json:"extensions" yaml:"extensions"`
	OriginIPs      []string         `json:"originIps,omitempty" yaml:"originIps,omitempty"`
	AgentID        string           `json:"agentId,omitempty" yaml:"agentId,omitempty"`
	EventsURL      string           `json:"eventsUrl,omitempty" yaml:"eventsUrl,omitempty"`
	EventsSecret   string           `json:"eventsSecret,omitempty" yaml:"-"`
	Destination    *DestinationInfo `json:"destination,omitempty" yaml:"-"`
}

// HasExtension reports whether the channel lists ext.
func (c *Channel) HasExtension(ext string) bool {
	for _, e := range c.Extensions {
		if e == ext {
			return true
		}
	}
	return false
}

// Reasons a call is refused, logged and recorded with the reject.
const (
	ReasonUnknownSourceIP  = "unknown_source_ip"
	ReasonUnknownExtension = "unknown_extension"
	ReasonNoAgent          = "no_agent"
	ReasonAgentNotRealtime = "agent_not_realtime"
)

// Errors of lookups and matching. The Reject errors carry the reason code.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("channel conflict")
	ErrExists   = errors.New("already exists")
	// ErrStale: the record changed between the read and the write of a
	// check-and-set (SaveChannelIf, SaveAgentIf); nothing was written.
	ErrStale = errors.New("changed by another request")
	// ErrPreconditionFailed: an If-Match did not name the current version.
	ErrPreconditionFailed = errors.New("precondition failed: the record has changed")

	ErrUnknownSourceIP  = &RejectError{Reason: ReasonUnknownSourceIP}
	ErrUnknownExtension = &RejectError{Reason: ReasonUnknownExtension}
	ErrNoAgent          = &RejectError{Reason: ReasonNoAgent}
	ErrAgentNotRealtime = &RejectError{Reason: ReasonAgentNotRealtime}
)

// RejectError is why a call matched no channel; Reason is the logged code.
type RejectError struct{ Reason string }

func (e *RejectError) Error() string { return "call rejected: " + e.Reason }

// RejectReason returns the reason code logged with the refusal.
func (e *RejectError) RejectReason() string { return e.Reason }

// ConflictError is ErrConflict with the pair that is already routed:
// ChannelID is the other channel that authorizes IP and lists Extension.
// errors.Is(err, ErrConflict) holds for it.
type ConflictError struct {
	ChannelID string
	IP        string
	Extension string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("channel conflict: origin IP %s with extension %s is already routed to channel %s",
		e.IP, e.Extension, e.ChannelID)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// InUseError refuses deleting an agent that channels still use.
type InUseError struct {
	ChannelIDs []string
}

func (e *InUseError) Error() string {
	return "agent is used by channels " + strings.Join(e.ChannelIDs, ", ")
}

// InUseChannels returns the ids of the channels that use the agent.
func (e *InUseError) InUseChannels() []string { return e.ChannelIDs }
