package bridge

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the bridge's Prometheus collectors. The labelled children the
// audio path touches are resolved once, so counting a frame is one atomic add.
type metrics struct {
	active    prometheus.Gauge
	ended     *prometheus.CounterVec // streams, not calls: vivi_calls_ended_total counts calls
	rejected  *prometheus.CounterVec
	framesIn  prometheus.Counter // Twilio -> model
	framesOut prometheus.Counter // model -> Twilio
	bargeIns  prometheus.Counter
	redials   prometheus.Counter
	// rotations and modelUnavailable: model sessions replaced before
	// their expiry, and calls that gave up on the model (call_fault.go).
	rotations, modelUnavailable prometheus.Counter
	// toolLimited counts tool calls answered without asking the model for
	// another response, by the limit reached ("turn" or "call").
	toolLimited *prometheus.CounterVec
	// agentDropped counts agent audio bytes dropped because the call's
	// hold (pacing.go) was full.
	agentDropped prometheus.Counter

	// The model connection pool (pool.go).
	poolSize         prometheus.Gauge
	poolTakes        *prometheus.CounterVec // result: hit, miss
	poolDiscarded    *prometheus.CounterVec // reason
	poolDialFailures prometheus.Counter
}

// labelTransferred counts, in streams_ended_total, streams that Twilio
// stopped to run a transfer's REFER: the call goes on (the refer outcome
// ends it, or resumes it on a new stream), so it is not a call ending.
const labelTransferred = "transferred"

// Reasons a stream is refused before it becomes a call (metrics label).
const (
	rejectSignature = "bad_signature"
	rejectDraining  = "draining"
	rejectNoStart   = "no_start"
	rejectToken     = "bad_token"
	rejectReused    = "token_reused"
	rejectSession   = "session_ended"
	rejectAgent     = "agent_unavailable"
	// rejectStreamLive: the call streams already (on this pod or another).
	rejectStreamLive = "stream_live"
	// The token's agent was deleted or is not realtime (the end reasons).
	rejectAgentNotFound    = ReasonAgentNotFound
	rejectAgentNotRealtime = ReasonAgentNotRealtime
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	frames := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "vivi", Subsystem: "bridge", Name: "frames_relayed_total",
		Help: "Audio frames relayed, by direction.",
	}, []string{"direction"})
	m := &metrics{
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "vivi", Subsystem: "bridge", Name: "active_calls",
			Help: "Media streams open on this pod.",
		}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "vivi", Subsystem: "bridge", Name: "streams_ended_total",
			Help: "Media streams ended on this pod, by reason (transferred: stopped by Twilio for a transfer). Calls ended are vivi_calls_ended_total.",
		}, []string{"reason"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "vivi", Subsystem: "bridge", Name: "streams_rejected_total",
			Help: "Media streams refused before the call started, by reason.",
		}, []string{"reason"}),
		framesIn:  frames.WithLabelValues("twilio_to_model"),
		framesOut: frames.WithLabelValues("model_to_twilio"),
		bargeIns: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "vivi", Subsystem: "bridge", Name: "barge_ins_total",
			Help: "Times the caller interrupted the agent's audio.",
		}),
		redials: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "vivi", Subsystem: "bridge", Name: "model_redials_total",
			Help: "Realtime model connections re-dialled mid-call.",
		}),
		rotations: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "vivi", Subsystem: "bridge", Name: "model_rotations_total",
			Help: "Model sessions replaced before their expiry (make-before-break).",
		}),
		modelUnavailable: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "vivi", Subsystem: "bridge", Name: "model_unavailable_total",
			Help: "Calls that gave up on the model (no session in time, or the drop budget spent): a fallback transfer or the apology.",
		}),
		toolLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "vivi", Subsystem: "bridge", Name: "tool_rounds_limited_total",
			Help: "Times a call's tool-call round limit stopped the bridge from asking the model for another response, by scope (turn, call).",
		}, []string{"scope"}),
		agentDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "vivi", Subsystem: "bridge", Name: "agent_audio_dropped_bytes_total",
			Help: "Model audio bytes dropped because a call held the most audio it may ahead of Twilio's playout.",
		}),
		poolSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "vivi", Subsystem: "bridge", Name: "model_pool_idle",
			Help: "Pooled realtime model connections ready for a call.",
		}),
		poolTakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "vivi", Subsystem: "bridge", Name: "model_pool_takes_total",
			Help: "Calls that looked for a pooled model connection, by result (hit, miss).",
		}, []string{"result"}),
		poolDiscarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "vivi", Subsystem: "bridge", Name: "model_pool_discarded_total",
			Help: "Pooled model connections closed unused, by reason.",
		}, []string{"reason"}),
		poolDialFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "vivi", Subsystem: "bridge", Name: "model_pool_dial_failures_total",
			Help: "Failed dials of the model connection pool (retried with backoff).",
		}),
	}
	for _, s := range []string{"turn", "call"} {
		m.toolLimited.WithLabelValues(s)
	}
	for _, r := range []string{"hit", "miss"} {
		m.poolTakes.WithLabelValues(r)
	}
	for _, r := range []string{discardExpired, discardClosed, discardEvent, discardShutdown} {
		m.poolDiscarded.WithLabelValues(r)
	}
	for _, r := range []string{ReasonCallerHangup, ReasonTwilioDisconnected, ReasonModelDropped, ReasonModelUnavailable, ReasonAgentHangup, ReasonOperatorHangup, ReasonShutdown, labelTransferred} {
		m.ended.WithLabelValues(r)
	}
	for _, r := range []string{rejectSignature, rejectDraining, rejectNoStart, rejectToken, rejectReused, rejectSession, rejectAgent,
		rejectStreamLive, rejectAgentNotFound, rejectAgentNotRealtime} {
		m.rejected.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.active, m.ended, m.rejected, frames, m.bargeIns, m.redials, m.rotations, m.modelUnavailable, m.toolLimited, m.agentDropped,
		m.poolSize, m.poolTakes, m.poolDiscarded, m.poolDialFailures} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("bridge: register metrics (one Server per registry): %w", err)
		}
	}
	return m, nil
}
