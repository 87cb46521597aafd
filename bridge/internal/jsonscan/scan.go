// Package jsonscan is the small hand-written JSON scanner of the audio hot
// path: it walks one JSON object and hands out raw string values as slices
// of the input, without allocating and without decoding anything it does not
// need. It is deliberately partial: a value it cannot take on the fast path
// (a string with escapes, a structure it does not expect) makes the caller
// fall back to encoding/json, which remains the judge of malformed input.
package jsonscan

import "encoding/base64"

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
// A key with escapes fails the scan. Key must be called after Object and
// after each value has been consumed (String, Object walk or Skip).
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
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != ':' {
		return nil, s.fail()
	}
	s.i++
	s.ws()
	return k, true
}

// String consumes a string value and returns its raw content (between the
// quotes) and whether it contains escapes, which the caller must then not
// use as is. A value that is not a string fails the scan.
func (s *Scanner) String() (v []byte, escaped bool, ok bool) {
	s.ws()
	v, escaped, ok = s.str()
	if !ok {
		s.fail()
	}
	return v, escaped, ok
}

// str reads a string starting at the opening quote.
func (s *Scanner) str() ([]byte, bool, bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false, false
	}
	start := s.i + 1
	esc := false
	for j := start; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			s.i = j + 1
			return s.b[start:j], esc, true
		case c == '\\':
			esc = true
			j++ // skip the escaped byte
		case c < 0x20:
			return nil, false, false
		}
	}
	return nil, false, false
}

// Skip consumes one value of any kind (nested objects and arrays included).
func (s *Scanner) Skip() bool {
	s.ws()
	if s.bad || s.i >= len(s.b) {
		return s.fail()
	}
	depth := 0
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			if _, _, ok := s.str(); !ok {
				return s.fail()
			}
		case c == '{' || c == '[':
			depth++
			s.i++
		case c == '}' || c == ']':
			if depth == 0 {
				return s.fail()
			}
			depth--
			s.i++
		case depth > 0:
			s.i++ // commas, colons, scalars and spaces inside the container
		default:
			// a scalar at depth 0: number, true, false, null
			j := s.i
			for j < len(s.b) && scalarByte(s.b[j]) {
				j++
			}
			if j == s.i {
				return s.fail()
			}
			s.i = j
			return true
		}
		if depth == 0 {
			return true
		}
	}
	return s.fail()
}

func scalarByte(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c == '-' || c == '+' || c == '.' || c == 'E'
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
