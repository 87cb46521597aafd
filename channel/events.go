package channel

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/vivi/bridge/session"
)

// EventSignatureHeader carries the signature of a call event POST.
const EventSignatureHeader = "X-Vivi-Signature"

// Defaults of EventSinkConfig.
const (
	defaultEventTimeout = 5 * time.Second
	defaultEventQueue   = 1024
	defaultEventWorkers = 4
	defaultEventRetries = 3
	eventBackoff        = 200 * time.Millisecond
)

// ChannelGetter reads one channel (the store implements it).
type ChannelGetter interface {
	Channel(ctx context.Context, id string) (Channel, error)
}

// EventSinkConfig configures NewEventSink; zero fields take their defaults.
type EventSinkConfig struct {
	// Channels gives the eventsUrl and eventsSecret of a call's channel.
	Channels ChannelGetter
	// Client posts the events (default: 5 s timeout, no redirects, and
	// unless AllowPrivate a dialer that refuses internal addresses).
	Client *http.Client
	// AllowPrivate lets events go to loopback, private, link-local and
	// other internal addresses, and over http (EVENTS_ALLOW_PRIVATE).
	AllowPrivate bool
	// Resolver resolves eventsUrl hosts for the default Client (default:
	// the system's); every address it gives is checked before it is dialled.
	Resolver *net.Resolver
	// Queue is how many events wait for a worker before new ones are dropped (default 1024).
	Queue int
	// Workers is how many events are posted at once (default 4).
	Workers int
	// Retries is how many times a failed post is retried, 200 ms apart and
	// doubling (default 3; negative: none).
	Retries int
	// Now is the clock of the signature timestamp (default time.Now).
	Now func() time.Time
	// Logger logs failures and drops (default: nop).
	Logger *zap.Logger
}

// EventSink posts call events to the eventsUrl of the call's channel,
// signed with the channel's eventsSecret, from a bounded queue.
type EventSink struct {
	cfg     EventSinkConfig
	queue   chan eventJob
	dropped atomic.Int64
}

type eventJob struct {
	callSID, channelID, typ string
	body                    []byte
}

// NewEventSink returns a sink; Run posts what Post queues.
func NewEventSink(cfg EventSinkConfig) *EventSink {
	if cfg.Client == nil {
		cfg.Client = newEventsClient(cfg.AllowPrivate, cfg.Resolver)
	}
	if cfg.Queue <= 0 {
		cfg.Queue = defaultEventQueue
	}
	if cfg.Workers <= 0 {
		cfg.Workers = defaultEventWorkers
	}
	if cfg.Retries == 0 {
		cfg.Retries = defaultEventRetries
	} else if cfg.Retries < 0 {
		cfg.Retries = 0
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &EventSink{cfg: cfg, queue: make(chan eventJob, cfg.Queue)}
}

// SignEvent returns the X-Vivi-Signature value of body sent at unix time t:
// "t=<t>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed with secret>".
func SignEvent(secret string, t int64, body []byte) string {
	ts := strconv.FormatInt(t, 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// Dropped is how many events were dropped because the queue was full.
func (s *EventSink) Dropped() int64 { return s.dropped.Load() }

// Post queues one call event; it never blocks: when the queue is full the
// event is dropped (and logged). extra adds fields to the JSON body; the
// standard fields win over extra keys of the same name.
func (s *EventSink) Post(callSID, channelID string, ev session.Event, extra map[string]any) {
	body := make(map[string]any, len(extra)+5)
	for k, v := range extra {
		body[k] = v
	}
	body["type"] = ev.Type
	body["callSid"] = callSID
	body["channelId"] = channelID
	body["at"] = ev.At.UTC().Format(time.RFC3339Nano)
	if ev.Detail != "" {
		body["detail"] = ev.Detail
	} else {
		delete(body, "detail")
	}
	data, err := json.Marshal(body)
	if err != nil {
		s.cfg.Logger.Warn("call event not encodable", zap.String("call_sid", callSID),
			zap.String("channel_id", channelID), zap.String("type", ev.Type), zap.Error(err))
		return
	}
	select {
	case s.queue <- eventJob{callSID: callSID, channelID: channelID, typ: ev.Type, body: data}:
	default:
		n := s.dropped.Add(1)
		s.cfg.Logger.Warn("call event dropped: queue full", zap.String("call_sid", callSID),
			zap.String("channel_id", channelID), zap.String("type", ev.Type), zap.Int64("dropped", n))
	}
}

// Run posts queued events with the configured workers until ctx ends;
// events still queued then are not posted.
func (s *EventSink) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range s.cfg.Workers {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-s.queue:
					s.deliver(ctx, j)
				}
			}
		})
	}
	wg.Wait()
	s.cfg.Client.CloseIdleConnections()
}

// deliver posts one event, retrying network errors, 5xx and 429.
func (s *EventSink) deliver(ctx context.Context, j eventJob) {
	log := s.cfg.Logger.With(zap.String("call_sid", j.callSID), zap.String("channel_id", j.channelID),
		zap.String("type", j.typ))
	ch, err := s.cfg.Channels.Channel(ctx, j.channelID)
	if err != nil {
		if !errors.Is(err, ErrNotFound) && ctx.Err() == nil {
			log.Warn("call event not posted: channel lookup", zap.Error(err))
		}
		return
	}
	if ch.EventsURL == "" {
		return
	}
	wait := eventBackoff
	for attempt := 0; ; attempt++ {
		retry, err := s.post(ctx, ch, j.body)
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			return
		}
		if !retry || attempt >= s.cfg.Retries {
			log.Warn("call event not posted", zap.Int("attempts", attempt+1), zap.Error(err))
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait *= 2
	}
}

// post makes one signed POST; retry tells whether a failure may pass.
func (s *EventSink) post(ctx context.Context, ch Channel, body []byte) (retry bool, err error) {
	// A channel stored before the policy (or under another setting) is
	// held to it here too.
	if v := checkEventsTarget(ch.EventsURL, s.cfg.AllowPrivate); v != nil {
		return false, fmt.Errorf("post event: %w (not https, or an internal host)", ErrForbiddenEventsTarget)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ch.EventsURL, bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("post event: bad eventsUrl: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "vivi-bridge")
	req.Header.Set(EventSignatureHeader, SignEvent(ch.EventsSecret, s.cfg.Now().Unix(), body))
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL
		}
		// A refused address stays refused: no retry.
		return !errors.Is(err, ErrForbiddenEventsTarget), fmt.Errorf("post event: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return true, fmt.Errorf("post event: status %d", resp.StatusCode)
	default:
		return false, fmt.Errorf("post event: status %d", resp.StatusCode)
	}
}
