package realtimetest

// silenceLevel is the |linear PCM| below which a sample counts as silence
// (about -48 dBFS; μ-law 0xFF and 0x7F decode to 0).
const silenceLevel = 128

// vadState is the simulated server VAD of a connection, owned by c.mu.
type vadState struct {
	speaking  bool
	lastVoice int    // session audio offset (bytes) at the end of the last voiced frame
	buf       []byte // the turn so far; while not speaking, the last prefix_padding_ms
}

// vadLocked runs the simulated server VAD over one appended frame, whose last
// byte is at session offset c.inputLen. A voiced frame starts speech
// (speech_started, which may interrupt the active response); silence_duration_ms
// of silence after speech ends it (speech_stopped, committed) and returns the
// turn to transcribe and answer.
func (c *Conn) vadLocked(frame []byte, tc turnConfig) *userTurn {
	v := &c.vad
	end := c.inputLen
	start := end - len(frame)
	prefix := tc.prefixMs * bytesPerMs
	v.buf = append(v.buf, frame...)
	if !v.speaking {
		if !voiced(frame) {
			if keep := prefix; len(v.buf) > keep {
				v.buf = append(v.buf[:0], v.buf[len(v.buf)-keep:]...)
			}
			return nil
		}
		v.speaking, v.lastVoice = true, end
		c.speechStartedLocked(max(0, start/bytesPerMs-tc.prefixMs), tc)
		return nil
	}
	if voiced(frame) {
		v.lastVoice = end
		return nil
	}
	if (end-v.lastVoice)/bytesPerMs < tc.silenceMs {
		return nil
	}
	itemID := c.speechStoppedLocked(end / bytesPerMs)
	turn := &userTurn{itemID: itemID, audio: v.buf, respond: tc.createResponse}
	c.vad = vadState{}
	return turn
}

// voiced reports whether at least a quarter of the μ-law samples of frame
// are louder than silenceLevel.
func voiced(frame []byte) bool {
	loud := 0
	for _, u := range frame {
		if s := ulawToLinear(u); s >= silenceLevel || s <= -silenceLevel {
			loud++
		}
	}
	return len(frame) > 0 && loud*4 >= len(frame)
}
