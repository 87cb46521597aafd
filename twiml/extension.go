package twiml

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ErrBadTo is wrapped by every ParseExtension error; the wrapping text says why.
var ErrBadTo = errors.New("twiml: bad To")

// MaxExtensionDigits is the longest extension ParseExtension accepts.
const MaxExtensionDigits = 20

// ParseExtension returns the extension dialled in a voice webhook's To value:
// the user part of a sip: or sips: URI (scheme case-insensitive). It accepts
// an optional display name with <...> wrapping (`"Front" <sip:1001@x>`),
// user:password@ (the password is dropped), user parameters
// (`sip:1001;phone-context=x@host`), a port on the host, URI parameters
// (`;transport=tls`, `;user=phone`), header parameters (`?X-Foo=1`) and
// percent-encoding in the user part (`%31` is `1`). The extension must be 1 to
// MaxExtensionDigits ASCII digits: an E.164 number with a leading + is not an
// extension. Errors wrap ErrBadTo.
func ParseExtension(to string) (string, error) {
	uri, err := unwrapNameAddr(strings.TrimSpace(to))
	if err != nil {
		return "", err
	}
	scheme, rest, ok := strings.Cut(uri, ":")
	if !ok || !(strings.EqualFold(scheme, "sip") || strings.EqualFold(scheme, "sips")) {
		return "", badTo("not a sip: or sips: URI")
	}
	// In a SIP URI an '@' inside the user part must be escaped, so the first
	// one ends the userinfo; '@' may still appear later in parameters.
	userinfo, hostport, ok := strings.Cut(rest, "@")
	if !ok {
		return "", badTo("no user part (missing @)")
	}
	host, _, _ := strings.Cut(hostport, ";")
	host, _, _ = strings.Cut(host, "?")
	if host == "" {
		return "", badTo("empty host")
	}
	user, _, _ := strings.Cut(userinfo, ":") // drop the password
	user, _, _ = strings.Cut(user, ";")      // drop telephone-subscriber parameters
	user, err = url.PathUnescape(user)       // after splitting, so %40 or %3B cannot split
	if err != nil {
		return "", badTo("bad percent-encoding in user part")
	}
	if err := checkExtension(user); err != nil {
		return "", err
	}
	return user, nil
}

// unwrapNameAddr returns the URI inside `display-name <uri>` or `<uri>`, or s
// itself when it has no angle brackets. Header parameters after '>'
// (`;tag=...`) are ignored.
func unwrapNameAddr(s string) (string, error) {
	if s == "" {
		return "", badTo("empty")
	}
	rest := s
	if strings.HasPrefix(rest, `"`) {
		end := closingQuote(rest)
		if end < 0 {
			return "", badTo("unterminated quoted display name")
		}
		rest = strings.TrimLeft(rest[end+1:], " \t")
		if !strings.HasPrefix(rest, "<") {
			return "", badTo("display name without <URI>")
		}
	}
	open := strings.IndexByte(rest, '<')
	if open < 0 {
		if strings.ContainsAny(rest, "> \t") {
			return "", badTo("stray '>' or space")
		}
		return rest, nil
	}
	closing := strings.IndexByte(rest[open:], '>')
	if closing < 0 {
		return "", badTo("unterminated <URI>")
	}
	after := strings.TrimSpace(rest[open+closing+1:])
	if after != "" && after[0] != ';' {
		return "", badTo("text after <URI>")
	}
	return strings.TrimSpace(rest[open+1 : open+closing]), nil
}

// closingQuote returns the index of the '"' that closes the quoted string
// starting at s[0], honouring backslash escapes, or -1.
func closingQuote(s string) int {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

func checkExtension(user string) error {
	switch {
	case user == "":
		return badTo("empty user part")
	case user[0] == '+':
		return badTo("E.164 number with a leading + is not an extension")
	case len(user) > MaxExtensionDigits:
		return badTo(fmt.Sprintf("extension longer than %d digits", MaxExtensionDigits))
	}
	for i := 0; i < len(user); i++ {
		if user[i] < '0' || user[i] > '9' {
			return badTo("extension is not numeric (ASCII digits only)")
		}
	}
	return nil
}

func badTo(reason string) error { return fmt.Errorf("%w: %s", ErrBadTo, reason) }
