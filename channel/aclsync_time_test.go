package channel_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/twilio/twilio-go"
	"github.com/twilio/twilio-go/client"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/twiliotest"
)

// The tests in this file run ACLSync.Run in a testing/synctest bubble: its
// timers run on the bubble's fake clock, which advances only when every
// goroutine in the bubble is durably blocked, so a backoff of minutes takes
// no real time and the times Twilio sees are exact. Twilio is the REST fake
// served in memory (twiliotest.NewMemREST): a real socket is never durably
// blocked, and fake time would not advance.

// memSync is an ACLSync wired to an in-memory REST fake with SIP endpoints,
// created inside the calling bubble.
type memSync struct {
	rest *twiliotest.REST
	sip  *twiliotest.SIP
	sync *channel.ACLSync
	logs *observer.ObservedLogs
}

// newMemSync builds the sync over twilio-go the way transfer.NewRESTClient
// does, but with the fake's in-memory transport; cfg gives the tuning.
func newMemSync(t *testing.T, channels channel.ChannelLister, cfg channel.ACLSyncConfig) *memSync {
	t.Helper()
	rest := twiliotest.NewMemREST(twiliotest.RESTOptions{AccountSID: aclAccount, AuthToken: aclToken})
	t.Cleanup(rest.Close)
	c := &client.Client{
		Credentials: client.NewCredentials(aclAccount, aclToken),
		HTTPClient:  &http.Client{Transport: rest.RoundTripper()},
	}
	c.SetAccountSid(aclAccount)
	core, logs := observer.New(zap.InfoLevel)
	cfg.API = twilio.NewRestClientWithParams(twilio.ClientParams{Client: c}).Api
	cfg.DomainSID, cfg.Channels, cfg.Logger = aclDomain, channels, zap.New(core)
	s, err := channel.NewACLSync(cfg)
	if err != nil {
		t.Fatalf("NewACLSync: %v", err)
	}
	return &memSync{rest: rest, sip: twiliotest.NewSIP(rest), sync: s, logs: logs}
}

// reconcileTimes returns when each reconcile (a run of requests at the same
// fake instant; in memory a reconcile takes no fake time) began, as offsets
// from start, and whether it failed (its last request was answered 500).
func (m *memSync) reconcileTimes(start time.Time) (at []time.Duration, failed []bool) {
	for _, r := range m.rest.Requests() {
		d := r.At.Sub(start)
		if len(at) == 0 || at[len(at)-1] != d {
			at, failed = append(at, d), append(failed, false)
		}
		failed[len(failed)-1] = r.Status == http.StatusInternalServerError
	}
	return at, failed
}

// retryLogs returns the retry_in_s field of each "sync failed; retrying" log.
func (m *memSync) retryLogs() []float64 {
	var out []float64
	for _, e := range m.logs.FilterMessageSnippet("sync failed; retrying").All() {
		out = append(out, e.ContextMap()["retry_in_s"].(float64))
	}
	return out
}

// runInBubble runs s.Run until the bubble's test ends.
func runInBubble(t *testing.T, s *channel.ACLSync) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func secs(ds ...float64) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = time.Duration(d * float64(time.Second))
	}
	return out
}

// TestACLSyncBackoffSequence: Run reconciles at once; while Twilio fails it
// retries after 5 s, 10 s, 20 s, 40 s, 40 s, 40 s (doubling from RetryMin,
// capped at RetryMax); after the first success it reconciles every
// Interval, and the backoff starts again from RetryMin.
func TestACLSyncBackoffSequence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemSync(t, channelsFunc(func(context.Context) ([]channel.Channel, error) {
			return channelsWith("203.0.113.10"), nil
		}), channel.ACLSyncConfig{RetryMin: 5 * time.Second, RetryMax: 40 * time.Second, Interval: 10 * time.Minute})
		m.sip.FailNext(6) // each failure ends a reconcile at its first request
		start := time.Now()
		runInBubble(t, m.sync)

		// The first success comes after 155 s of retries; just before one
		// Interval after it, nothing more has happened.
		time.Sleep(155*time.Second + 10*time.Minute - time.Millisecond)
		synctest.Wait()
		at, failed := m.reconcileTimes(start)
		want := secs(0, 5, 15, 35, 75, 115, 155)
		if !slices.Equal(at, want) {
			t.Errorf("reconciles at %v; want %v", at, want)
		}
		if wantFailed := []bool{true, true, true, true, true, true, false}; !slices.Equal(failed, wantFailed) {
			t.Errorf("failed = %v; want %v", failed, wantFailed)
		}
		if got := m.retryLogs(); !slices.Equal(got, []float64{5, 10, 20, 40, 40, 40}) {
			t.Errorf("retry_in_s logged: %v; want [5 10 20 40 40 40]", got)
		}
		l := m.sip.Lists(aclList)
		if len(l) != 1 || !slices.Equal(m.sip.IPs(l[0]), []string{"203.0.113.10"}) {
			t.Errorf("Twilio not in sync: lists %v", l)
		}

		// The periodic reconciles come exactly one Interval apart.
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if at, _ = m.reconcileTimes(start); !slices.Equal(at, secs(0, 5, 15, 35, 75, 115, 155, 755)) {
			t.Errorf("reconciles at %v; want one more at 755s", at)
		}
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		if at, _ = m.reconcileTimes(start); !slices.Equal(at, secs(0, 5, 15, 35, 75, 115, 155, 755, 1355)) {
			t.Errorf("reconciles at %v; want one more at 1355s", at)
		}

		// The success reset the backoff: a failed Sync a minute later is
		// retried RetryMin after it, not 80 s.
		time.Sleep(time.Minute)
		m.sip.FailNext(1)
		if _, err := m.sync.Sync(context.Background()); err == nil {
			t.Fatal("Sync succeeded while Twilio failed")
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if at, _ = m.reconcileTimes(start); !slices.Equal(at, secs(0, 5, 15, 35, 75, 115, 155, 755, 1355, 1415, 1420)) {
			t.Errorf("reconciles at %v; want a failed Sync at 1415s retried at 1420s", at)
		}
	})
}

// TestACLSyncFailedSyncWakesRun: a Sync (the admin API's) that fails makes
// Run retry RetryMin later, with the backoff reset by the last success;
// when a reconcile is due sooner than that anyway, it is not postponed.
// The periodic reconcile then counts from the retry.
func TestACLSyncFailedSyncWakesRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMemSync(t, channelsFunc(func(context.Context) ([]channel.Channel, error) {
			return channelsWith("203.0.113.10"), nil
		}), channel.ACLSyncConfig{RetryMin: 5 * time.Second, RetryMax: time.Minute, Interval: 10 * time.Minute})
		start := time.Now()
		runInBubble(t, m.sync)
		synctest.Wait() // the first reconcile, at 0, succeeded

		time.Sleep(time.Minute)
		m.sip.FailNext(1)
		if _, err := m.sync.Sync(context.Background()); err == nil {
			t.Fatal("Sync succeeded while Twilio failed")
		}
		// Retried at 65 s; then periodic from there: 665 s. Near the end of
		// that interval (at 664 s) a failed Sync wants a retry at 669 s,
		// later than the reconcile due at 665 s, which stays.
		time.Sleep(664*time.Second - time.Minute)
		m.sip.FailNext(1)
		if _, err := m.sync.Sync(context.Background()); err == nil {
			t.Fatal("second Sync succeeded while Twilio failed")
		}
		time.Sleep(10 * time.Second) // to 674 s
		synctest.Wait()
		at, failed := m.reconcileTimes(start)
		if want := secs(0, 60, 65, 664, 665); !slices.Equal(at, want) {
			t.Errorf("reconciles (Run's and Sync's) at %v; want %v", at, want)
		}
		if want := []bool{false, true, false, true, false}; !slices.Equal(failed, want) {
			t.Errorf("failed = %v; want %v", failed, want)
		}
		if got := m.retryLogs(); len(got) != 0 {
			t.Errorf("Run logged failed retries %v; want none (only Sync failed)", got)
		}
	})
}
