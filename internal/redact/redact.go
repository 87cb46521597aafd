// Package redact makes text that comes from outside (a REST error body, a
// model's error message, a callback's error description) safe to log and to
// store on a session: credentials scrubbed, length clipped, control
// characters and invalid UTF-8 replaced.
//
// Every place where remote text enters a log line or the session record goes
// through Text (or a Redactor that also knows this process's own secrets).
// The patterns are hand-written: no module on the proxy list does this job
// (log scrubbers there work on structured fields, not on free text we did
// not write), and a few RE2 expressions keep the cost linear in the input.
package redact

import (
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxLen bounds the text Text returns, in bytes, before the clip marker.
const MaxLen = 512

// window bounds how much of the input is scanned at all, so that a peer's
// megabyte of error body costs a bounded amount of CPU.
const window = 8 << 10

// Mask replaces a credential.
const Mask = "[redacted]"

// clipped ends a text that was cut.
const clipped = "…[clipped]"

var (
	// Authorization: Basic xxx / "authorization":"Bearer xxx" / Proxy-Authorization=...:
	// everything after the header name up to the end of the line, a quote,
	// a comma or a closing brace is the credential.
	authHeader = regexp.MustCompile(`(?i)((?:proxy-)?authorization"?\s*[:=]\s*"?)[^\r\n",}]*`)
	// A scheme and its token anywhere else in the text.
	authScheme = regexp.MustCompile(`(?i)\b(basic|bearer|digest)(\s+)[A-Za-z0-9+/=._~:-]{6,}`)
	// OpenAI-style API keys (sk-..., sk-proj-...) and Twilio API key secrets in the open.
	apiKey = regexp.MustCompile(`\bsk-[A-Za-z0-9_-]{6,}`)
	// key=value and "key":"value" pairs whose key names a secret.
	secretPair = regexp.MustCompile(`(?i)((?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token|token|client[_-]?secret)"?\s*[:=]\s*"?)[^\s&",;}]+`)
	// user:password@ in a URL.
	userinfo = regexp.MustCompile(`(?i)([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@`)
)

// Text returns s scrubbed of credentials that look like credentials
// (Authorization values, Basic/Bearer tokens, sk- keys, password= and
// similar pairs, URL passwords) and clipped to MaxLen bytes.
func Text(s string) string { return scrub(s, nil) }

// Error is Text of err's message; "" for nil.
func Error(err error) string {
	if err == nil {
		return ""
	}
	return Text(err.Error())
}

// Redactor is Text that also removes this process's own secrets (the
// Twilio auth token, the OpenAI API key) wherever they appear verbatim.
type Redactor struct{ secrets []string }

// minSecret is the shortest secret a Redactor looks for: shorter ones would
// mask ordinary words.
const minSecret = 8

// New returns a Redactor for secrets; empty and short ones are ignored.
func New(secrets ...string) *Redactor {
	r := &Redactor{}
	for _, s := range secrets {
		if len(s) >= minSecret {
			r.secrets = append(r.secrets, s)
		}
	}
	return r
}

// Text is the package's Text, and r's secrets masked.
func (r *Redactor) Text(s string) string {
	if r == nil {
		return Text(s)
	}
	return scrub(s, r.secrets)
}

// Error is r.Text of err's message; "" for nil.
func (r *Redactor) Error(err error) string {
	if err == nil {
		return ""
	}
	return r.Text(err.Error())
}

func scrub(s string, secrets []string) string {
	cut := false
	if len(s) > window {
		s, cut = s[:window], true
		// Do not leave half a credential at the cut, where no pattern
		// would recognise it: drop the last partial word.
		if i := strings.LastIndexAny(s, " \t\r\n,;&\"'"); i > 0 {
			s = s[:i]
		}
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	for _, sec := range secrets {
		s = strings.ReplaceAll(s, sec, Mask)
	}
	s = authHeader.ReplaceAllString(s, "${1}"+Mask)
	s = authScheme.ReplaceAllString(s, "${1}${2}"+Mask)
	s = apiKey.ReplaceAllString(s, Mask)
	s = secretPair.ReplaceAllString(s, "${1}"+Mask)
	s = userinfo.ReplaceAllString(s, "${1}"+Mask+"@")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' ' // no forged log lines in console output
		}
		return r
	}, s)
	if len(s) > MaxLen {
		i := MaxLen
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s, cut = s[:i], true
	}
	if cut {
		s += clipped
	}
	return s
}
