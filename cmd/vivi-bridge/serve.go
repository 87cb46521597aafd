package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// serve runs the server until ctx is cancelled (SIGINT/SIGTERM), then drains
// by migration: /readyz turns false at once, webhooks and streams that still
// reach the pod are served, and every live call is moved to a ready pod at a
// quiet moment (a REST update with a fresh <Connect><Stream>). The pod exits
// as soon as its last call is gone; calls that could not move are ended with
// reason shutdown at SHUTDOWN_GRACE, or at once on a second signal.
func serve(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	if len(args) > 0 {
		return errConfig("serve takes no arguments (configuration is the environment), got %q", args[0])
	}
	c, err := loadConfig(getenv, true)
	if err != nil {
		return err
	}
	log, err := newLogger(c, stderr)
	if err != nil {
		return err
	}
	defer log.Sync()
	setRedisLogger(log)
	if !c.ValidateSignatures {
		log.Warn("TWILIO_VALIDATE_SIGNATURES=false: Twilio signatures are NOT checked; anyone can drive this server. Use only for local experiments.")
	}
	st, closeStore, err := openStore(ctx, c)
	if err != nil {
		return err
	}
	defer closeStore()

	ln, err := listen(c.ListenAddr)
	if err != nil {
		return err
	}
	force, stopWatching := secondSignal()
	defer stopWatching()
	return runServer(ctx, c, log, appDeps{store: st, force: force}, ln)
}

// runServer serves on ln until ctx ends, then drains. demo and the tests
// call it with their own listener and store.
func runServer(ctx context.Context, c config, log *zap.Logger, d appDeps, ln net.Listener) error {
	// Calls live in their own context: SIGTERM starts a drain, it does not
	// cut calls. callsCtx is cancelled only when the grace period is over.
	callsCtx, cancelCalls := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelCalls()
	a, err := newApp(callsCtx, c, log, d)
	if err != nil {
		ln.Close()
		return err
	}
	if c.ConfigFile != "" {
		res, err := a.applyFile(ctx, c.ConfigFile)
		if err != nil {
			ln.Close()
			return fmt.Errorf("CONFIG_FILE %s: %w", c.ConfigFile, err)
		}
		log.Info("configuration applied", zap.String("file", c.ConfigFile),
			zap.Int("agents", len(res.Agents)), zap.Int("channels", len(res.Channels)))
	}
	if c.PprofAddr != "" {
		pln, err := listen(c.PprofAddr)
		if err != nil {
			ln.Close()
			return err
		}
		ps := &http.Server{Handler: pprofHandler(), ReadHeaderTimeout: 5 * time.Second}
		go ps.Serve(pln)
		defer ps.Close()
		log.Info("pprof listening", zap.String("addr", pln.Addr().String()))
	}
	srv := newHTTPServer(c.HTTP, a.handler, log)
	unused := newUnusedConns()
	srv.ConnState = unused.track
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("vivi-bridge serving", zap.String("addr", ln.Addr().String()), zap.String("public_url", c.PublicURL),
		zap.Int("max_calls", c.MaxCalls), zap.Bool("redis", c.RedisURL != "" || len(c.RedisAddrs) > 0))

	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	a.health.draining.Store(true)
	if a.deliverer != nil {
		a.deliverer.Draining() // takes no new shards; keeps its own until stopDeliveries
	}
	if a.presence != nil {
		a.presence.drain(context.WithoutCancel(ctx))
	}
	began := time.Now()
	log.Info("draining: migrating the live calls", zap.Float64("grace_s", c.ShutdownGrace.Seconds()), zap.Int("calls", a.bridge.ActiveCalls()))
	drainCtx, cancel := context.WithTimeout(context.Background(), c.ShutdownGrace)
	defer cancel()
	if d.force != nil {
		go func() {
			select {
			case <-d.force:
				log.Warn("second signal: ending the remaining calls now")
				cancel()
			case <-drainCtx.Done():
			}
		}()
	}
	if err := a.bridge.Shutdown(drainCtx); err != nil {
		log.Warn("drain ended the calls that had not moved", zap.Error(err))
	}
	log.Info("drained", zap.Float64("drain_s", time.Since(began).Seconds()))
	a.stopDeliveries()
	cancelCalls()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	defer unused.closeAfter(unusedGrace)() // a connection that never sent a request does not hold the exit
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", zap.Error(err))
	}
	log.Info("stopped")
	return nil
}

// secondSignal returns a channel closed at the second SIGINT/SIGTERM (the
// first one cancels serve's context and starts the drain), and a func that
// stops watching.
func secondSignal() (<-chan struct{}, func()) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	force, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer signal.Stop(sigs)
		for n := 0; n < 2; n++ {
			select {
			case <-sigs:
			case <-done:
				return
			}
		}
		close(force)
	}()
	return force, sync.OnceFunc(func() { close(done) })
}

// httpLimits bound what one HTTP client can make the server hold: a
// connection, a goroutine and buffers. A body dripped a byte at a time ends
// at ReadTimeout, a client that reads its answer slowly at WriteTimeout, an
// idle keep-alive connection at IdleTimeout.
//
// The media stream is not cut by them: net/http clears both deadlines of a
// connection when it is hijacked (Hijack calls SetDeadline(time.Time{}),
// checked against Go 1.26's net/http), and from then on the bridge owns them
// (the Twilio reader's idle deadline, a deadline on every write), so a call
// lasts as long as it needs to. TestServeStreamOutlivesHTTPTimeouts guards it.
type httpLimits struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration // headers and body of one request
	WriteTimeout      time.Duration // from the end of the headers to the end of the answer
	IdleTimeout       time.Duration // between two requests on a keep-alive connection
	MaxHeaderBytes    int
}

// defaultHTTPLimits are generous for Twilio's webhooks (a few KB, sent at
// once) and the admin API (bodies of at most channel.MaxRequestBody).
var defaultHTTPLimits = httpLimits{
	ReadHeaderTimeout: 10 * time.Second,
	ReadTimeout:       30 * time.Second,
	WriteTimeout:      30 * time.Second,
	IdleTimeout:       60 * time.Second,
	MaxHeaderBytes:    64 << 10, // Twilio's headers are well under 8 KB; net/http's default is 1 MB
}

func newHTTPServer(l httpLimits, h http.Handler, log *zap.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}
}
