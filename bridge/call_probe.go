package bridge

import "time"

// Liveness probes (issue 9). Twilio requests the <Connect action> right
// after it closed the media stream's websocket, so "the call loop has not
// seen a close yet" proves nothing: the close may be on its way. A stream is
// answered live only once the loop handles an inbound Twilio frame that was
// read after the probe arrived (Twilio sends media every 20 ms on a live
// stream), within a bound; a close, the end of the call or the bound passing
// answers not live.

// probeWait is one pending probe.
type probeWait struct {
	reply    chan<- bool // buffered: the loop never blocks on it
	skip     int         // frames already queued when the probe arrived: not proof
	deadline time.Time
}

// probes are the pending probes of a call; owned by the loop. waiting is
// nil when none is pending, so the per-frame cost is a nil check.
type probes struct {
	waiting []probeWait
	timer   *time.Timer // fires at the first pending deadline
}

// add registers a probe answered on reply; queued is the number of Twilio
// messages already queued for the loop (read before the probe arrived).
func (p *probes) add(reply chan<- bool, queued int, window time.Duration, now time.Time) {
	p.waiting = append(p.waiting, probeWait{reply: reply, skip: queued, deadline: now.Add(window)})
	if len(p.waiting) == 1 {
		p.arm(now)
	}
}

// frame is called for each inbound Twilio frame the loop handled while the
// call goes on: a probe that has seen its queued frames pass answers live.
func (p *probes) frame() {
	kept := p.waiting[:0]
	for _, w := range p.waiting {
		if w.skip == 0 {
			w.reply <- true
			continue
		}
		w.skip--
		kept = append(kept, w)
	}
	p.set(kept)
}

// expire answers not live the probes whose bound passed at now.
func (p *probes) expire(now time.Time) {
	kept := p.waiting[:0]
	for _, w := range p.waiting {
		if !now.Before(w.deadline) {
			w.reply <- false
			continue
		}
		kept = append(kept, w)
	}
	p.set(kept)
}

// fail answers every pending probe not live (the stream closed or the call
// ends).
func (p *probes) fail() {
	for _, w := range p.waiting {
		w.reply <- false
	}
	p.set(nil)
}

func (p *probes) set(kept []probeWait) {
	if len(kept) == 0 {
		p.waiting = nil
		if p.timer != nil {
			p.timer.Stop()
		}
		return
	}
	p.waiting = kept
}

// arm sets the timer to the first pending deadline (probes share one
// window, so the first is the earliest).
func (p *probes) arm(now time.Time) {
	d := p.waiting[0].deadline.Sub(now)
	if p.timer == nil {
		p.timer = time.NewTimer(d)
		return
	}
	p.timer.Reset(d)
}

// timerC is the channel of the bound, nil when nothing is pending.
func (p *probes) timerC() <-chan time.Time {
	if p.waiting == nil || p.timer == nil {
		return nil
	}
	return p.timer.C
}

// onTimer expires the probes due at now and re-arms for the rest.
func (p *probes) onTimer(now time.Time) {
	p.expire(now)
	if p.waiting != nil {
		p.arm(now)
	}
}
