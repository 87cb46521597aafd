package realtime

import "github.com/vivi/bridge/bridge/internal/jsonscan"

// ScanAudioDelta is the fast path of the audio stream: it reads the type of
// a server event and, when it is response.output_audio.delta, its item_id and
// delta, without decoding the rest and without allocating. The slices point
// into msg. It agrees with ParseEvent (encoding/json into ServerEvent) on
// every event it accepts: keys match case-insensitively as encoding/json
// does, every member of ServerEvent must have a type encoding/json takes
// without error, and the whole event must be valid JSON. ok is false when
// msg is not an audio delta or cannot be read on the fast path (escapes in
// a needed string, a repeated or non-ASCII key, an object member); the
// caller then uses ParseEvent. The delta is not validated here; see
// jsonscan.Base64.
func ScanAudioDelta(msg []byte) (typ, itemID, delta []byte, ok bool) {
	var s jsonscan.Scanner
	s.Reset(msg)
	if !s.Object() {
		return nil, nil, nil, false
	}
	var seen uint16 // one bit per member of ServerEvent
	var buf [len("audio_start_ms")]byte
	for {
		k, more := s.Key()
		if !more {
			break
		}
		name, ascii := jsonscan.Fold(buf[:], k)
		if !ascii {
			return typ, nil, nil, false // might fold onto a field name
		}
		f, kind := eventField(name)
		if seen&f != 0 { // repeated: encoding/json's rule decides
			return typ, nil, nil, false
		}
		seen |= f
		var good, plain bool
		switch {
		case f == evType:
			typ, plain, good = s.String()
			if !good || !plain {
				return nil, nil, nil, false
			}
			if string(typ) != TypeAudioDelta {
				return typ, nil, nil, false
			}
		case f == evItemID:
			itemID, plain, good = s.String()
			good = good && plain
		case f == evDelta:
			delta, plain, good = s.String()
			good = good && plain
		case kind == kindString:
			good = s.Null() || skipString(&s)
		case kind == kindInt:
			good = s.Null() || s.Int()
		case kind == kindObject:
			good = s.Null() // an error, item, response or session: decoded
		default:
			good = s.Skip()
		}
		if !good {
			return typ, nil, nil, false
		}
	}
	if !s.Done() || string(typ) != TypeAudioDelta || len(itemID) == 0 || delta == nil {
		return typ, nil, nil, false
	}
	return typ, itemID, delta, true
}

func skipString(s *jsonscan.Scanner) bool {
	_, _, ok := s.String()
	return ok
}

// The members of ServerEvent the fast path reads, as bits of a set.
const (
	evType uint16 = 1 << iota
	evItemID
	evDelta
)

// The JSON types of ServerEvent's members.
const (
	kindNone = iota // not a member: encoding/json ignores it
	kindString
	kindInt
	kindObject
)

// eventFields lists ServerEvent's members by folded JSON name, each with
// its kind; TestEventFieldsCoverServerEvent keeps it in step with the type.
var eventFields = [...]struct {
	name string
	kind int
}{
	{"type", kindString}, {"item_id", kindString}, {"delta", kindString},
	{"event_id", kindString}, {"response_id", kindString}, {"call_id", kindString},
	{"name", kindString}, {"arguments", kindString}, {"transcript", kindString},
	{"audio_start_ms", kindInt}, {"audio_end_ms", kindInt},
	{"error", kindObject}, {"item", kindObject}, {"response", kindObject}, {"session", kindObject},
}

// eventField returns the bit and kind of the ServerEvent member a folded
// key names, or 0 and kindNone.
func eventField(folded []byte) (uint16, int) {
	for i := range eventFields {
		if eventFields[i].name == string(folded) {
			return 1 << i, eventFields[i].kind
		}
	}
	return 0, kindNone
}

// AppendInputAudio appends the input_audio_buffer.append event carrying the
// base64 payload to dst. payload must already be checked to be base64 (see
// jsonscan.Base64), which makes it safe inside a JSON string as is.
func AppendInputAudio(dst, payload []byte) []byte {
	dst = append(dst, `{"type":"input_audio_buffer.append","audio":"`...)
	dst = append(dst, payload...)
	return append(dst, `"}`...)
}
