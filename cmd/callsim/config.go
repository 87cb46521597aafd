package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"
)

// Models the load can run against (Config.Model).
const (
	// ModelEcho is callsim's own echo model, in the load's process: every
	// append is answered at once with a delta carrying the same audio, and
	// both directions are timed on one clock.
	ModelEcho = "echo"
	// ModelFake is realtimetest's fake in its echo mode, in the load's
	// process: the round trip only.
	ModelFake = "fake"
	// ModelNone serves no model: the bridge (-url) talks to a model of its
	// own, e.g. `callsim model` in another process.
	ModelNone = "none"
)

const defaultAPIKey = "callsim-key"

// Config is one load run. Exactly one of BridgeBin and URL is set.
type Config struct {
	Calls      int           // concurrent calls
	Ramp       time.Duration // calls are started evenly over it
	Hold       time.Duration // how long all calls run together: the measured window
	Drain      time.Duration // after the last frame: how long echoes may take to come back
	DTMF       time.Duration // each call presses a digit this often; 0: never
	Talk       time.Duration // speech and silence alternate this often
	JSON       bool
	Quiet      bool     // no progress lines on stderr
	Command    []string // the command line, for the report
	MaxCalls   int      // the spawned bridge's MAX_CALLS; default Calls+10
	Procs      int      // GOMAXPROCS of callsim itself (0: the Go default); not the bridge's
	CPUProfile string   // write callsim's own CPU profile over the hold here

	// A bridge started by callsim.
	BridgeBin string
	BridgeLog string   // file for its stderr; empty keeps only its last lines
	BridgeEnv []string // extra KEY=VALUE for it
	RedisURL  string   // its REDIS_URL; empty means its memory store
	Profile   string   // directory for its cpu, heap and allocs profiles over the hold

	// A bridge already running.
	URL        string // where it listens, e.g. http://127.0.0.1:8080
	PublicURL  string // its PUBLIC_URL (default URL)
	PID        int    // its process, for CPU and RSS from /proc; 0: not measured
	AuthToken  string // its TWILIO_AUTH_TOKEN
	AccountSID string

	Model       string // ModelEcho, ModelFake or ModelNone
	ModelListen string // address of the model callsim serves
	To          string // the SIP To of every call (extension 1001)
	SourceIP    string // the signed SipSourceIp of every call
}

func (c Config) withDefaults() Config {
	if c.Ramp <= 0 {
		c.Ramp = time.Second
	}
	if c.Drain <= 0 {
		c.Drain = 3 * time.Second
	}
	if c.Talk <= 0 {
		c.Talk = time.Second
	}
	if c.MaxCalls <= 0 {
		c.MaxCalls = c.Calls + 10
	}
	if c.Model == "" {
		c.Model = ModelEcho
	}
	if c.ModelListen == "" {
		c.ModelListen = "127.0.0.1:0"
	}
	if c.To == "" {
		c.To = "sip:1001@vivi.sip.twilio.com"
	}
	if c.SourceIP == "" {
		c.SourceIP = "203.0.113.10"
	}
	if c.PublicURL == "" {
		c.PublicURL = c.URL
	}
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	c.URL = strings.TrimRight(c.URL, "/")
	return c
}

func (c Config) validate() error {
	switch {
	case c.Calls < 1 || c.Calls > 1<<16:
		return fmt.Errorf("-calls: want 1 to 65536, got %d", c.Calls)
	case c.Hold <= 0 || c.Hold > 24*time.Hour:
		return fmt.Errorf("-duration: want a positive duration of at most 24h, got %s", c.Hold)
	case c.Ramp > time.Hour:
		return fmt.Errorf("-ramp: at most 1h, got %s", c.Ramp)
	case (c.BridgeBin == "") == (c.URL == ""):
		return errors.New("want exactly one of -bridge-bin (start a bridge) and -url (a running bridge)")
	case c.Model != ModelEcho && c.Model != ModelFake && c.Model != ModelNone:
		return fmt.Errorf("-model: want echo, fake or none, got %q", c.Model)
	case c.BridgeBin != "" && c.Model == ModelNone:
		return errors.New("-model none needs -url: a bridge started by callsim talks to callsim's model")
	case c.URL != "" && c.AuthToken == "":
		return errors.New("-url needs -auth-token (or TWILIO_AUTH_TOKEN): the bridge's Twilio auth token")
	case c.URL != "" && c.Profile != "":
		return errors.New("-profile works with -bridge-bin only (it sets the bridge's PPROF_ADDR)")
	}
	if c.URL != "" {
		if err := loopbackURL(c.URL); err != nil {
			return fmt.Errorf("-url: %w", err)
		}
	}
	if ip := net.ParseIP(c.SourceIP); ip == nil || ip.To4() == nil {
		return fmt.Errorf("-source-ip: want an IPv4 address, got %q", c.SourceIP)
	}
	return nil
}

// loopbackURL refuses targets off this machine: a load tool pointed at the
// wrong host is an attack.
func loopbackURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("want an http://host:port URL, got %q", raw)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address: callsim only loads this machine", host)
	}
	return nil
}

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("callsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.IntVar(&c.Calls, "calls", 10, "concurrent calls")
	fs.DurationVar(&c.Ramp, "ramp", time.Second, "start the calls evenly over this long")
	fs.DurationVar(&c.Hold, "duration", 10*time.Second, "how long all calls run together (the measured window)")
	fs.DurationVar(&c.Drain, "drain", 3*time.Second, "after the last frame, how long echoes may take to come back")
	fs.DurationVar(&c.DTMF, "dtmf", 0, "each call presses 5 this often (0: never)")
	fs.DurationVar(&c.Talk, "talk", time.Second, "the caller alternates speech and silence this often")
	fs.BoolVar(&c.JSON, "json", false, "print the report as JSON")
	fs.BoolVar(&c.Quiet, "q", false, "no progress lines on stderr")
	fs.IntVar(&c.MaxCalls, "max-calls", 0, "MAX_CALLS of the spawned bridge (default calls+10)")
	fs.IntVar(&c.Procs, "procs", 0, "GOMAXPROCS of callsim itself (0: Go's default); the bridge keeps its own")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write callsim's own CPU profile over the hold to this file")
	fs.StringVar(&c.BridgeBin, "bridge-bin", "", "start this vivi-bridge binary on 127.0.0.1 with fakes around it")
	fs.StringVar(&c.BridgeLog, "bridge-log", "", "write the spawned bridge's log to this file")
	fs.Func("bridge-env", "extra KEY=VALUE for the spawned bridge (repeatable)", func(s string) error {
		if !strings.Contains(s, "=") {
			return errors.New("want KEY=VALUE")
		}
		c.BridgeEnv = append(c.BridgeEnv, s)
		return nil
	})
	fs.StringVar(&c.RedisURL, "redis-url", "", "REDIS_URL of the spawned bridge (default: its memory store)")
	fs.StringVar(&c.Profile, "profile", "", "directory for the spawned bridge's cpu/heap/allocs profiles over the hold")
	fs.StringVar(&c.URL, "url", "", "a running bridge, e.g. http://127.0.0.1:8080 (loopback only)")
	fs.StringVar(&c.PublicURL, "public-url", "", "its PUBLIC_URL (default -url)")
	fs.IntVar(&c.PID, "pid", 0, "its process id, for CPU and RSS from /proc")
	fs.StringVar(&c.AuthToken, "auth-token", getenv("TWILIO_AUTH_TOKEN"), "its TWILIO_AUTH_TOKEN")
	fs.StringVar(&c.AccountSID, "account-sid", getenv("TWILIO_ACCOUNT_SID"), "its TWILIO_ACCOUNT_SID")
	fs.StringVar(&c.Model, "model", ModelEcho, "model callsim serves: echo (own, both directions timed), fake (realtimetest echo) or none")
	fs.StringVar(&c.ModelListen, "model-listen", "127.0.0.1:0", "address of the model callsim serves")
	fs.StringVar(&c.To, "to", "sip:1001@vivi.sip.twilio.com", "SIP To of every call")
	fs.StringVar(&c.SourceIP, "source-ip", "203.0.113.10", "signed SipSourceIp of every call")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	c.Command = append([]string{"callsim"}, args...)
	c = c.withDefaults()
	return c, c.validate()
}

const usage = `usage:
  callsim -bridge-bin PATH [flags]     start a bridge with fakes around it and load it
  callsim -url URL -auth-token T [-pid PID] [-model-listen ADDR] [flags]
                                       load a running bridge (its OPENAI_REALTIME_URL must be callsim's model)
  callsim model [-listen ADDR]         run the echo model alone
  callsim markdown -o FILE [-go BENCH.txt] RUN.json...
                                       write the measured section of BENCHMARKS.md
flags:
`
