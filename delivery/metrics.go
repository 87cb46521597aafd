package delivery

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of a Deliverer.
type metrics struct {
	delivered *prometheus.CounterVec
	failed    prometheus.Counter
	parked    prometheus.Counter
	held      prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "vivi", Name: "events_delivered_total",
			Help: "Call events posted to their channel's eventsUrl and answered 2xx, by type."}, []string{"type"}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "vivi", Name: "events_attempts_failed_total",
			Help: "Event delivery attempts that failed (non-2xx or a network error) and were retried or parked."}),
		parked: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "vivi", Name: "events_parked_total",
			Help: "Outbox entries given up on and parked (retry horizon, channel gone, target refused, unknown job)."}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "vivi", Name: "outbox_held",
			Help: "Outbox entries this pod holds in memory (read or claimed, not yet acknowledged)."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.delivered, m.failed, m.parked, m.held} {
			if err := reg.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if !errors.As(err, &are) {
					panic(err) // a programming error: a clashing metric name
				}
			}
		}
	}
	return m
}
