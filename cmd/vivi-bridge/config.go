package main

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// config is the environment of DESIGN.md section 2, parsed and checked.
type config struct {
	ListenAddr          string
	PublicURL           string
	RedisURL            string
	RedisAddrs          []string
	RedisMasterName     string
	RedisPrefix         string
	ConfigFile          string
	TwilioAccountSID    string
	TwilioAuthToken     string
	TwilioAPIBaseURL    string
	TwilioSIPDomainSID  string
	ValidateSignatures  bool
	OpenAIAPIKey        string
	RealtimeURL         string
	RealtimeModel       string
	OpenAIBaseURL       string        // OPENAI_BASE_URL: HTTP API of the post-call analysis
	SummaryModel        string        // OPENAI_SUMMARY_MODEL: "" when analysis is off
	AnalysisTimeout     time.Duration // ANALYSIS_TIMEOUT: one analysis request
	PricesFile          string        // PRICES_FILE: overrides of the price table
	EventsRetryHorizon  time.Duration // EVENTS_RETRY_HORIZON: how long an event is retried before it is parked
	EventsWorkers       int           // EVENTS_WORKERS: deliveries in flight per pod
	PprofAddr           string
	SIPDomain           string
	StreamTokenSecret   string
	AdminToken          string
	MaxCalls            int
	ModelPoolSize       int
	EventsAllowPrivate  bool // EVENTS_ALLOW_PRIVATE: eventsUrl may name internal addresses
	ShutdownGrace       time.Duration
	SessionRetention    time.Duration
	LogLevel, LogFormat string
	PodID               string
	// HTTP bounds the public server's connections (not an environment
	// variable: the defaults suit every deployment; tests shorten them).
	HTTP httpLimits
}

// maxModelPool bounds MODEL_POOL_SIZE: every pooled connection is an open
// model session, so a pod keeps a few, not a crowd.
const maxModelPool = 16

// configError is a missing or malformed variable: start-up stops with exit code 2.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

func errConfig(format string, args ...any) error {
	return &configError{msg: fmt.Sprintf(format, args...)}
}

// loadConfig reads the environment. need says which of the required
// variables the subcommand needs ("serve" needs all of them).
func loadConfig(getenv func(string) string, serve bool) (config, error) {
	env := func(k, def string) string {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			return v
		}
		return def
	}
	c := config{
		ListenAddr:         env("LISTEN_ADDR", ":8080"),
		PublicURL:          env("PUBLIC_URL", ""),
		RedisURL:           env("REDIS_URL", ""),
		RedisMasterName:    env("REDIS_MASTER_NAME", ""),
		RedisPrefix:        env("REDIS_PREFIX", "vivi:"),
		ConfigFile:         env("CONFIG_FILE", ""),
		TwilioAccountSID:   env("TWILIO_ACCOUNT_SID", ""),
		TwilioAuthToken:    env("TWILIO_AUTH_TOKEN", ""),
		TwilioAPIBaseURL:   env("TWILIO_API_BASE_URL", "https://api.twilio.com"),
		TwilioSIPDomainSID: env("TWILIO_SIP_DOMAIN_SID", ""),
		OpenAIAPIKey:       env("OPENAI_API_KEY", ""),
		RealtimeURL:        env("OPENAI_REALTIME_URL", "wss://api.openai.com/v1/realtime"),
		RealtimeModel:      env("OPENAI_REALTIME_MODEL", "gpt-realtime"),
		OpenAIBaseURL:      env("OPENAI_BASE_URL", "https://api.openai.com/v1"),
		SummaryModel:       env("OPENAI_SUMMARY_MODEL", "gpt-4o-mini"),
		PricesFile:         env("PRICES_FILE", ""),
		PprofAddr:          env("PPROF_ADDR", ""),
		SIPDomain:          env("SIP_DOMAIN", "vivi.sip.twilio.com"),
		StreamTokenSecret:  getenv("STREAM_TOKEN_SECRET"),
		AdminToken:         getenv("ADMIN_TOKEN"),
		LogLevel:           env("LOG_LEVEL", "info"),
		LogFormat:          env("LOG_FORMAT", "json"),
		PodID:              env("POD_NAME", ""),
		HTTP:               defaultHTTPLimits,
	}
	if a := env("REDIS_ADDRS", ""); a != "" {
		for _, s := range strings.Split(a, ",") {
			if s = strings.TrimSpace(s); s != "" {
				c.RedisAddrs = append(c.RedisAddrs, s)
			}
		}
	}
	var err error
	if c.EventsAllowPrivate, err = parseBool(env("EVENTS_ALLOW_PRIVATE", "false")); err != nil {
		return c, errConfig("EVENTS_ALLOW_PRIVATE: %v", err)
	}
	if c.ValidateSignatures, err = parseBool(env("TWILIO_VALIDATE_SIGNATURES", "true")); err != nil {
		return c, errConfig("TWILIO_VALIDATE_SIGNATURES: %v", err)
	}
	if c.MaxCalls, err = strconv.Atoi(env("MAX_CALLS", "500")); err != nil || c.MaxCalls < 1 {
		return c, errConfig("MAX_CALLS: want a positive integer, got %q", getenv("MAX_CALLS"))
	}
	if c.ModelPoolSize, err = strconv.Atoi(env("MODEL_POOL_SIZE", "2")); err != nil || c.ModelPoolSize < 0 || c.ModelPoolSize > maxModelPool {
		return c, errConfig("MODEL_POOL_SIZE: want an integer from 0 to %d, got %q", maxModelPool, getenv("MODEL_POOL_SIZE"))
	}
	if c.ShutdownGrace, err = time.ParseDuration(env("SHUTDOWN_GRACE", "60s")); err != nil || c.ShutdownGrace < 0 {
		return c, errConfig("SHUTDOWN_GRACE: want a duration like 60s, got %q", getenv("SHUTDOWN_GRACE"))
	}
	if c.SessionRetention, err = time.ParseDuration(env("SESSION_RETENTION", "168h")); err != nil || c.SessionRetention <= 0 {
		return c, errConfig("SESSION_RETENTION: want a duration like 168h, got %q", getenv("SESSION_RETENTION"))
	}
	if c.SummaryModel == "off" {
		c.SummaryModel = ""
	}
	if c.AnalysisTimeout, err = time.ParseDuration(env("ANALYSIS_TIMEOUT", "30s")); err != nil || c.AnalysisTimeout <= 0 {
		return c, errConfig("ANALYSIS_TIMEOUT: want a duration like 30s, got %q", getenv("ANALYSIS_TIMEOUT"))
	}
	if c.EventsRetryHorizon, err = time.ParseDuration(env("EVENTS_RETRY_HORIZON", "24h")); err != nil || c.EventsRetryHorizon <= 0 {
		return c, errConfig("EVENTS_RETRY_HORIZON: want a duration like 24h, got %q", getenv("EVENTS_RETRY_HORIZON"))
	}
	if c.EventsWorkers, err = strconv.Atoi(env("EVENTS_WORKERS", "8")); err != nil || c.EventsWorkers < 1 || c.EventsWorkers > 256 {
		return c, errConfig("EVENTS_WORKERS: want an integer from 1 to 256, got %q", getenv("EVENTS_WORKERS"))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return c, errConfig("LOG_LEVEL: want debug, info, warn or error, got %q", c.LogLevel)
	}
	switch c.LogFormat {
	case "json", "console":
	default:
		return c, errConfig("LOG_FORMAT: want json or console, got %q", c.LogFormat)
	}
	if c.RedisURL != "" {
		u, err := url.Parse(c.RedisURL)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
			return c, errConfig("REDIS_URL: want redis:// or rediss://, got %q", redactURL(c.RedisURL))
		}
	}
	if err := checkURL("TWILIO_API_BASE_URL", c.TwilioAPIBaseURL, "https", "http"); err != nil {
		return c, err
	}
	if err := checkURL("OPENAI_REALTIME_URL", c.RealtimeURL, "wss", "ws"); err != nil {
		return c, err
	}
	if err := checkURL("OPENAI_BASE_URL", c.OpenAIBaseURL, "https", "http"); err != nil {
		return c, err
	}
	if !serve {
		return c, nil
	}
	for _, req := range []struct{ name, val string }{
		{"PUBLIC_URL", c.PublicURL},
		{"TWILIO_ACCOUNT_SID", c.TwilioAccountSID},
		{"TWILIO_AUTH_TOKEN", c.TwilioAuthToken},
		{"OPENAI_API_KEY", c.OpenAIAPIKey},
		{"STREAM_TOKEN_SECRET", c.StreamTokenSecret},
	} {
		if req.val == "" {
			return c, errConfig("%s is required for serve", req.name)
		}
	}
	u, err := url.Parse(c.PublicURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || (u.Path != "" && u.Path != "/") {
		return c, errConfig("PUBLIC_URL: want an origin like https://bridge.example.com, got %q", c.PublicURL)
	}
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	if len(c.StreamTokenSecret) < 32 {
		return c, errConfig("STREAM_TOKEN_SECRET: want at least 32 bytes, got %d", len(c.StreamTokenSecret))
	}
	return c, nil
}

func parseBool(s string) (bool, error) {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, errors.New("want true or false")
	}
	return b, nil
}

func checkURL(name, raw string, schemes ...string) error {
	u, err := url.Parse(raw)
	if err == nil && u.Host != "" {
		for _, s := range schemes {
			if u.Scheme == s {
				return nil
			}
		}
	}
	return errConfig("%s: want a %s:// URL, got %q", name, schemes[0], raw)
}

// redactURL hides a password in a URL for error messages.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable)"
	}
	return u.Redacted()
}
