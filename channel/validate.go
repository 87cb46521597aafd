package channel

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Codes of validation errors, shared by the admin API (422) and the YAML apply.
const (
	CodeInvalidID            = "invalid_id"
	CodeInvalidName          = "invalid_name"
	CodeInvalidExtension     = "invalid_extension"
	CodeInvalidProtocol      = "invalid_protocol"
	CodeInvalidPort          = "invalid_port"
	CodeInvalidOriginHost    = "invalid_origin_host"
	CodeInvalidOriginIP      = "invalid_origin_ip"
	CodeInvalidEventsURL     = "invalid_events_url"
	CodeInvalidDestination   = "invalid_destination"
	CodeInvalidDTMF          = "invalid_dtmf"
	CodeInvalidFallback      = "invalid_fallback"
	CodeInvalidTurnDetection = "invalid_turn_detection"
	CodeInvalidVoice         = "invalid_voice"
	CodeInvalidModel         = "invalid_model"
	CodeInvalidText          = "invalid_text"
	CodeAgentNotRealtime     = ReasonAgentNotRealtime
	CodeUnknownAgent         = "unknown_agent"
	CodeDNSResolutionFailed  = "dns_resolution_failed"
)

// ValidationError is an agent or channel that is well-formed but not
// acceptable. Field is the JSON path inside the object ("extensions[1]",
// "transferDestinations[0].number"); the admin API answers it with 422.
type ValidationError struct {
	Code    string
	Field   string
	Message string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return e.Code + ": " + e.Message
	}
	return e.Field + ": " + e.Code + ": " + e.Message
}

func invalid(code, field, format string, args ...any) *ValidationError {
	return &ValidationError{Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

// Voices the realtime model offers.
var voices = []string{"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}

var (
	idPattern    = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	modelPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$`)
)

// Limits of free text, so that one agent cannot grow without bound.
const (
	maxNameLen         = 200
	maxInstructionsLen = 64 << 10
	maxGreetingLen     = 4 << 10
	maxTriggerLen      = 1 << 10
	maxNumberDigits    = 20
)

const dtmfKeys = "0123456789*#ABCD"

// ValidID reports whether id is a slug: [a-z0-9][a-z0-9_-]{0,62}.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// ValidNumber reports whether s is 1 to 20 ASCII digits, the only form an
// extension or a transfer number may take (nothing can be injected into a
// SIP URI or TwiML through it).
func ValidNumber(s string) bool {
	if len(s) == 0 || len(s) > maxNumberDigits {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func checkID(field, id string) *ValidationError {
	if id == "" {
		return invalid(CodeInvalidID, field, "is required")
	}
	if !ValidID(id) {
		return invalid(CodeInvalidID, field, "%q is not a slug: lowercase letters, digits, '-' and '_', 1 to 63 characters, starting with a letter or digit", id)
	}
	return nil
}

// checkText refuses control characters (except newlines and tabs where
// multiline is true) and text longer than max bytes.
func checkText(code, field, s string, max int, multiline bool) *ValidationError {
	if len(s) > max {
		return invalid(code, field, "is longer than %d bytes", max)
	}
	if !utf8.ValidString(s) {
		return invalid(code, field, "is not valid UTF-8")
	}
	for _, r := range s {
		if multiline && (r == '\n' || r == '\t' || r == '\r') {
			continue
		}
		if unicode.IsControl(r) {
			return invalid(code, field, "contains a control character")
		}
	}
	return nil
}

// Normalize applies defaults, puts the agent in canonical form (voice in
// lowercase, DTMF keys in uppercase) and validates it. The error is a
// *ValidationError naming the first bad field.
func (a *Agent) Normalize() error {
	if err := a.normalize(); err != nil {
		return err
	}
	return nil
}

func (a *Agent) normalize() *ValidationError {
	if err := checkID("id", a.ID); err != nil {
		return err
	}
	a.Name = strings.TrimSpace(a.Name)
	if a.Name == "" {
		return invalid(CodeInvalidName, "name", "is required")
	}
	if err := checkText(CodeInvalidName, "name", a.Name, maxNameLen, false); err != nil {
		return err
	}
	if err := checkText(CodeInvalidText, "instructions", a.Instructions, maxInstructionsLen, true); err != nil {
		return err
	}
	if err := checkText(CodeInvalidText, "greeting", a.Greeting, maxGreetingLen, true); err != nil {
		return err
	}
	if a.Voice != "" {
		a.Voice = strings.ToLower(a.Voice)
		if !slices.Contains(voices, a.Voice) {
			return invalid(CodeInvalidVoice, "voice", "%q is not one of %s", a.Voice, strings.Join(voices, ", "))
		}
	}
	if a.Model != "" && !modelPattern.MatchString(a.Model) {
		return invalid(CodeInvalidModel, "model", "%q is not a model name", a.Model)
	}
	if err := a.normalizeDestinations(); err != nil {
		return err
	}
	if err := a.normalizeDTMF(); err != nil {
		return err
	}
	if a.FallbackDestination != "" {
		if _, ok := a.DestinationByName(a.FallbackDestination); !ok {
			return invalid(CodeInvalidFallback, "fallbackDestination", "%q names no transfer destination", a.FallbackDestination)
		}
	}
	if err := a.TurnDetection.check(); err != nil {
		return err
	}
	return a.Analysis.check()
}

func (a *Agent) normalizeDestinations() *ValidationError {
	seen := make(map[string]bool, len(a.TransferDestinations))
	for i := range a.TransferDestinations {
		d := &a.TransferDestinations[i]
		field := fmt.Sprintf("transferDestinations[%d]", i)
		d.Name = strings.TrimSpace(d.Name)
		if d.Name == "" {
			return invalid(CodeInvalidDestination, field+".name", "is required")
		}
		if err := checkText(CodeInvalidDestination, field+".name", d.Name, maxNameLen, false); err != nil {
			return err
		}
		key := strings.ToLower(d.Name)
		if seen[key] {
			return invalid(CodeInvalidDestination, field+".name", "%q is listed twice", d.Name)
		}
		seen[key] = true
		if !ValidNumber(d.Number) {
			return invalid(CodeInvalidDestination, field+".number", "%q is not 1 to 20 digits", d.Number)
		}
		if err := checkText(CodeInvalidDestination, field+".trigger", d.Trigger, maxTriggerLen, true); err != nil {
			return err
		}
	}
	return nil
}

func (a *Agent) normalizeDTMF() *ValidationError {
	if len(a.DTMF) == 0 {
		a.DTMF = nil
		return nil
	}
	out := make(map[string]string, len(a.DTMF))
	for _, k := range slices.Sorted(maps.Keys(a.DTMF)) {
		v := a.DTMF[k]
		key := strings.ToUpper(k)
		field := "dtmf." + k
		if len(key) != 1 || !strings.Contains(dtmfKeys, key) {
			return invalid(CodeInvalidDTMF, field, "%q is not a DTMF key (one of 0-9 * # A B C D)", k)
		}
		if _, dup := out[key]; dup {
			return invalid(CodeInvalidDTMF, field, "key %q is bound twice", key)
		}
		if _, ok := a.DestinationByName(v); !ok {
			return invalid(CodeInvalidDTMF, field, "%q names no transfer destination", v)
		}
		out[key] = v
	}
	a.DTMF = out
	return nil
}

func (t *TurnDetection) check() *ValidationError {
	if t == nil {
		return nil
	}
	if t.Threshold < 0 || t.Threshold > 1 {
		return invalid(CodeInvalidTurnDetection, "turnDetection.threshold", "%v is not between 0 and 1", t.Threshold)
	}
	if t.SilenceMs < 0 || t.SilenceMs > 10000 {
		return invalid(CodeInvalidTurnDetection, "turnDetection.silenceMs", "%d is not between 0 and 10000", t.SilenceMs)
	}
	if t.PrefixPaddingMs < 0 || t.PrefixPaddingMs > 10000 {
		return invalid(CodeInvalidTurnDetection, "turnDetection.prefixPaddingMs", "%d is not between 0 and 10000", t.PrefixPaddingMs)
	}
	return nil
}
