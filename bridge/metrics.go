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
	}
	for _, r := range []string{ReasonCallerHangup, ReasonTwilioDisconnected, ReasonModelDropped, ReasonAgentHangup, ReasonOperatorHangup, ReasonShutdown, labelTransferred} {
		m.ended.WithLabelValues(r)
	}
	for _, r := range []string{rejectSignature, rejectDraining, rejectNoStart, rejectToken, rejectReused, rejectSession, rejectAgent} {
		m.rejected.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.active, m.ended, m.rejected, frames, m.bargeIns, m.redials} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("bridge: register metrics (one Server per registry): %w", err)
		}
	}
	return m, nil
}
