package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/vivi/bridge/store"
)

// Defaults of the store watch (appDeps may shorten them in tests).
const (
	defaultStoreCheck   = time.Second      // how often the store is pinged
	defaultConfigReload = 30 * time.Second // the periodic reload of the config copy
)

// markerStore is how a pod tells a store that lost its data from one that
// did not (store.Redis has it; store.Memory never loses its data).
type markerStore interface {
	SetMarker(ctx context.Context, pod, value string) error
	CheckMarker(ctx context.Context, pod, value string) (bool, error)
}

// storeWatch follows the shared store's health for this pod: up or degraded
// (and since when), whether it came back empty, and the in-process config
// copy. It logs each transition once, exports it as metrics and reports it
// in /healthz. A degraded store does not make the pod unready: calls are
// routed from the copy and session writes are buffered meanwhile.
type storeWatch struct {
	st         storeAPI
	markers    markerStore // nil: the store cannot lose its data
	copy       *store.ConfigCopy
	log        *zap.Logger
	pod        string
	marker     string // this process's marker value
	configFile string
	reapply    func(ctx context.Context) error // applies CONFIG_FILE; nil without one
	rewrite    func() int                      // the bridge's RewriteSessions; set once wired
	retry      func() int                      // the bridge's RetrySessionWrites; set once wired
	checkEvery time.Duration
	now        func() time.Time
	reloadNow  chan struct{}
	metrics    watchMetrics

	lossMu sync.Mutex // one storeLost at a time

	mu        sync.Mutex
	up        bool
	since     time.Time // of the current up or degraded state
	lastErr   string
	lost      bool // the store lost the configuration and nothing re-applied it
	lostAt    time.Time
	reloadErr string
	markerSet bool
	resets    int
}

type watchMetrics struct {
	up         prometheus.Gauge
	configLost prometheus.Gauge
	dataLost   prometheus.Counter
}

func newStoreWatch(st storeAPI, cp *store.ConfigCopy, log *zap.Logger, pod, configFile string, checkEvery time.Duration, reg prometheus.Registerer) *storeWatch {
	if checkEvery <= 0 {
		checkEvery = defaultStoreCheck
	}
	w := &storeWatch{
		st: st, copy: cp, log: log, pod: pod, configFile: configFile, checkEvery: checkEvery,
		now: time.Now, reloadNow: make(chan struct{}, 1), up: true, since: time.Now(),
		rewrite: func() int { return 0 }, retry: func() int { return 0 },
		metrics: watchMetrics{
			up: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "vivi", Name: "store_up",
				Help: "1 while the shared store answers this pod, 0 while it is degraded (calls are then routed from the in-process copy and session writes buffered)."}),
			configLost: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "vivi", Name: "store_config_lost",
				Help: "1 while the store has lost the configuration (it came back empty) and nothing re-applied it; calls are routed from the in-process copy."}),
			dataLost: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "vivi", Name: "store_data_lost_total",
				Help: "Times this pod found the store back without its data (restart without persistence, failover to a cold replica)."}),
		},
	}
	w.metrics.up.Set(1)
	var b [8]byte
	_, _ = rand.Read(b[:])
	w.marker = hex.EncodeToString(b[:])
	reg.MustRegister(w.metrics.up, w.metrics.configLost, w.metrics.dataLost)
	return w
}

// start writes the pod's marker and loads the copy, both best effort: a
// store down at this moment is retried by run.
func (w *storeWatch) start(ctx context.Context) {
	w.check(ctx)
	w.reload(ctx)
}

// run checks the store every checkEvery until ctx ends.
func (w *storeWatch) run(ctx context.Context) {
	t := time.NewTicker(w.checkEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.check(ctx)
		}
	}
}

// check pings the store and, once it answers, checks the pod's marker.
func (w *storeWatch) check(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, w.checkEvery)
	defer cancel()
	err := w.st.Ping(cctx)
	if err == nil && w.markers != nil {
		w.mu.Lock()
		set := w.markerSet
		w.mu.Unlock()
		if !set {
			if err = w.markers.SetMarker(cctx, w.pod, w.marker); err == nil {
				w.mu.Lock()
				w.markerSet = true
				w.mu.Unlock()
			}
		} else {
			var intact bool
			intact, err = w.markers.CheckMarker(cctx, w.pod, w.marker)
			if err == nil && !intact {
				w.setUp()
				w.storeLost(ctx)
				return
			}
		}
	}
	if err != nil {
		w.failed(err)
		return
	}
	w.setUp()
}

// markerIntact reports whether the store still holds the pod's marker (true
// when it cannot lose data or no marker was written yet).
func (w *storeWatch) markerIntact(ctx context.Context) (bool, error) {
	w.mu.Lock()
	set := w.markerSet
	w.mu.Unlock()
	if w.markers == nil || !set {
		return true, nil
	}
	return w.markers.CheckMarker(ctx, w.pod, w.marker)
}

// failed records a store error (from the check or from a look-up that fell
// back to the copy); the first one after the store was up logs the change.
func (w *storeWatch) failed(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lastErr = err.Error()
	if !w.up {
		return
	}
	w.up, w.since = false, w.now()
	w.metrics.up.Set(0)
	w.log.Warn("store degraded: routing from the in-process config copy and buffering session writes until it answers again",
		zap.Error(err))
}

func (w *storeWatch) setUp() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.up {
		return
	}
	now := w.now()
	w.log.Info("store recovered", zap.Float64("degraded_for_s", now.Sub(w.since).Seconds()))
	w.up, w.since, w.lastErr = true, now, ""
	w.metrics.up.Set(1)
	w.kickReload()
	// The calls' session writers that failed meanwhile wait out a backoff
	// of up to seconds: have them write now. Each call's loop takes the
	// request; never block the watch on them.
	retry := w.retry
	go retry()
}

// kickReload asks runConfigCopy to subscribe again and reload, without
// blocking.
func (w *storeWatch) kickReload() {
	select {
	case w.reloadNow <- struct{}{}:
	default:
	}
}

func (w *storeWatch) storeUp() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.up
}

func (w *storeWatch) configLost() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lost
}

// storeLost handles a store back without its data: the live sessions of
// this pod are written back, CONFIG_FILE is re-applied when set, and
// otherwise the loss of the configuration is reported (error log, metric,
// /healthz) while calls keep being routed from the copy.
func (w *storeWatch) storeLost(ctx context.Context) {
	w.lossMu.Lock()
	defer w.lossMu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, w.checkEvery+time.Second)
	defer cancel()
	if intact, err := w.markerIntact(cctx); err != nil || intact {
		return // handled meanwhile, or the store is failing again
	}
	agents, channels, _ := w.copy.Counts()
	w.log.Error("store came back without its data (a restart without persistence or a failover to a cold replica): writing back this pod's live sessions",
		zap.Int("copy_agents", agents), zap.Int("copy_channels", channels))
	w.metrics.dataLost.Inc()
	err := w.markers.SetMarker(cctx, w.pod, w.marker)
	w.mu.Lock()
	w.resets++
	w.markerSet = err == nil // else written again at the next check
	w.mu.Unlock()
	w.kickReload()
	go func() { // each live call's loop takes the request; never block the watch on them
		n := w.rewrite()
		w.log.Info("live sessions written back", zap.Int("calls", n))
	}()
	if w.reapply != nil {
		if err := w.reapply(ctx); err != nil {
			w.log.Error("store came back empty and re-applying CONFIG_FILE failed: calls are routed from the in-process copy",
				zap.String("file", w.configFile), zap.Error(err))
			w.setLost()
			return
		}
		w.log.Info("CONFIG_FILE re-applied after the store lost its data", zap.String("file", w.configFile))
		if _, _, _, err := w.copy.Reload(cctx, w.now(), false); err != nil {
			w.log.Warn("config copy reload after re-applying CONFIG_FILE", zap.Error(err))
		}
		return
	}
	if agents+channels > 0 {
		w.log.Error("the store lost the configuration and no CONFIG_FILE is set: calls are routed from this pod's in-process copy until it is applied again (vivi-bridge apply -f, or the admin API)",
			zap.Int("agents", agents), zap.Int("channels", channels))
		w.setLost()
	}
}

func (w *storeWatch) setLost() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.lost {
		w.lost, w.lostAt = true, w.now()
	}
	w.metrics.configLost.Set(1)
}

// healthLines is the /healthz detail, one fact per line.
func (w *storeWatch) healthLines() string {
	agents, channels, loadedAt := w.copy.Counts()
	w.mu.Lock()
	defer w.mu.Unlock()
	var b strings.Builder
	if w.up {
		fmt.Fprintf(&b, "store: ok since %s\n", w.since.UTC().Format(time.RFC3339))
	} else {
		fmt.Fprintf(&b, "store: degraded since %s: %s\n", w.since.UTC().Format(time.RFC3339), w.lastErr)
	}
	if w.configFile != "" {
		fmt.Fprintf(&b, "config source: CONFIG_FILE %s\n", w.configFile)
	} else {
		b.WriteString("config source: store (admin API)\n")
	}
	fmt.Fprintf(&b, "config copy: %d agents, %d channels, last reload %s\n", agents, channels, formatTime(loadedAt))
	if w.reloadErr != "" {
		fmt.Fprintf(&b, "config copy reload failing: %s\n", w.reloadErr)
	}
	if w.lost {
		fmt.Fprintf(&b, "config lost: since %s, the store came back empty; routing from the in-process copy; apply the configuration again\n",
			w.lostAt.UTC().Format(time.RFC3339))
	}
	if w.resets > 0 {
		fmt.Fprintf(&b, "store data lost: %d times\n", w.resets)
	}
	return b.String()
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}
