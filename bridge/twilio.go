package bridge

import (
	"encoding/json"
	"strconv"
	"sync/atomic"

	"github.com/vivi/bridge/bridge/internal/jsonscan"
	"github.com/vivi/bridge/bridge/realtime"
)

// twilioFrame is what the hot path reads of an inbound Twilio message; the
// slices point into the message.
type twilioFrame struct {
	event   []byte
	payload []byte // media.payload
	mark    []byte // mark.name
	digit   []byte // dtmf.digit
}

// scanTwilio reads event, media.payload, mark.name and dtmf.digit in one pass
// without allocating. It agrees with decodeTwilio (encoding/json into
// twilioMessage) on every message it accepts: keys match the fields
// case-insensitively as encoding/json does, every member of twilioMessage
// must have a type encoding/json takes without error, and the whole message
// must be valid JSON. ok is false when the message cannot be read on the
// fast path (malformed, a repeated or non-ASCII key, escapes in a needed
// string, a start object); decodeTwilio decides.
func scanTwilio(b []byte) (f twilioFrame, ok bool) {
	var s jsonscan.Scanner
	s.Reset(b)
	if !s.Object() {
		return f, false
	}
	var seen uint8 // one bit per member of twilioMessage
	var buf [len("streamsid")]byte
	for {
		k, more := s.Key()
		if !more {
			break
		}
		name, ascii := jsonscan.Fold(buf[:], k)
		if !ascii {
			return f, false // might fold onto a field name: encoding/json decides
		}
		// A repeated member leaves the message to encoding/json, whose
		// rule (the last one wins) is then the only one applied.
		bit := twilioField(name)
		if seen&bit != 0 {
			return f, false
		}
		seen |= bit
		switch bit {
		case fEvent:
			f.event, ok = scanString(&s)
		case fStreamSID:
			ok = s.Null() || scanAnyString(&s)
		case fStart:
			ok = s.Null() // a start is decoded whole on the slow path
		case fMedia:
			f.payload, ok = scanMember(&s, "payload")
		case fMark:
			f.mark, ok = scanMember(&s, "name")
		case fDTMF:
			f.digit, ok = scanMember(&s, "digit")
		default:
			ok = s.Skip()
		}
		if !ok {
			return f, false
		}
	}
	return f, s.Done() && f.event != nil
}

// The members of twilioMessage, as bits of a set.
const (
	fEvent uint8 = 1 << iota
	fStreamSID
	fStart
	fMedia
	fMark
	fDTMF
)

// twilioField returns the bit of the twilioMessage member a folded key
// names, or 0 for a key encoding/json ignores.
func twilioField(folded []byte) uint8 {
	switch string(folded) {
	case "event":
		return fEvent
	case "streamsid":
		return fStreamSID
	case "start":
		return fStart
	case "media":
		return fMedia
	case "mark":
		return fMark
	case "dtmf":
		return fDTMF
	}
	return 0
}

// scanString reads a string the caller uses as is: it must be plain.
func scanString(s *jsonscan.Scanner) ([]byte, bool) {
	v, plain, ok := s.String()
	return v, ok && plain
}

// scanAnyString reads a string the caller does not use.
func scanAnyString(s *jsonscan.Scanner) bool {
	_, _, ok := s.String()
	return ok
}

// scanMember reads the string member key (lower case) of the object at s,
// an object whose only field is key, as twilioMessage's media, mark and dtmf.
func scanMember(s *jsonscan.Scanner, key string) (v []byte, ok bool) {
	if !s.Object() {
		return nil, false
	}
	var buf [len("payload")]byte
	for {
		k, more := s.Key()
		if !more {
			return v, !s.Failed()
		}
		name, ascii := jsonscan.Fold(buf[:], k)
		switch {
		case !ascii:
			return nil, false
		case string(name) != key:
			if !s.Skip() {
				return nil, false
			}
		case v != nil: // repeated
			return nil, false
		default:
			if v, ok = scanString(s); !ok {
				return nil, false
			}
		}
	}
}

// twilioMessage is the full decoding of an inbound message: the slow path,
// for start and for whatever the scanner declined.
type twilioMessage struct {
	Event     string       `json:"event"`
	StreamSID string       `json:"streamSid"`
	Start     *twilioStart `json:"start"`
	Media     *struct {
		Payload string `json:"payload"`
	} `json:"media"`
	Mark *struct {
		Name string `json:"name"`
	} `json:"mark"`
	DTMF *struct {
		Digit string `json:"digit"`
	} `json:"dtmf"`
}

// twilioStart is the body of the start message.
type twilioStart struct {
	AccountSID       string            `json:"accountSid"`
	StreamSID        string            `json:"streamSid"`
	CallSID          string            `json:"callSid"`
	Tracks           []string          `json:"tracks"`
	CustomParameters map[string]string `json:"customParameters"`
	MediaFormat      struct {
		Encoding   string `json:"encoding"`
		SampleRate int    `json:"sampleRate"`
		Channels   int    `json:"channels"`
	} `json:"mediaFormat"`
}

// decodeTwilio is the slow path: encoding/json is the judge of malformed
// input. The returned frame's slices point into fresh strings.
func decodeTwilio(b []byte) (twilioFrame, *twilioMessage, error) {
	var m twilioMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return twilioFrame{}, nil, err
	}
	f := twilioFrame{event: []byte(m.Event)}
	if m.Media != nil {
		f.payload = []byte(m.Media.Payload)
	}
	if m.Mark != nil {
		f.mark = []byte(m.Mark.Name)
	}
	if m.DTMF != nil {
		f.digit = []byte(m.DTMF.Digit)
	}
	return f, &m, nil
}

// twilioToModel is the per-frame work of caller audio: it reads a Twilio
// message and, when it is media with a valid base64 payload, appends the
// model's input_audio_buffer.append event carrying the payload unchanged to
// dst and returns the number of audio bytes. ok is false for any other
// message (the caller looks at f; f.event is nil when the fast path could
// not read the message) and for a payload that is not base64.
func twilioToModel(dst, msg []byte) (out []byte, f twilioFrame, audio int, ok bool) {
	f, scanned := scanTwilio(msg)
	if !scanned {
		return dst, twilioFrame{}, 0, false
	}
	if string(f.event) != "media" {
		return dst, f, 0, false
	}
	n, valid := jsonscan.Base64(f.payload)
	if !valid {
		return dst, f, 0, false
	}
	return realtime.AppendInputAudio(dst, f.payload), f, n, true
}

// streamFrames holds the constant parts of the frames sent to one stream,
// built once when the stream starts so that each frame is a few appends.
type streamFrames struct {
	mediaHead []byte // {"event":"media","streamSid":"MZ..","media":{"payload":"
	markHead  []byte // {"event":"mark","streamSid":"MZ..","mark":{"name":"
	clear     []byte // {"event":"clear","streamSid":"MZ.."}
}

func newStreamFrames(streamSID string) streamFrames {
	sid, _ := json.Marshal(streamSID) // a JSON string: escaping whatever Twilio sent
	head := func(event string) []byte {
		b := append([]byte(`{"event":"`), event...)
		b = append(b, `","streamSid":`...)
		return append(b, sid...)
	}
	return streamFrames{
		mediaHead: append(head("media"), `,"media":{"payload":"`...),
		markHead:  append(head("mark"), `,"mark":{"name":"`...),
		clear:     append(head("clear"), '}'),
	}
}

// markPrefix starts every mark name we send; the rest is a sequence number,
// so that an echoed name parses back to a number without allocating.
const markPrefix = "m"

// appendMedia appends the media message carrying payload (checked base64).
func (sf *streamFrames) appendMedia(dst, payload []byte) []byte {
	dst = append(dst, sf.mediaHead...)
	dst = append(dst, payload...)
	return append(dst, `"}}`...)
}

// appendMark appends the mark message named after seq.
func (sf *streamFrames) appendMark(dst []byte, seq uint64) []byte {
	dst = append(dst, sf.markHead...)
	dst = append(dst, markPrefix...)
	dst = strconv.AppendUint(dst, seq, 10)
	return append(dst, `"}}`...)
}

// parseMark returns the sequence number of one of our mark names.
func parseMark(name []byte) (uint64, bool) {
	if len(name) < 2 || string(name[:1]) != markPrefix {
		return 0, false
	}
	var n uint64
	for _, c := range name[1:] {
		if c < '0' || c > '9' || n > (1<<63)/10 {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

// modelToTwilio is the per-event work of model audio: for a
// response.output_audio.delta with a valid base64 delta it appends the
// Twilio media message carrying the delta unchanged, then the mark message
// named after the next number of seq, to dst (empty). split is where the
// second message starts. itemID points into msg. ok is false for any other
// event (the caller decodes it); seq then stays as it was.
func (sf *streamFrames) modelToTwilio(dst, msg []byte, seq *atomic.Uint64) (out []byte, split int, mark uint64, itemID []byte, audio int, ok bool) {
	_, itemID, delta, scanned := realtime.ScanAudioDelta(msg)
	if !scanned {
		return dst, 0, 0, nil, 0, false
	}
	n, valid := jsonscan.Base64(delta)
	if !valid {
		return dst, 0, 0, nil, 0, false
	}
	dst = sf.appendMedia(dst, delta)
	split = len(dst)
	mark = seq.Add(1)
	return sf.appendMark(dst, mark), split, mark, itemID, n, true
}
