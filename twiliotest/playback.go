package twiliotest

import "time"

// byteTime is how long one μ-law byte plays: 8000 samples per second, one byte
// per sample, so 8 bytes per millisecond.
const byteTime = time.Second / 8000

// ClearInfo describes one `clear` the server sent, as the player saw it.
type ClearInfo struct {
	// At is when the clear was received.
	At time.Time
	// PlayedBytesOfSinceLastIdle is how many bytes played since the play
	// buffer last went from empty to non-empty (the start of the utterance
	// being interrupted). If the buffer was already empty at the clear, it is
	// the length of the last utterance played.
	PlayedBytesOfSinceLastIdle int
	// PlayedBytesTotal is how many bytes played on the whole call so far.
	PlayedBytesTotal int
	// ClearedBytes is how much buffered audio the clear discarded unplayed.
	ClearedBytes int
	// PendingMarks are the names of the marks that were waiting behind
	// audio and were echoed because of this clear, in order.
	PendingMarks []string
}

// pendingMark is a mark waiting for the audio before it to play.
type pendingMark struct {
	name string
	at   int // how many bytes must have played for the mark to be due
}

// player models Twilio's outbound audio buffer: audio plays in real time at
// 8 bytes per ms; a mark is due when all the audio received before it has
// played; clear discards the buffer and makes every pending mark due. Time is
// passed in so that tests can drive it. Not safe for concurrent use: owned by
// the Call under its mutex.
type player struct {
	discard   bool   // keep counts only, not the audio (CallConfig.DiscardAudio)
	received  []byte // every outbound media payload, concatenated (unless discard)
	played    []byte // the part of received that actually played (unless discard)
	recvLen   int    // bytes received
	pos       int    // the first pos bytes received have been played or cleared
	marks     []pendingMark
	last      time.Time     // when the play position was last brought up to date
	carry     time.Duration // play time not yet worth a whole byte
	sinceIdle int
	total     int
	clears    []ClearInfo
}

// advance plays the audio due by now and returns the names of the marks that
// became due, in order.
func (p *player) advance(now time.Time) []string {
	buffered := p.recvLen - p.pos
	if buffered == 0 || now.Before(p.last) {
		p.last, p.carry = maxTime(p.last, now), 0
		return p.dueMarks()
	}
	budget := now.Sub(p.last) + p.carry
	n := int(budget / byteTime)
	if n >= buffered {
		n, p.carry = buffered, 0 // the buffer ran dry before now: idle time is not owed
	} else {
		p.carry = budget - time.Duration(n)*byteTime
	}
	if !p.discard {
		p.played = append(p.played, p.received[p.pos:p.pos+n]...)
	}
	p.pos += n
	p.sinceIdle += n
	p.total += n
	p.last = now
	return p.dueMarks()
}

// addAudio appends media received at now to the play buffer.
func (p *player) addAudio(now time.Time, b []byte) []string {
	echo := p.advance(now)
	if p.pos == p.recvLen {
		p.sinceIdle = 0 // a new utterance starts playing now
	}
	p.recvLen += len(b)
	if !p.discard {
		p.received = append(p.received, b...)
	}
	return echo
}

// addMark queues a mark behind the audio received so far.
func (p *player) addMark(now time.Time, name string) []string {
	echo := p.advance(now)
	p.marks = append(p.marks, pendingMark{name: name, at: p.recvLen})
	return append(echo, p.dueMarks()...)
}

// clear discards the buffered audio and returns every pending mark.
func (p *player) clear(now time.Time) []string {
	echo := p.advance(now)
	info := ClearInfo{
		At:                         now,
		PlayedBytesOfSinceLastIdle: p.sinceIdle,
		PlayedBytesTotal:           p.total,
		ClearedBytes:               p.recvLen - p.pos,
		PendingMarks:               []string{},
	}
	for _, m := range p.marks {
		info.PendingMarks = append(info.PendingMarks, m.name)
	}
	p.clears = append(p.clears, info)
	p.pos = p.recvLen
	p.marks = nil
	p.carry = 0
	return append(echo, info.PendingMarks...)
}

// dueMarks pops the marks whose audio has all played.
func (p *player) dueMarks() []string {
	var names []string
	for len(p.marks) > 0 && p.marks[0].at <= p.pos {
		names = append(names, p.marks[0].name)
		p.marks = p.marks[1:]
	}
	return names
}

// nextMarkDue reports when the first pending mark will be due if nothing
// else arrives.
func (p *player) nextMarkDue() (time.Time, bool) {
	if len(p.marks) == 0 {
		return time.Time{}, false
	}
	wait := time.Duration(p.marks[0].at-p.pos)*byteTime - p.carry
	return p.last.Add(wait), true
}

// buffered is how many received bytes have not played yet.
func (p *player) buffered() int { return p.recvLen - p.pos }

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
