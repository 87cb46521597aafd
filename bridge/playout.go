package bridge

import "time"

// bytesPerMs is the rate of G.711 μ-law at 8 kHz: one byte per sample.
const bytesPerMs = 8

// byteTime is how long one μ-law byte plays.
const byteTime = time.Millisecond / bytesPerMs

// playout follows what Twilio has played of the model's audio, from the
// mark sent after every chunk and Twilio's echo of each when the audio
// before it has played. Twilio plays its buffer in order and in real time,
// so between two echoes the position advances at 8 bytes per ms. Owned by
// the call loop; time is passed in so that the arithmetic is testable.
//
// Every chunk carries its mark (the contract of DESIGN 1.6 and of issue 3:
// the barge-in, the waits for an announcement and the pacing rely on
// Twilio's echo of exactly the chunk they are about; batching media and
// mark into one write keeps the cost of the extra message low, see
// BENCHMARKS.md), so there is no unmarked audio to follow.
type playout struct {
	marks    []pendingMark // sent, not yet echoed, in send order
	items    []itemAudio   // items with audio sent; the latest last
	anchor   playPos       // the last play position known for sure
	cleared  uint64        // echoes of marks up to this one were caused by a clear
	unplayed int           // bytes sent whose mark has not been echoed
}

type pendingMark struct {
	seq  uint64
	item string
	end  int // bytes of item sent up to this mark
	n    int // bytes of the chunk before this mark
}

type itemAudio struct {
	id   string
	sent int // bytes the model sent for the item (and we forwarded)
}

// playPos says that at time at, bytes of item had played.
type playPos struct {
	item  string
	bytes int
	at    time.Time
	ok    bool
}

// truncation is where an interrupted item was cut: its audio heard.
type truncation struct {
	item       string
	audioEndMs int
}

// sent records a chunk of n bytes of item forwarded to Twilio, followed by
// mark seq.
func (p *playout) sent(item string, n int, seq uint64, now time.Time) {
	it := p.item(item)
	if p.idle() {
		// Twilio's buffer was idle: this chunk starts playing now.
		p.anchor = playPos{item: item, bytes: it.sent, at: now, ok: true}
	}
	it.sent += n
	p.unplayed += n
	p.marks = append(p.marks, pendingMark{seq: seq, item: item, end: it.sent, n: n})
}

func (p *playout) item(id string) *itemAudio {
	for i := range p.items {
		if p.items[i].id == id {
			return &p.items[i]
		}
	}
	p.items = append(p.items, itemAudio{id: id})
	return &p.items[len(p.items)-1]
}

// echo records Twilio's echo of mark seq at now and reports whether it
// counted: echoes caused by a clear, and unknown marks, do not.
func (p *playout) echo(seq uint64, now time.Time) bool {
	if seq <= p.cleared {
		return false
	}
	i := 0
	for i < len(p.marks) && p.marks[i].seq != seq {
		i++
	}
	if i == len(p.marks) {
		return false
	}
	m := p.marks[i]
	// Earlier marks cannot still be pending: the buffer plays in order.
	for _, done := range p.marks[:i+1] {
		p.unplayed -= done.n
	}
	p.marks = append(p.marks[:0], p.marks[i+1:]...)
	p.anchor = playPos{item: m.item, bytes: m.end, at: now, ok: true}
	if len(p.marks) > 0 && p.marks[0].item != m.item {
		// m ended its item; the next item starts playing now.
		p.anchor = playPos{item: p.marks[0].item, at: now, ok: true}
	}
	p.prune()
	return true
}

// prune forgets items that have nothing left to play, except the latest.
func (p *playout) prune() {
	keep := p.items[:0]
	for i, it := range p.items {
		if i == len(p.items)-1 || p.pending(it.id) {
			keep = append(keep, it)
		}
	}
	p.items = keep
}

func (p *playout) pending(item string) bool {
	for _, m := range p.marks {
		if m.item == item {
			return true
		}
	}
	return false
}

// idle reports whether Twilio has played everything we sent (as far as
// echoes tell).
func (p *playout) idle() bool { return len(p.marks) == 0 }

// interrupt is the barge-in: when audio is still playing it returns where to
// cut each item that still has audio in Twilio's buffer (the one playing
// first, with the audio heard; items queued behind it at 0) and forgets it
// all, so that the echoes the clear causes are ignored. It returns nil when
// nothing is playing.
//
// heard = bytes at the last echoed mark of the item (or 0 at its start) +
// the time since then at 8 bytes/ms, capped at the bytes sent before the
// next pending mark (the echo of which has not come) and at the bytes sent
// for the item.
func (p *playout) interrupt(now time.Time) []truncation {
	if p.idle() {
		return nil
	}
	first := p.marks[0]
	heard := 0
	if p.anchor.ok && p.anchor.item == first.item {
		heard = p.anchor.bytes + int(now.Sub(p.anchor.at)/byteTime)
	}
	heard = min(max(heard, 0), first.end, p.item(first.item).sent)
	cuts := []truncation{{item: first.item, audioEndMs: heard / bytesPerMs}}
	for _, m := range p.marks[1:] {
		if m.item != cuts[len(cuts)-1].item {
			cuts = append(cuts, truncation{item: m.item})
		}
	}
	p.cleared = p.marks[len(p.marks)-1].seq
	p.marks = p.marks[:0]
	p.items = p.items[:0]
	p.anchor = playPos{}
	p.unplayed = 0
	return cuts
}

// heldAudio keeps caller audio (ready-made model append events) while the
// model is not ready, up to limit bytes of audio; beyond that the oldest is
// dropped and counted. Owned by the call loop.
type heldAudio struct {
	audioQueue
	limit        int
	dropped      int // frames dropped since the last drain
	droppedBytes int
}

// push holds a chunk and hands the buffers evicted to make room to evicted.
// The newest chunk is always kept.
func (h *heldAudio) push(c heldChunk, evicted func(*[]byte)) {
	h.audioQueue.push(c)
	for h.bytes > h.limit && h.len() > 1 {
		old := h.pop()
		h.dropped++
		h.droppedBytes += old.audio
		evicted(old.buf)
	}
}
