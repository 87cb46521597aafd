package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/vivi/bridge/analysis/chattest"
	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/delivery"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/store"
	"github.com/vivi/bridge/twiliotest"
)

// demoYAML is the built-in demo agent and channel: the same format as
// `vivi-bridge apply -f`.
const demoYAML = `
agents:
  - id: demo-dental
    name: Example Dental reception
    realtime: true
    voice: marin
    greeting: Thank you for calling Example Dental, this is the virtual receptionist. How can I help?
    instructions: You answer the phone for Example Dental. Be brief and friendly.
    transferDestinations:
      - {name: Front Desk, number: "2001", trigger: the caller asks for a person}
      - {name: Billing, number: "2002", trigger: invoices and payments}
    dtmf: {"0": Front Desk}
channels:
  - id: demo-pbx
    name: Example Dental PBX
    originHost: 203.0.113.10
    originProtocol: TLS
    extensions: ["1001"]
    agentId: demo-dental
    eventsUrl: %s
`

// The demo caller and PBX.
const (
	demoFrom     = "sip:+14155550100@203.0.113.10"
	demoTo       = "sip:1001@vivi.sip.twilio.com;transport=tls"
	demoSourceIP = "203.0.113.10"
)

// demo runs the whole system on this machine with no accounts: the memory
// store, the real bridge on loopback, an in-process fake of the realtime
// model and a fake Twilio (webhooks, Media Streams, REST API), and one
// simulated call, printed as a timeline.
func demo(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stdout)
	verbose := fs.Bool("v", false, "also print the bridge's logs (console format) on stderr")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return errConfig("demo: %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	log := zap.NewNop()
	if *verbose {
		l, err := newLogger(config{LogLevel: "info", LogFormat: "console"}, os.Stderr)
		if err != nil {
			return err
		}
		log = l
	}

	model := realtimetest.NewServer(realtimetest.Options{
		VAD:                true,
		Greeting:           realtimetest.Pattern(24000), // 3 s of greeting
		GreetingTranscript: "Thank you for calling Example Dental, this is the virtual receptionist. How can I help?",
		ChunkInterval:      20 * time.Millisecond, // a little faster than real time, like the real service
		Transcribe:         func([]byte) string { return "I'd like to book a cleaning next week." },
		Reply:              demoReply,
		// What a short spoken response costs on the real service.
		Usage: json.RawMessage(`{"total_tokens":1270,"input_tokens":1100,"output_tokens":170,` +
			`"input_token_details":{"text_tokens":700,"audio_tokens":400,"cached_tokens":640,"cached_tokens_details":{"text_tokens":512,"audio_tokens":128}},` +
			`"output_token_details":{"text_tokens":40,"audio_tokens":130}}`),
	})
	defer model.Close()

	// The post-call analysis asks a fake of the chat completions API, and
	// the channel's events go to a receiver in this process.
	chat := chattest.New()
	defer chat.Close()
	events := newDemoReceiver()
	defer events.Close()

	ln, err := listen("127.0.0.1:0")
	if err != nil {
		return err
	}
	public := "http://" + ln.Addr().String()
	const accountSID, authToken = "ACdemo00000000000000000000000000", "demoauthtoken0000000000000000000"
	tw := twiliotest.NewTwilio(twiliotest.SimConfig{BridgeURL: public, PublicURL: public, AccountSID: accountSID, AuthToken: authToken})
	defer tw.Close()
	tw.SetReferOutcome(func(string, string) twiliotest.ReferOutcome {
		return twiliotest.ReferOutcome{CallStatus: "busy", ReferSIPCode: "202", NotifySIPCode: "486"}
	})

	c := config{
		PublicURL: public, TwilioAccountSID: accountSID, TwilioAuthToken: authToken,
		TwilioAPIBaseURL: tw.REST().URL(), ValidateSignatures: true,
		OpenAIAPIKey: realtimetest.DefaultAPIKey, RealtimeURL: model.URL(), RealtimeModel: "gpt-realtime",
		SIPDomain: "vivi.sip.twilio.com", StreamTokenSecret: randomHex(32), AdminToken: randomHex(16),
		MaxCalls: 10, ShutdownGrace: 5 * time.Second, PodID: "demo-pod",
		OpenAIBaseURL: chat.URL, SummaryModel: "gpt-4o-mini", AnalysisTimeout: 10 * time.Second,
		EventsAllowPrivate: true, EventsRetryHorizon: time.Hour, EventsWorkers: 4,
	}
	st := store.NewMemory(store.Options{Outbox: delivery.Entries})
	prov, err := channel.NewProvisioner(channel.ProvisionerConfig{Repo: st, Resolver: &channel.Resolver{}, SIPDomain: c.SIPDomain, AllowPrivateEvents: true})
	if err != nil {
		return err
	}
	cfgFile, err := channel.ParseConfig(strings.NewReader(fmt.Sprintf(demoYAML, events.URL)))
	if err != nil {
		return err
	}
	if _, err := prov.Apply(ctx, cfgFile); err != nil {
		return fmt.Errorf("demo config: %w", err)
	}

	srvCtx, stopServer := context.WithCancel(context.WithoutCancel(ctx))
	served := make(chan error, 1)
	go func() { served <- runServer(srvCtx, c, log, appDeps{store: st}, ln) }()
	serverUp := true
	stop := func() error {
		if !serverUp {
			return nil
		}
		serverUp = false
		stopServer()
		return <-served
	}
	defer stop()
	if err := waitReady(ctx, public); err != nil {
		return err
	}

	start := time.Now()
	sim, err := runDemoCall(ctx, tw, model)
	if err != nil {
		return err
	}
	// The analysis and the call events follow the call, off its path.
	if err := events.waitFor(ctx, sim.CallSID(), "call.analyzed"); err != nil {
		return fmt.Errorf("demo: waiting for the post-call analysis: %w", err)
	}
	// The call is over for Twilio; the bridge may still be tearing it down.
	// Stopping the server drains it: runServer returns once every call has
	// written the end of its session, so the record read below is final.
	if err := stop(); err != nil {
		return fmt.Errorf("demo: stopping the bridge: %w", err)
	}
	s, err := st.Session(ctx, sim.CallSID())
	if err != nil {
		return err
	}
	printDemo(stdout, start, sim, s, model)
	printPostCall(stdout, s, events.received())
	return nil
}

// demoReply is the fake model's side of the conversation.
func demoReply(_ *realtimetest.Conn, userText string) realtimetest.Response {
	switch {
	case strings.Contains(userText, "transfer to Front Desk failed"):
		return realtimetest.Response{Audio: realtimetest.Pattern(8000), Transcript: "I'm sorry, the front desk is busy right now. Can I take a message, or help with anything else?"}
	case strings.Contains(userText, "pressed 5"):
		return realtimetest.Response{Audio: realtimetest.Pattern(4000), Transcript: "You pressed 5. Press 0 at any time to reach the front desk."}
	case strings.Contains(userText, "cleaning"):
		return realtimetest.Response{Audio: realtimetest.Pattern(8000), Transcript: "Sure, I can book a cleaning. Which day suits you?"}
	default:
		return realtimetest.Response{Audio: realtimetest.Pattern(4000), Transcript: "Let me help you with that."}
	}
}

// runDemoCall plays the caller: greeting, speech that barges in, a digit
// for the model, a digit bound to a transfer that the PBX answers busy, the
// resumed conversation, and the agent's goodbye with end_call.
func runDemoCall(ctx context.Context, tw *twiliotest.Twilio, model *realtimetest.Server) (*twiliotest.SimCall, error) {
	step := func(what string, err error) error {
		if err != nil {
			return fmt.Errorf("demo: %s: %w", what, err)
		}
		return nil
	}
	call, err := tw.PlaceCall(ctx, twiliotest.CallParams{From: demoFrom, To: demoTo, SourceIP: demoSourceIP})
	if err := step("place call", err); err != nil {
		return nil, err
	}
	if r := call.Rejected(); r != "" {
		return nil, fmt.Errorf("demo: the bridge rejected the call (%s)", r)
	}
	stream, err := call.WaitStream(ctx, 1)
	if err := step("first stream", err); err != nil {
		return nil, err
	}
	conn, err := model.NextConn(ctx)
	if err := step("model connection", err); err != nil {
		return nil, err
	}
	// The greeting plays for a second, then the caller talks over it.
	if err := step("greeting", stream.WaitPlayedBytes(ctx, 8000)); err != nil {
		return nil, err
	}
	stream.Say(realtimetest.Tone(6400)) // 0.8 s of speech
	if _, err := conn.WaitEvent(ctx, "conversation.item.truncate", 1); err != nil {
		return nil, step("barge-in", err)
	}
	// The agent answers once the caller is silent (the model's VAD starts
	// that response itself); then the caller presses 5.
	if err := stream.WaitPlayedBytes(ctx, stream.PlayedBytes()+8000); err != nil {
		return nil, step("answer", err)
	}
	stream.Digit("5")
	if _, err := conn.WaitEvent(ctx, "response.create", 2); err != nil {
		return nil, step("digit 5", err)
	}
	if err := stream.WaitPlayedBytes(ctx, stream.PlayedBytes()+4000); err != nil {
		return nil, step("answer to 5", err)
	}
	// 0 is bound to the front desk: a transfer, which the PBX answers busy.
	stream.Digit("0")
	resumed, err := call.WaitStream(ctx, 2)
	if err := step("resumed stream", err); err != nil {
		return nil, err
	}
	conn2, err := model.NextConn(ctx)
	if err := step("resumed model connection", err); err != nil {
		return nil, err
	}
	if _, err := conn2.WaitEvent(ctx, "response.create", 1); err != nil {
		return nil, step("resumed response", err)
	}
	if err := resumed.WaitPlayedBytes(ctx, 4000); err != nil {
		return nil, step("resumed speech", err)
	}
	conn2.Speak("item_bye", realtimetest.Pattern(4000), "Goodbye, and thank you for calling.")
	conn2.CallFunction("end_call", "{}")
	select {
	case <-call.Done():
	case <-ctx.Done():
		return nil, fmt.Errorf("demo: waiting for the hang-up: %w", ctx.Err())
	}
	return call, nil
}

// printDemo prints what happened, merged from what fake Twilio did and the
// session record the bridge kept.
func printDemo(w io.Writer, start time.Time, call *twiliotest.SimCall, s *session.Session, model *realtimetest.Server) {
	type line struct {
		at        time.Time
		who, what string
	}
	var lines []line
	for _, e := range call.Events() {
		lines = append(lines, line{e.At, "twilio", e.What})
	}
	for _, e := range s.Timeline {
		lines = append(lines, line{e.At, "bridge", strings.TrimSpace(e.Type + " " + e.Detail)})
	}
	for _, t := range s.Transcript {
		lines = append(lines, line{t.At, t.Role, "“" + t.Text + "”"})
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].at.Before(lines[j].at) })

	fmt.Fprintf(w, "VIVI demo: one call from a PBX through fake Twilio, the real bridge and a fake realtime model\n")
	fmt.Fprintf(w, "call %s  channel %s  agent %s  from %s\n\n", s.CallSID, s.ChannelID, s.AgentID, s.From)
	for _, l := range lines {
		fmt.Fprintf(w, "%+8.3fs  %-7s %s\n", l.at.Sub(start).Seconds(), l.who, l.what)
	}
	fmt.Fprintf(w, "\ntransfers:\n")
	for _, t := range s.Transfers {
		fmt.Fprintf(w, "  %s via %s -> %s: %s (REFER %s, NOTIFY %s)\n", t.Destination, t.Via, t.URI, t.Status, t.ReferSIPCode, t.NotifySIPCode)
	}
	var appended, truncates int
	for _, c := range model.Conns() {
		for _, e := range c.Events() {
			switch e.Type {
			case "input_audio_buffer.append":
				appended++
			case "conversation.item.truncate":
				truncates++
			}
		}
	}
	streams := call.Streams()
	var played, clears int
	for _, st := range streams {
		played += st.PlayedBytes()
		clears += len(st.Clears())
	}
	fmt.Fprintf(w, "\nmedia: %d streams; the model got %d caller frames over %d connections; the caller heard %.1f s of agent audio; %d clear, %d truncate\n",
		len(streams), appended, len(model.Conns()), float64(played)/8000, clears, truncates)
	fmt.Fprintf(w, "outcome: session %s (%s); Twilio call %s\n", s.State, s.EndReason, call.Outcome())
}

// waitReady polls /readyz until the server answers.
func waitReady(ctx context.Context, base string) error {
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("demo: server not ready: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return hex.EncodeToString(b)
}
