package bridge

// Pacing of the model's audio towards Twilio. The model streams faster than
// real time (a whole answer in a few seconds, or, misbehaving, 50 times
// real time without end); Twilio buffers whatever it gets. The bridge sends
// at most aheadLimit of audio that Twilio has not confirmed playing (by the
// echo of its marks) and holds the rest, up to holdLimit, in the call's
// agentHold; a barge-in clears Twilio's buffer and drops the hold at once.
const (
	// maxMediaBytes is the most audio one media message to Twilio carries:
	// 960 bytes, 120 ms, six of Twilio's own 20 ms frames. A larger delta
	// is split. 960 is a multiple of 3, so its base64 (1280 characters)
	// splits on character boundaries with no re-encoding and no padding in
	// the middle; the model's usual deltas (about 100 ms) pass unchanged.
	maxMediaBytes = 960
	maxMediaB64   = maxMediaBytes / 3 * 4
	// aheadLimit is how far the audio sent may run ahead of what Twilio
	// has played: 1.5 s keeps its buffer fed across an echo's round trip
	// and a model's pause, and a barge-in never has more to clear.
	aheadLimit = 1500 * bytesPerMs
	// holdLimit bounds the audio held in the call for later: 60 s, more
	// than any answer an agent should give in one go (a few hundred KB a
	// call at most). Beyond it the newest audio is dropped, counted and
	// recorded: what has been held plays in order, without a gap in it.
	holdLimit = 60 * 1000 * bytesPerMs
)

// agentHold is the FIFO of agent audio held back by pacing; owned by the
// loop.
type agentHold struct{ audioQueue }

// push holds c unless that would exceed holdLimit (false: the caller drops it).
func (h *agentHold) push(c heldChunk) bool {
	if h.bytes+c.audio > holdLimit {
		return false
	}
	h.audioQueue.push(c)
	return true
}

// canSend reports whether n more bytes may go to Twilio now: always when
// Twilio has everything played, else within aheadLimit.
func (p *playout) canSend(n int) bool { return p.unplayed == 0 || p.unplayed+n <= aheadLimit }
