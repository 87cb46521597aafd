package bridge

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/vivi/bridge/bridge/internal/wsframe"
	"github.com/vivi/bridge/session"
)

// Queue sizes. Every channel of a call is bounded; a full outgoing queue
// means its socket is stuck, which ends the call (Twilio) or the model
// connection (re-dialled), rather than buffering without bound.
const (
	inQueue     = 64   // reader -> loop, per socket
	twilioQueue = 1024 // loop -> Twilio writer (media+mark pairs, clears)
	modelQueue  = 1024 // loop -> model writer (10 s of held audio fits)
	twilioLimit = 256 << 10
)

// phase is where a call is in its set-up.
type phase int

const (
	awaitingStart phase = iota // websocket open, waiting for Twilio's start
	settingUp                  // token verified; claim and look-ups running
	live                       // accepted: the session is streaming
)

// outFrame is one queued write: buf holds one websocket message, or two when
// split > 0 (buf[:split] then buf[split:]). The writer returns buf to the pool.
type outFrame struct {
	buf   *[]byte
	split int
}

// call is one media stream. Fields below "owned by the loop" are touched only
// by the run goroutine; the rest is set before the goroutines start.
type call struct {
	srv    *Server
	cfg    *Config
	ctx    context.Context // cancelled at teardown; parent of all I/O
	cancel context.CancelFunc
	done   chan struct{} // closed at teardown: writers close their sockets
	stopCh chan struct{} // closed by Server.Shutdown when forced
	stopMu sync.Once
	wg     sync.WaitGroup // every goroutine of the call
	tw     *websocket.Conn
	twc    *wsframe.Conn // owns every frame of tw after the upgrade

	twIn    chan twilioMsg
	twOut   chan outFrame
	twDone  chan error
	modelIn chan modelMsg
	results chan func() // work finished off the loop, run on the loop

	frames  streamFrames  // set at start, before any model reader runs
	markSeq atomic.Uint64 // mark names; advanced by the model reader

	// sid is the call SID once the stream is accepted, for Server.deliver;
	// written by the loop, read by any goroutine.
	sid atomic.Pointer[string]

	// Set by the loop before done is closed, read by the Twilio writer after.
	closeCode int
	closeText string

	// owned by the loop
	log        *zap.Logger
	phase      phase
	startedAt  time.Time
	callSID    string
	streamSID  string
	claims     session.Claims
	agent      Agent
	from       string
	transcript []session.Turn
	note       string // told to the model once, at the first session.updated
	accepted   bool
	writer     *sessionWriter
	model      *modelConn
	gen        int
	redials    int
	greeted    bool
	held       heldAudio
	play       playout
	dropItems  []string // interrupted items whose late audio is dropped
	respActive bool
	respWanted bool // a response.create waits for the active response to end
	respAsked  bool // a response.create is outstanding (no response.created yet)
	tools      toolState
	hangup     speechWait
	ahead      agentHold       // agent audio held back by pacing (pacing.go)
	aheadDrop  string          // the last item whose audio the hold dropped
	byOperator bool            // the hang-up was an operator's, not the agent's end_call
	xferWait   speechWait      // a transfer waiting for the announcement to play
	xferReq    TransferRequest // the transfer xferWait is for
	xferCallID string          // its tool call, "" for DTMF or operator
	transfer   bool            // a transfer request is in flight (waiting or sent)
	transferOK bool            // a transfer was started: Twilio's stop is its effect
	endReason  string
	anomalies  map[string]int
	framesIn   int
	framesOut  int
	probes     probes           // liveness probes waiting for a fresh Twilio frame (call_probe.go)
	ms         modelState       // dials, backoff, drop budget, fallback (call_fault.go)
	rot        rotation         // the next model session (call_rotate.go)
	fence      int64            // the fencing token this stream took the call with (lease.go); 0 unknown
	leaseC     <-chan time.Time // the next lease renewal
	speaking   bool             // the caller speaks: speech_started without speech_stopped or a commit (call_rotate.go)
	// turnPending: the caller's turn was committed and its automatic
	// response not created yet; not a quiet moment (call_rotate.go).
	turnPending bool
	migr        migration     // the move of this call to another pod (call_migrate.go)
	migrateCh   chan struct{} // closed by the server to ask for the move
	migrateMu   sync.Once
	migratedIn  bool // this stream continues a call migrated from another pod
	// usage is this stream's running usage total, by model and use, and
	// unpriced the models the price table lacks (logged once) (usage.go).
	usage    []session.ModelUsage
	unpriced []string
}

func newCall(s *Server, ws *websocket.Conn, remote string) *call {
	ctx, cancel := context.WithCancel(s.cfg.BaseContext)
	c := &call{
		srv: s, cfg: &s.cfg, ctx: ctx, cancel: cancel, tw: ws, twc: newTwilioConn(ws, &s.cfg),
		done:      make(chan struct{}),
		stopCh:    make(chan struct{}),
		migrateCh: make(chan struct{}),
		twIn:      make(chan twilioMsg, inQueue),
		twOut:     make(chan outFrame, twilioQueue),
		twDone:    make(chan error, 1),
		modelIn:   make(chan modelMsg, inQueue),
		results:   make(chan func()),
		log:       s.log.With(zap.String("remote", remote)),
		anomalies: map[string]int{},
		closeCode: websocket.CloseNormalClosure,
	}
	c.held.limit = int(s.cfg.HoldAudio / byteTime)
	c.ms.drops = dropBudget{max: s.cfg.MaxRedials, window: s.cfg.RedialWindow}
	return c
}

// stop ends the call with reason shutdown; safe from any goroutine.
func (c *call) stop() { c.stopMu.Do(func() { close(c.stopCh) }) }

func (c *call) now() time.Time { return c.cfg.Now() }

// run is the call loop: it owns the call until it ends, then tears it down.
func (c *call) run() {
	c.startedAt = c.now()
	c.wg.Add(2)
	go c.readTwilio()
	go c.writeTwilio()
	startC := c.cfg.After(c.cfg.StartTimeout)
	for c.endReason == "" {
		if c.phase != awaitingStart {
			startC = nil
		}
		select {
		case <-c.ctx.Done():
			c.end(ReasonShutdown)
		case <-c.stopCh:
			c.end(ReasonShutdown)
		case m := <-c.twIn:
			c.onTwilio(m)
			if c.probes.waiting != nil && c.endReason == "" {
				c.probes.frame()
			}
		case err := <-c.twDone:
			c.onTwilioClosed(err)
		case m := <-c.modelIn:
			c.onModel(m)
		case f := <-c.results:
			f()
		case <-startC:
			c.reject(rejectNoStart, "media stream refused: no start message in time",
				zap.Float64("timeout_s", c.cfg.StartTimeout.Seconds()))
		case <-c.hangup.timerC():
			c.hangupNow("goodbye wait timed out")
		case <-c.xferWait.timerC():
			c.transferNow("announcement wait timed out")
		case <-c.probes.timerC():
			c.probes.onTimer(time.Now()) // monotonic, not cfg.Now: a bound, not a timestamp
		case <-c.ms.readyC:
			c.onReadyTimeout()
		case <-c.ms.retryC:
			c.onRetry()
		case <-c.ms.downC:
			c.onModelDown()
		case <-c.rot.at:
			c.onRotateTimer()
		case <-c.rot.readyC:
			c.onNextReadyTimeout()
		case <-c.rot.quietC:
			c.onQuietTimeout()
		case <-c.leaseTimerC():
			c.renewLease()
		case <-c.writerFenced():
			c.onFenced()
		case <-c.migrateC():
			c.onMigrateAsked()
		case <-c.migr.timerC():
			c.migr.late = true
		}
		c.tryMigrate()
	}
	c.teardown()
}

// end ends the call with reason; the first reason wins.
func (c *call) end(reason string) {
	if c.endReason != "" {
		return
	}
	if c.hangup.started && (reason == ReasonCallerHangup || reason == ReasonTwilioDisconnected) {
		reason = c.hangupReason() // Twilio's stop is the effect of our hang-up
	}
	if c.migr.started && (reason == ReasonCallerHangup || reason == ReasonTwilioDisconnected) {
		// Twilio's stop is the effect of our REST update. It may come before
		// the update's answer reaches the loop, so started (not done)
		// decides; a caller who hangs up meanwhile is ended by Twilio's
		// call status callback (the session is marked migrating).
		reason = ReasonMigrated
	}
	c.endReason = c.endByApology(reason)
}

// reject refuses a stream before it became a call: no session change, a
// close frame with a policy-violation code, and one log line saying why.
func (c *call) reject(label, msg string, fields ...zap.Field) {
	if c.endReason != "" {
		return
	}
	c.srv.metrics.rejected.WithLabelValues(label).Inc()
	c.log.Warn(msg, fields...)
	c.closeCode, c.closeText = websocket.ClosePolicyViolation, msg
	c.endReason = "rejected"
}

// teardown closes both sockets, writes the end of the session once and
// waits for every goroutine of the call.
func (c *call) teardown() {
	if c.endReason == ReasonModelDropped {
		c.closeCode, c.closeText = websocket.CloseInternalServerErr, "model unavailable"
	}
	c.probes.fail() // before done: a waiting ProbeStream reads its answer
	close(c.done)   // the writers close their sockets; readers then return
	c.cancel()      // in-flight dials, look-ups and requests
	c.closeModel()
	c.abortRotation("the call ended")
	if c.writer != nil {
		c.writer.finish(c.endMutation(c.endReason, c.now()))
	}
	c.wg.Wait()
	c.hangup.stop()
	c.xferWait.stop()
	for _, f := range c.held.drain() {
		c.srv.pool.put(f.buf)
	}
	c.dropHeldAudio()
	if !c.accepted {
		c.log.Info("media stream closed", zap.String("outcome", c.endReason))
		return
	}
	// A stream Twilio stops because of our transfer is a stream that ended,
	// not a call: the call goes on to the REFER's outcome. Twilio often
	// stops the stream before the REST update has even answered (the
	// transfer is still in flight on the loop then), so that counts too.
	label := c.endReason
	inFlight := c.transfer && c.xferWait.started
	if (c.transferOK || inFlight) && (label == ReasonCallerHangup || label == ReasonTwilioDisconnected) {
		label = labelTransferred
	}
	c.srv.metrics.ended.WithLabelValues(label).Inc()
	c.log.Info("call ended", zap.String("reason", c.endReason), zap.Bool("transferred", label == labelTransferred),
		zap.Float64("duration_s", c.now().Sub(c.startedAt).Seconds()),
		zap.Int("frames_in", c.framesIn), zap.Int("frames_out", c.framesOut),
		zap.Int("redials", c.redials))
}

// endMutation ends the session with reason, except when the session is
// being transferred (Twilio stops the stream to run the REFER: the refer
// outcome decides) or when another stream has taken the call over.
func (c *call) endMutation(reason string, now time.Time) mutation {
	if reason == ReasonMigrated || reason == ReasonFenced {
		return nil // the call goes on with another stream
	}
	streamSID := c.streamSID
	return func(s *session.Session) {
		if s.StreamSID != "" && s.StreamSID != streamSID {
			return
		}
		if s.State == session.Transferring && (reason == ReasonCallerHangup || reason == ReasonTwilioDisconnected) {
			s.Record(now, session.EventStreamStopped, "stopped by Twilio for the transfer")
			return
		}
		s.End(reason, now)
	}
}

// record queues a timeline event.
func (c *call) record(typ, detail string) {
	if c.writer == nil {
		return
	}
	now := c.now()
	c.writer.event(now, typ, detail)
}

// anomaly logs odd input once in a while (the first few, then every
// 1000th of a kind), so that a misbehaving peer cannot flood the logs.
func (c *call) anomaly(kind, msg string, fields ...zap.Field) {
	n := c.anomalies[kind] + 1
	c.anomalies[kind] = n
	if n <= 3 || n%1000 == 0 {
		c.log.Warn(msg, append(fields, zap.Int("count", n))...)
	}
}

// toTwilio queues a frame for Twilio; a full queue (Twilio not reading)
// ends the call instead of buffering without bound.
func (c *call) toTwilio(f outFrame) {
	select {
	case c.twOut <- f:
	default:
		c.srv.pool.put(f.buf)
		if c.endReason == "" {
			c.log.Warn("twilio is not reading (writer queue full): ending the call")
			c.end(ReasonTwilioDisconnected)
		}
	}
}

// toModelJSON queues a typed client event for the current model connection.
func (c *call) toModelJSON(v any) {
	if c.model == nil {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		c.log.Error("encode model event", zap.Error(err))
		return
	}
	c.toModel(&b)
}

// toModel queues one client event; a full queue means the model socket is
// stuck: it is dropped and re-dialled.
func (c *call) toModel(b *[]byte) {
	if c.model == nil {
		c.srv.pool.put(b)
		return
	}
	select {
	case c.model.out <- outFrame{buf: b}:
	default:
		c.srv.pool.put(b)
		c.log.Warn("model is not reading (writer queue full): reconnecting")
		c.closeModel()
		c.redial()
	}
}

// async runs work off the loop and its result (a func) back on the loop.
// work must honour ctx; the result is dropped if the call ended meanwhile.
// toLoop runs f on the loop, from another goroutine of the call; dropped
// once the call has ended.
func (c *call) toLoop(f func()) {
	select {
	case c.results <- f:
	case <-c.done:
	}
}

func (c *call) async(work func(ctx context.Context) func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f := work(c.ctx)
		select {
		case c.results <- f:
		case <-c.done:
		}
	}()
}
