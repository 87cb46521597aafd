package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/twiliotest"
)

// load is one run: the calls, their pacers, the clock they share with the
// echo model, and the histograms every reader adds to.
type load struct {
	cfg        Config
	epoch      time.Time
	bridgeURL  string
	publicURL  string
	authToken  string
	accountSID string
	client     *http.Client
	dialer     *websocket.Dialer
	tmpl       audioTemplates
	calls      []*caller // by index; fixed before any call starts
	groups     []*group
	callers    sync.WaitGroup
	// changed is poked (see poke) when a call goes live, closes, or has a
	// frame echoed while draining: what the set-up and drain waits watch.
	changed chan struct{}

	sendUntil  atomic.Int64 // when media stops (0: not yet decided)
	drainUntil atomic.Int64 // when stop is sent (0: not yet decided)
	lateFrames atomic.Int64

	roundTrip, toModel, toTwilio, answer histogram
}

// poke tells a waitFor that a call changed; it never blocks.
func (l *load) poke() {
	select {
	case l.changed <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// waitFor checks cond again each time a call changes (poke) until it holds,
// limit passes or ctx ends.
func (l *load) waitFor(ctx context.Context, limit time.Duration, cond func() bool) {
	t := time.NewTimer(limit)
	defer t.Stop()
	for !cond() {
		select {
		case <-l.changed:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// now is the load's clock: monotonic nanoseconds since the run began,
// shared by the callers and the echo model.
func (l *load) now() int64 { return int64(time.Since(l.epoch)) }

// stamp records when the echo model read and answered a caller frame.
func (l *load) stamp(h frameHeader, in, out int64) {
	if int(h.call) >= len(l.calls) {
		return
	}
	s := &l.calls[h.call].ring[h.seq%ringSize]
	if s.seq.Load() == h.seq {
		s.modelIn.Store(in)
		s.modelOut.Store(out)
	}
}

// Run performs one load run and returns its report. Progress lines go to
// progress. The run is bounded: set-up, ramp, hold, drain and stop each
// have a limit, after which it ends by itself.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Report, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	say := func(format string, args ...any) { fmt.Fprintf(progress, "callsim: "+format+"\n", args...) }
	if cfg.Procs > 0 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(cfg.Procs))
	}
	l := &load{cfg: cfg, epoch: time.Now(), tmpl: newAudioTemplates(), changed: make(chan struct{}, 1)}
	// The calls exist before the model starts: its goroutines read them.
	l.calls = make([]*caller, cfg.Calls)
	for i := range l.calls {
		sid := twiliotest.NewStreamSID()
		l.calls[i] = &caller{l: l, idx: i, callSID: twiliotest.NewCallSID(), streamSID: sid, frames: twilioFrames{streamSID: sid}}
	}
	transport := &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}
	defer transport.CloseIdleConnections()
	l.client = &http.Client{Transport: transport, Timeout: setupTimeout}
	l.dialer = &websocket.Dialer{HandshakeTimeout: setupTimeout, ReadBufferSize: 4096, WriteBufferSize: 1024,
		WriteBufferPool: &sync.Pool{}}

	rep := &Report{Command: strings.Join(cfg.Command, " "), Machine: machineInfo(), Calls: cfg.Calls,
		Model: cfg.Model, RampS: cfg.Ramp.Seconds(), HoldS: cfg.Hold.Seconds(), Failures: map[string]int{}}

	// The model and the Twilio REST fake, then the bridge.
	apiKey := defaultAPIKey
	var modelURL string
	switch cfg.Model {
	case ModelEcho:
		m, err := startEchoModel(cfg.ModelListen, apiKey, l)
		if err != nil {
			return nil, err
		}
		defer m.Close()
		modelURL = m.URL()
	case ModelFake:
		m := realtimetest.NewServer(realtimetest.Options{APIKey: apiKey, Echo: true, DiscardAudio: true})
		defer m.Close()
		modelURL = m.URL()
	}
	var t *target
	if cfg.BridgeBin != "" {
		l.accountSID, l.authToken = twiliotest.NewAccountSID(), randomSecret()[:32]
		rest := twiliotest.NewREST(twiliotest.RESTOptions{AccountSID: l.accountSID, AuthToken: l.authToken})
		defer rest.Close()
		ext := cfg.To[strings.Index(cfg.To, ":")+1:]
		ext, _, _ = strings.Cut(ext, "@")
		var err error
		t, err = spawnBridge(ctx, spawnConfig{bin: cfg.BridgeBin, modelURL: modelURL, apiKey: apiKey,
			restURL: rest.URL(), accountSID: l.accountSID, authToken: l.authToken, redisURL: cfg.RedisURL,
			logFile: cfg.BridgeLog, sourceIP: cfg.SourceIP, extension: ext, maxCalls: cfg.MaxCalls,
			pprof: cfg.Profile != "", extraEnv: cfg.BridgeEnv})
		if err != nil {
			return nil, err
		}
		defer t.stop()
		rep.Mode = "spawn"
		say("bridge pid %d on %s; model %s %s", t.pid, t.url, cfg.Model, modelURL)
	} else {
		t = &target{url: cfg.URL, publicURL: cfg.PublicURL, pid: cfg.PID}
		l.accountSID, l.authToken = cfg.AccountSID, cfg.AuthToken
		if l.accountSID == "" {
			l.accountSID = twiliotest.NewAccountSID()
		}
		rep.Mode = "url"
		if modelURL != "" {
			say("model %s at %s: the bridge's OPENAI_REALTIME_URL must be it, OPENAI_API_KEY=%s", cfg.Model, modelURL, apiKey)
		}
	}
	l.bridgeURL, l.publicURL = t.url, t.publicURL
	rep.Bridge.PID = t.pid
	return l.drive(ctx, t, rep, say)
}

// drive runs the calls against t: ramp, set-up wait, hold, drain, stop.
func (l *load) drive(ctx context.Context, t *target, rep *Report, say func(string, ...any)) (*Report, error) {
	cfg := l.cfg
	var base procSample
	if t.pid != 0 {
		var err error
		if base, err = readProc(t.pid); err != nil {
			return nil, err
		}
	}
	rep.Bridge.RSSIdleMiB = mib(base.rss)

	paceCtx, stopPacers := context.WithCancel(context.Background())
	var pacers sync.WaitGroup
	defer func() {
		stopPacers()
		pacers.Wait()
	}()
	perGroup := cfg.Calls/pacerGroups + 1
	for g := range pacerGroups {
		l.groups = append(l.groups, newGroup(l, time.Duration(g)*frameInterval/pacerGroups, perGroup))
	}
	for _, g := range l.groups {
		pacers.Add(1)
		go func() {
			defer pacers.Done()
			g.run(paceCtx)
		}()
	}
	// Calls live on their own context: a ^C shortens the hold, it does
	// not cut the calls (they are drained and stopped like at the end).
	callCtx, cancelCalls := context.WithCancel(context.Background())
	defer cancelCalls()

	say("ramping %d calls over %s", cfg.Calls, cfg.Ramp)
	start := time.Now()
	for i, c := range l.calls {
		at := start.Add(cfg.Ramp * time.Duration(i) / time.Duration(cfg.Calls))
		if d := time.Until(at); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil { // interrupted during the ramp: the rest is never placed
			for _, c := range l.calls[i:] {
				c.fail("not placed: interrupted")
				c.closed.Store(true)
			}
			break
		}
		l.callers.Add(1)
		go c.run(callCtx)
	}
	// Set-up: every call heard the agent or failed (bounded per call).
	l.waitFor(ctx, setupTimeout+time.Second, func() bool {
		for _, c := range l.calls {
			if c.liveAt.Load() == 0 && !c.closed.Load() {
				return false
			}
		}
		return true
	})
	live := 0
	for _, c := range l.calls {
		if c.liveAt.Load() != 0 && !c.closed.Load() {
			live++
		}
	}
	say("%d of %d calls live after %s; holding %s", live, cfg.Calls, time.Since(start).Round(time.Millisecond), cfg.Hold)

	h := l.hold(ctx, t, say)
	rep.Bridge.RSSPeakMiB = mib(h.peakRSS)
	l.sendUntil.Store(l.now())

	// Drain: every echo back, or the drain limit.
	l.waitFor(context.WithoutCancel(ctx), cfg.Drain, func() bool {
		for _, c := range l.calls {
			if !c.closed.Load() && c.sent.Load() != c.echoed.Load() {
				return false
			}
		}
		return true
	})
	l.drainUntil.Store(l.now())
	say("stopping the calls")
	done := make(chan struct{})
	go func() {
		l.callers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(stopWait + 2*frameInterval + time.Second):
		// Readers end by their deadlines; only calls still being set up
		// (webhook, handshake) can be left: they give up now.
		cancelCalls()
		for _, c := range l.calls {
			if !c.closed.Load() {
				c.fail("did not end within %s of stop", stopWait)
			}
		}
		select {
		case <-done:
		case <-time.After(setupTimeout):
			say("some calls did not end; reporting without them")
		}
	}
	if !t.alive() {
		rep.Failures["bridge exited during the run"]++
	}
	l.fill(rep, h)
	return rep, nil
}

// holdResult is what was measured over the hold.
type holdResult struct {
	wall             time.Duration
	cpu0, cpu1       procSample
	self, all        time.Duration // this process's CPU, every process's
	peakRSS          int64
	metrics0, metric bridgeMetrics
	live             int
	procOK           bool
}

// hold lets every call run for cfg.Hold (shortened by ctx) and measures the
// bridge meanwhile: CPU, peak RSS, allocations and frames from /metrics,
// and, with -profile, its pprof profiles.
func (l *load) hold(ctx context.Context, t *target, say func(string, ...any)) holdResult {
	var h holdResult
	for _, c := range l.calls {
		if c.liveAt.Load() != 0 && !c.closed.Load() {
			h.live++
		}
	}
	h.metrics0 = scrapeMetrics(ctx, t.url)
	self0, all0 := selfCPU(), machineCPU()
	start := time.Now()
	if t.pid != 0 {
		var err error
		h.cpu0, err = readProc(t.pid)
		h.procOK = err == nil
		h.peakRSS = h.cpu0.rss
	}
	var prof sync.WaitGroup
	if l.cfg.Profile != "" && t.pprof != "" {
		prof.Add(1)
		go func() {
			defer prof.Done()
			secs := max(int(l.cfg.Hold/time.Second)-1, 1)
			if err := fetchProfile(t.pprof, fmt.Sprintf("profile?seconds=%d", secs), filepath.Join(l.cfg.Profile, "cpu.pprof")); err != nil {
				say("cpu profile: %v", err)
			}
		}()
	}
	if l.cfg.CPUProfile != "" {
		if f, err := os.Create(l.cfg.CPUProfile); err != nil {
			say("cpuprofile: %v", err)
		} else if err := pprof.StartCPUProfile(f); err != nil {
			say("cpuprofile: %v", err)
			f.Close()
		} else {
			defer func() {
				pprof.StopCPUProfile()
				f.Close()
			}()
		}
	}
	end := start.Add(l.cfg.Hold)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			say("interrupted: ending the hold early")
			end = time.Now()
		case <-tick.C:
			if t.pid != 0 {
				if s, err := readProc(t.pid); err == nil {
					h.peakRSS = max(h.peakRSS, s.rss)
				}
			}
		}
	}
	h.wall = time.Since(start)
	if t.pid != 0 {
		if s, err := readProc(t.pid); err == nil {
			h.cpu1 = s
			h.peakRSS = max(h.peakRSS, s.rss)
		} else {
			h.procOK = false
		}
	}
	h.self = selfCPU() - self0
	h.all = machineCPU() - all0
	h.metric = scrapeMetrics(context.Background(), t.url)
	if l.cfg.Profile != "" && t.pprof != "" {
		for _, p := range []string{"heap", "allocs", "goroutine"} {
			if err := fetchProfile(t.pprof, p, filepath.Join(l.cfg.Profile, p+".pprof")); err != nil {
				say("%s profile: %v", p, err)
			}
		}
		prof.Wait()
	}
	return h
}

// fetchProfile saves a profile of the bridge's net/http/pprof.
func fetchProfile(addr, which, file string) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: 5 * time.Minute}).Get("http://" + addr + "/debug/pprof/" + which)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
