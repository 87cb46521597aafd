package bridge

// heldChunk is one message of audio waiting in a call: a model append event
// of caller audio (item empty) or a Twilio media message of agent audio
// (without its mark).
type heldChunk struct {
	buf   *[]byte
	item  string
	audio int // audio bytes it carries
}

// audioQueue is a FIFO of held chunks and the audio bytes they carry; the
// caller's hold (heldAudio) and the agent's (pacing) are both one. Owned by
// the call loop. Popped slots are reused: the slice is compacted once more
// than half of it is consumed, so a long call does not grow it.
type audioQueue struct {
	chunks []heldChunk
	head   int
	bytes  int
}

func (q *audioQueue) len() int { return len(q.chunks) - q.head }

func (q *audioQueue) push(c heldChunk) {
	if q.head > 64 && q.head > len(q.chunks)/2 {
		n := copy(q.chunks, q.chunks[q.head:])
		clear(q.chunks[n:])
		q.chunks, q.head = q.chunks[:n], 0
	}
	q.chunks = append(q.chunks, c)
	q.bytes += c.audio
}

// peek returns the oldest chunk; the queue must not be empty.
func (q *audioQueue) peek() *heldChunk { return &q.chunks[q.head] }

// pop removes and returns the oldest chunk; the queue must not be empty.
func (q *audioQueue) pop() heldChunk {
	c := q.chunks[q.head]
	q.chunks[q.head] = heldChunk{}
	q.head++
	q.bytes -= c.audio
	if q.head == len(q.chunks) {
		q.chunks, q.head = q.chunks[:0], 0
	}
	return c
}

// drain returns the held chunks in order and empties the queue. The
// returned slice is valid until the next push.
func (q *audioQueue) drain() []heldChunk {
	out := q.chunks[q.head:]
	q.chunks, q.head, q.bytes = q.chunks[:0], 0, 0
	return out
}
