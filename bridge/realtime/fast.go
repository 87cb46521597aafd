package realtime

import "github.com/vivi/bridge/bridge/internal/jsonscan"

// ScanAudioDelta is the fast path of the audio stream: it reads the type of
// a server event and, when it is response.output_audio.delta, its item_id and
// delta, without decoding the rest and without allocating. The slices point
// into msg. ok is false when msg is not an audio delta or cannot be read on
// the fast path (escapes, odd structure); the caller then uses ParseEvent.
// The delta is not validated here; see jsonscan.Base64.
func ScanAudioDelta(msg []byte) (typ, itemID, delta []byte, ok bool) {
	var s jsonscan.Scanner
	s.Reset(msg)
	if !s.Object() {
		return nil, nil, nil, false
	}
	for {
		k, more := s.Key()
		if !more {
			break
		}
		var v []byte
		var esc, good bool
		switch string(k) {
		case "type":
			if typ != nil { // repeated: encoding/json decides
				return nil, nil, nil, false
			}
			v, esc, good = s.String()
			if !good || esc {
				return nil, nil, nil, false
			}
			typ = v
			if string(typ) != TypeAudioDelta {
				return typ, nil, nil, false
			}
		case "item_id":
			if itemID != nil {
				return typ, nil, nil, false
			}
			v, esc, good = s.String()
			if !good || esc {
				return typ, nil, nil, false
			}
			itemID = v
		case "delta":
			if delta != nil {
				return typ, nil, nil, false
			}
			v, esc, good = s.String()
			if !good || esc {
				return typ, nil, nil, false
			}
			delta = v
		default:
			if !s.Skip() {
				return typ, nil, nil, false
			}
		}
	}
	if !s.Done() || string(typ) != TypeAudioDelta || itemID == nil || delta == nil {
		return typ, nil, nil, false
	}
	return typ, itemID, delta, true
}

// AppendInputAudio appends the input_audio_buffer.append event carrying the
// base64 payload to dst. payload must already be checked to be base64 (see
// jsonscan.Base64), which makes it safe inside a JSON string as is.
func AppendInputAudio(dst, payload []byte) []byte {
	dst = append(dst, `{"type":"input_audio_buffer.append","audio":"`...)
	dst = append(dst, payload...)
	return append(dst, `"}`...)
}
