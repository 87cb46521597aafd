package twiliotest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Paths the SIP Domain is configured with (they appear in no TwiML).
const (
	voicePath      = "/twilio/voice"
	callStatusPath = "/twilio/call-status"
)

const (
	webhookTimeout = 15 * time.Second // Twilio gives a webhook 15 s
	maxTwiMLBody   = 64 << 10         // TwiML documents are small
	stopWait       = 5 * time.Second  // after `stop`: how long the bridge may take to close
	maxStreams     = 50               // streams per call before the simulator gives up
	maxDocuments   = 20               // TwiML documents in a row without a stream
	cmdQueueSize   = 16               // updates and hang-ups queued for one call
)

// Outcomes of a simulated call (SimCall.Outcome).
const (
	// OutcomeCompleted: the call ended with a hang-up (the caller's, the
	// bridge's, or <Hangup/> after a failed transfer).
	OutcomeCompleted = "completed"
	// OutcomeTransferred: <Hangup/> after a REFER whose ReferCallStatus was
	// in-progress: the PBX took the call.
	OutcomeTransferred = "transferred"
	// OutcomeRejected: the voice webhook answered <Reject>.
	OutcomeRejected = "rejected"
	// OutcomeFailed: the simulator could not go on like Twilio would: an
	// action URL failed or answered unsupported TwiML, or a stream did not
	// open. Events says why.
	OutcomeFailed = "failed"
	// OutcomeClosed: Twilio.Close ended the call.
	OutcomeClosed = "closed"
)

// ErrTwilioClosed is returned by PlaceCall after Twilio.Close.
var ErrTwilioClosed = errors.New("twiliotest: Twilio simulator closed")

// WebhookError is returned when the bridge answered a webhook (the voice URL
// or an action URL) with a status other than 2xx.
type WebhookError struct {
	// URL is the URL Twilio requested (and signed), e.g. PUBLIC_URL/twilio/voice.
	URL string
	// Status is the HTTP status the bridge answered.
	Status int
	// Body is the start of the answer (at most 1 KiB).
	Body string
}

// Error implements error.
func (e *WebhookError) Error() string {
	return fmt.Sprintf("twiliotest: %s answered HTTP %d", e.URL, e.Status)
}

// SimConfig configures a Twilio simulator.
type SimConfig struct {
	// BridgeURL is where the bridge listens, e.g. http://127.0.0.1:8080:
	// every request goes to its scheme and host (ws:// or wss:// for streams).
	BridgeURL string
	// PublicURL is the bridge's PUBLIC_URL (default BridgeURL). The voice
	// webhook is PublicURL+/twilio/voice and the call status callback
	// PublicURL+/twilio/call-status; other URLs come from the TwiML. Every
	// request is signed over the URL Twilio was given (as Twilio does) and
	// sent to BridgeURL with that URL's path.
	PublicURL string
	// AccountSID (default a random AC... SID) and AuthToken sign every
	// request and are the credentials of the REST fake: keep them
	// alphanumeric, as twilio-go requires.
	AccountSID, AuthToken string
	// FrameInterval and DiscardAudio are passed to every media stream
	// (CallConfig).
	FrameInterval time.Duration
	DiscardAudio  bool
	// Logger defaults to zap.NewNop().
	Logger *zap.Logger
	// HTTPClient sends the webhooks; nil means a client of the simulator's
	// own, whose idle connections Close closes.
	HTTPClient *http.Client
}

// ReferOutcome is what the PBX answers to a REFER, as Twilio reports it to
// the <Refer action> (twilio.md §6.4), e.g. {"in-progress","202","200"},
// {"busy","202","486"}, {"failed","405",""}, {"canceled","202","180"}.
type ReferOutcome struct {
	// CallStatus is sent as ReferCallStatus; empty means no NOTIFY arrived:
	// neither ReferCallStatus nor NotifySipResponseCode is sent. "canceled"
	// means the caller hung up during the transfer: the call ends whatever
	// the action answers.
	CallStatus string
	// ReferSIPCode is sent as ReferSipResponseCode (default "202").
	ReferSIPCode string
	// NotifySIPCode is sent as NotifySipResponseCode; empty leaves it out.
	NotifySIPCode string
}

// Twilio plays Twilio's whole part in SIP-Domain calls against a running
// bridge: the signed voice webhook, the media streams of <Connect><Stream>,
// status callbacks, and what Twilio does when the bridge updates a live
// call through the REST API (the REST fake, REST): <Refer> transfers with
// their refer-status callback, hang-ups, and resuming with a new stream.
//
// Each placed call has one goroutine (its loop) that owns what the call does
// next; Close ends them all.
type Twilio struct {
	cfg       SimConfig
	cfgErr    error    // a bad BridgeURL or PublicURL, reported by PlaceCall
	bridge    *url.URL // scheme and host the requests go to
	public    *url.URL // PublicURL, without a trailing slash
	client    *http.Client
	own       *http.Transport // the default client's transport, nil with cfg.HTTPClient
	rest      *REST
	log       *zap.Logger
	domainSID string

	ctx       context.Context // every call's context; canceled by Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup // PlaceCall and call loops
	closeOnce sync.Once

	mu     sync.Mutex
	closed bool
	calls  map[string]*SimCall // live calls by call SID
	ended  map[string]struct{} // SIDs of answered calls that have ended
	refer  func(callSID, referTo string) ReferOutcome
}

// NewTwilio returns a simulator and starts its REST fake (REST) with the same
// credentials. A bad BridgeURL or PublicURL makes PlaceCall fail. Close it
// when done.
func NewTwilio(cfg SimConfig) *Twilio {
	if cfg.AccountSID == "" {
		cfg.AccountSID = NewAccountSID()
	}
	if cfg.PublicURL == "" {
		cfg.PublicURL = cfg.BridgeURL
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	t := &Twilio{
		cfg:       cfg,
		client:    cfg.HTTPClient,
		log:       cfg.Logger,
		domainSID: "SD" + randomHex(),
		calls:     map[string]*SimCall{},
		ended:     map[string]struct{}{},
	}
	t.bridge, t.public, t.cfgErr = parseSimURLs(cfg.BridgeURL, cfg.PublicURL)
	if t.client == nil {
		t.own = &http.Transport{MaxIdleConnsPerHost: 100, IdleConnTimeout: 30 * time.Second}
		t.client = &http.Client{Transport: t.own, Timeout: webhookTimeout}
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.rest = NewREST(RESTOptions{AccountSID: cfg.AccountSID, AuthToken: cfg.AuthToken, Logger: cfg.Logger})
	t.rest.setUpdater(t.applyUpdate)
	return t
}

func parseSimURLs(bridgeURL, publicURL string) (bridge, public *url.URL, err error) {
	bridge, err = url.Parse(bridgeURL)
	if err != nil || (bridge.Scheme != "http" && bridge.Scheme != "https") || bridge.Host == "" {
		return nil, nil, fmt.Errorf("twiliotest: BridgeURL %q is not an absolute http(s) URL", bridgeURL)
	}
	public, err = url.Parse(strings.TrimRight(publicURL, "/"))
	if err != nil || (public.Scheme != "http" && public.Scheme != "https") || public.Host == "" {
		return nil, nil, fmt.Errorf("twiliotest: PublicURL %q is not an absolute http(s) URL", publicURL)
	}
	return &url.URL{Scheme: bridge.Scheme, Host: bridge.Host}, public, nil
}

// REST returns the REST API fake the bridge updates calls through (point
// TWILIO_API_BASE_URL at REST().URL()).
func (t *Twilio) REST() *REST { return t.rest }

// SetReferOutcome sets what the PBX answers to each REFER; nil restores the
// default, a successful transfer {"in-progress","202","200"}.
func (t *Twilio) SetReferOutcome(fn func(callSID, referTo string) ReferOutcome) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.refer = fn
}

func (t *Twilio) referOutcome(callSID, referTo string) ReferOutcome {
	t.mu.Lock()
	fn := t.refer
	t.mu.Unlock()
	out := ReferOutcome{CallStatus: "in-progress", ReferSIPCode: "202", NotifySIPCode: "200"}
	if fn != nil {
		out = fn(callSID, referTo)
	}
	if out.ReferSIPCode == "" {
		out.ReferSIPCode = "202"
	}
	return out
}

// Close ends every call (a `stop` on its stream, no callbacks: outcome
// OutcomeClosed), closes the REST fake and waits until every goroutine of
// the simulator has returned. It is idempotent.
func (t *Twilio) Close() {
	t.closeOnce.Do(func() {
		t.mu.Lock()
		t.closed = true
		t.mu.Unlock()
		t.cancel()
		t.wg.Wait()
		t.rest.Close()
		if t.own != nil {
			t.own.CloseIdleConnections()
		}
	})
}

// post sends form to the bridge the way Twilio requests target (the URL it
// was given): signed over target, sent to BridgeURL with target's path and
// query. It returns the status and the start of the body.
func (t *Twilio) post(ctx context.Context, target *url.URL, form url.Values) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, webhookTimeout)
	defer cancel()
	origin := target.Scheme + "://" + target.Host
	resp, err := PostForm(ctx, t.client, t.bridge.String(), origin, target.RequestURI(), t.cfg.AuthToken, form)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTwiMLBody+1))
	if err != nil {
		return 0, nil, fmt.Errorf("twiliotest: read answer of %s: %w", target.Path, err)
	}
	if len(body) > maxTwiMLBody {
		return 0, nil, fmt.Errorf("twiliotest: answer of %s is over %d bytes", target.Path, maxTwiMLBody)
	}
	return resp.StatusCode, body, nil
}

// fetch requests target like a TwiML webhook and parses the document.
func (t *Twilio) fetch(ctx context.Context, target *url.URL, form url.Values) (*document, error) {
	status, body, err := t.post(ctx, target, form)
	if err != nil {
		return nil, err
	}
	if status/100 != 2 {
		return nil, &WebhookError{URL: target.String(), Status: status, Body: clipBody(body)}
	}
	doc, err := parseTwiML(body)
	if err != nil {
		return nil, fmt.Errorf("%w (from %s)", err, target.Path)
	}
	return doc, nil
}

func clipBody(b []byte) string {
	const n = 1024
	if len(b) > n {
		b = b[:n]
	}
	return strings.TrimSpace(string(b))
}

// applyUpdate plays a REST call update (POST .../Calls/{Sid}.json) of a call
// placed here; the REST fake calls it and answers with what it returns.
func (t *Twilio) applyUpdate(callSID string, form url.Values) (string, *apiError, bool) {
	t.mu.Lock()
	c := t.calls[callSID]
	_, ended := t.ended[callSID]
	t.mu.Unlock()
	notLive := &apiError{http.StatusBadRequest, 21220, "Call is not in-progress. Cannot redirect."}
	switch {
	case ended:
		return "", notLive, true
	case c == nil:
		return "", nil, false
	}
	cmd, err := parseUpdate(form)
	if err != nil {
		return "", &apiError{http.StatusBadRequest, 12100, "Document parse failure: " + err.Error()}, true
	}
	if c.Outcome() != "" {
		return "", notLive, true
	}
	select {
	case c.cmds <- cmd:
	default:
		return "", &apiError{http.StatusTooManyRequests, 20429, "Too Many Requests"}, true
	}
	if cmd.kind == cmdStatusCompleted {
		return "completed", nil, true
	}
	return "in-progress", nil, true
}

// parseUpdate turns the form of a call update into a command for the call
// loop. Twiml wins over Status; Status=canceled does not affect a call in progress; Url is not
// simulated (recorded only).
func parseUpdate(form url.Values) (simCmd, error) {
	switch {
	case form.Get("Twiml") != "":
		doc, err := parseTwiML([]byte(form.Get("Twiml")))
		if err != nil {
			return simCmd{}, err
		}
		return simCmd{kind: cmdTwiML, doc: doc}, nil
	case form.Get("Status") == "completed":
		return simCmd{kind: cmdStatusCompleted}, nil
	case form.Get("Status") != "":
		return simCmd{kind: cmdNote, note: "REST update: Status=" + form.Get("Status") + " (ignored: the call is in progress)"}, nil
	case form.Get("Url") != "":
		return simCmd{kind: cmdNote, note: "REST update: Url (not simulated)"}, nil
	}
	return simCmd{kind: cmdNote, note: "REST update: nothing to do"}, nil
}

func (t *Twilio) register(c *SimCall) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrTwilioClosed
	}
	if _, dup := t.calls[c.sid]; dup {
		return fmt.Errorf("twiliotest: call %s is already live", c.sid)
	}
	t.calls[c.sid] = c
	return nil
}

// unregister forgets a live call; ended marks it as over for the REST fake.
func (t *Twilio) unregister(sid string, ended bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, live := t.calls[sid]; live && ended {
		t.ended[sid] = struct{}{}
	}
	delete(t.calls, sid)
}
