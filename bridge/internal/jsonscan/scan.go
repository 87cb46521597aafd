// Package jsonscan is the small hand-written JSON scanner of the audio hot
// path: it walks one JSON object and hands out raw string values as slices
// of the input, without allocating and without decoding anything it does not
// need.
//
// It checks the whole JSON grammar (RFC 8259) of everything it walks or
// skips, so that it never accepts a message encoding/json would reject. It
// is deliberately partial the other way: whatever it cannot take on the fast
// path (a needed string with escapes, a key that is not plain ASCII, nesting
// deeper than MaxDepth) fails the scan, and the caller falls back to
// encoding/json, which remains the judge.
//
// It is hand-written rather than github.com/valyala/fastjson: fastjson's
// Parse does not check escapes or number grammar (a separate Validate pass
// does), matches keys case-sensitively where encoding/json folds case (the
// folding and the type checks would stay ours), and builds a value tree the
// hot path does not need. Measured on a Twilio media frame with the checks
// agreement needs, fastjson (Validate + Parse + Visit) took twice the time
// of this scanner, both without allocating; the commit adding this note
// has the figures.
package jsonscan

import (
	"encoding/base64"
	"unicode/utf8"
)

// MaxDepth is the deepest nesting Skip walks; deeper input fails the scan
// (encoding/json allows more, so the caller's slow path decides). Real
// Twilio and model messages nest three levels at most.
const MaxDepth = 64

// Scanner walks a JSON document held in b. The zero value is unusable; use
// Reset. A Scanner is a value type meant to live on the stack.
type Scanner struct {
	b     []byte
	i     int
	bad   bool
	first bool // the next Key is the first of its object: no comma before it
}

// Reset makes s scan b from its start.
func (s *Scanner) Reset(b []byte) { s.b, s.i, s.bad, s.first = b, 0, false, false }

// Done reports whether the whole input was read without failure: nothing but
// white space follows the value walked.
func (s *Scanner) Done() bool {
	s.ws()
	return !s.bad && s.i == len(s.b)
}

// Failed reports whether the scan met something it could not read.
func (s *Scanner) Failed() bool { return s.bad }

func (s *Scanner) fail() bool { s.bad = true; return false }

func (s *Scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// Object consumes the '{' that opens an object.
func (s *Scanner) Object() bool {
	s.ws()
	if s.bad || s.i >= len(s.b) || s.b[s.i] != '{' {
		return s.fail()
	}
	s.i++
	s.first = true
	return true
}

// Key returns the next key of the object being walked and positions s on its
// value, or returns false at the closing '}' (or on failure, see Failed).
// A key with escapes fails the scan: encoding/json matches the unescaped
// key, which the fast path does not compute. Key must be called after Object
// and after each value has been consumed (String, Null, Object walk or Skip).
func (s *Scanner) Key() ([]byte, bool) {
	s.ws()
	if s.bad || s.i >= len(s.b) {
		return nil, s.fail()
	}
	switch c := s.b[s.i]; {
	case c == '}':
		s.i++
		s.first = false // a nested object ended: its parent has had a key
		return nil, false
	case c == ',' && !s.first:
		s.i++
		s.ws()
	case !s.first:
		return nil, s.fail() // members are separated by commas
	}
	s.first = false
	k, esc, ok := s.str()
	if !ok || esc {
		return nil, s.fail()
	}
	if !s.colon() {
		return nil, false
	}
	return k, true
}

func (s *Scanner) colon() bool {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != ':' {
		return s.fail()
	}
	s.i++
	s.ws()
	return true
}

// String consumes a string value and returns its raw content (between the
// quotes). plain reports that the content is exactly what encoding/json
// decodes it to (no escapes, valid UTF-8), so the caller may use it as is;
// otherwise it must not. A value that is not a valid string fails the scan.
func (s *Scanner) String() (v []byte, plain bool, ok bool) {
	s.ws()
	v, esc, ok := s.str()
	if !ok {
		return nil, false, s.fail()
	}
	return v, !esc && utf8.Valid(v), true
}

// Null consumes a null value if one is next and reports whether it did.
func (s *Scanner) Null() bool {
	s.ws()
	if s.bad || !s.lit("null") {
		return false
	}
	return true
}

// Int consumes a number and reports whether it is an integer encoding/json
// decodes into an int without error (no fraction or exponent, at most 18
// digits, so within int64). Any other value, or a number that is not such an
// integer, fails the scan.
func (s *Scanner) Int() bool {
	s.ws()
	start := s.i
	if !s.number() {
		return s.fail()
	}
	digits := s.i - start
	if s.b[start] == '-' {
		digits--
	}
	for _, c := range s.b[start:s.i] {
		if c == '.' || c == 'e' || c == 'E' {
			return s.fail()
		}
	}
	if digits > 18 {
		return s.fail()
	}
	return true
}

// str reads a string starting at the opening quote, checking its escapes.
func (s *Scanner) str() (v []byte, esc bool, ok bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false, false
	}
	start := s.i + 1
	for j := start; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			s.i = j + 1
			return s.b[start:j], esc, true
		case c == '\\':
			esc = true
			n := escapeLen(s.b[j+1:])
			if n == 0 {
				return nil, false, false
			}
			j += n
		case c < 0x20:
			return nil, false, false
		}
	}
	return nil, false, false
}

// escapeLen returns the length of the valid escape that b (what follows a
// backslash) starts with, or 0 when it is not one.
func escapeLen(b []byte) int {
	if len(b) == 0 {
		return 0
	}
	switch b[0] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return 1
	case 'u':
		if len(b) < 5 {
			return 0
		}
		for _, c := range b[1:5] {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return 0
			}
		}
		return 5
	}
	return 0
}

// lit consumes the literal w if the input continues with it.
func (s *Scanner) lit(w string) bool {
	if len(s.b)-s.i < len(w) || string(s.b[s.i:s.i+len(w)]) != w {
		return false
	}
	s.i += len(w)
	return true
}

// number consumes a number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *Scanner) number() bool {
	b, i := s.b, s.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(b, i)
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		if j := digits(b, i+1); j > i+1 {
			i = j
		} else {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return false
		}
		i = j
	}
	s.i = i
	return true
}

func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

// scalar consumes one string, number or literal.
func (s *Scanner) scalar() bool {
	if s.i >= len(s.b) {
		return false
	}
	switch s.b[s.i] {
	case '"':
		_, _, ok := s.str()
		return ok
	case 't':
		return s.lit("true")
	case 'f':
		return s.lit("false")
	case 'n':
		return s.lit("null")
	}
	return s.number()
}

// Skip consumes one value of any kind, nested objects and arrays included,
// checking its grammar.
func (s *Scanner) Skip() bool {
	if s.bad {
		return false
	}
	// open is a stack of the containers being walked, one bit per level:
	// set for an object, clear for an array.
	var open uint64
	depth := 0
	for {
		// A value is expected here.
		s.ws()
		if s.i >= len(s.b) {
			return s.fail()
		}
		if c := s.b[s.i]; c == '{' || c == '[' {
			if depth == MaxDepth {
				return s.fail()
			}
			s.i++
			s.ws()
			if s.i < len(s.b) && s.b[s.i] == c+2 { // '{'+2 == '}', '['+2 == ']'
				s.i++
			} else {
				open = open&^(1<<depth) | boolBit(c == '{')<<depth
				depth++
				if c == '{' && !s.member() {
					return false
				}
				continue
			}
		} else if !s.scalar() {
			return s.fail()
		}
		// A value ended: close containers until one continues.
		for {
			if depth == 0 {
				return true
			}
			s.ws()
			if s.i >= len(s.b) {
				return s.fail()
			}
			obj := open&(1<<(depth-1)) != 0
			c := s.b[s.i]
			s.i++
			if c == ',' {
				if obj && !s.member() {
					return false
				}
				break
			}
			if obj && c != '}' || !obj && c != ']' {
				return s.fail()
			}
			depth--
		}
	}
}

// member consumes the key and colon of an object member being skipped.
func (s *Scanner) member() bool {
	s.ws()
	if _, _, ok := s.str(); !ok {
		return s.fail()
	}
	return s.colon()
}

func boolBit(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// Fold writes key, lower-cased, into buf and returns it, for matching a key
// against field names the way encoding/json does (case-insensitively, when
// no exact match exists). ascii is false when key has a byte outside ASCII:
// encoding/json folds some of those onto ASCII letters (the Kelvin sign K
// onto k, the long s onto s), so the caller must leave such a message to
// encoding/json. A key longer than buf comes back nil: it matches no field.
func Fold(buf []byte, key []byte) (folded []byte, ascii bool) {
	for _, c := range key {
		if c >= utf8.RuneSelf {
			return nil, false
		}
	}
	if len(key) > len(buf) {
		return nil, true
	}
	for i, c := range key {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return buf[:len(key)], true
}

// Base64 reports whether v is padded standard base64 (RFC 4648 section 4),
// the encoding of Twilio and model audio, and returns the number of bytes it
// decodes to, without decoding. Checking the alphabet is what makes it safe
// to splice v into a JSON string without escaping.
func Base64(v []byte) (decoded int, ok bool) {
	n := len(v)
	if n == 0 || n%4 != 0 {
		return 0, false
	}
	pad := 0
	if v[n-1] == '=' {
		pad++
		if v[n-2] == '=' {
			pad++
		}
	}
	for _, c := range v[:n-pad] {
		if !base64Byte(c) {
			return 0, false
		}
	}
	return base64.StdEncoding.DecodedLen(n) - pad, true
}

func base64Byte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '/'
}
