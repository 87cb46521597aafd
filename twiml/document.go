package twiml

import (
	"encoding/xml"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// The documents are written by a small writer over encoding/xml's escaping
// rather than twilio-go's twiml package: that package orders attributes by Go
// map iteration (not deterministic) and pulls in another module (etree),
// while the few verbs used here are easy to write exactly as DESIGN.md shows
// them. Every attribute value and text goes through xml.EscapeText, which
// also escapes quotes, tab, CR and LF and replaces characters XML cannot hold.

// Reasons of a <Reject> verb.
const (
	// Rejected refuses the call: Twilio answers the SIP Domain INVITE with 404.
	Rejected = "rejected"
	// Busy refuses the call as busy: Twilio answers 486 so the PBX can fail over.
	Busy = "busy"
)

// MaxParameterLength bounds len(name)+len(value) of one <Parameter>: Twilio
// requires the sum to be under 500 characters.
const MaxParameterLength = 499

// xmlHeader starts every document.
const xmlHeader = `<?xml version="1.0" encoding="UTF-8"?>`

// ConnectStream returns `<Response><Connect action><Stream url statusCallback>`
// with one <Parameter> per entry of params (sorted by name). streamURL must be
// an absolute wss:// URL without a query (Twilio supports neither ws:// nor
// query strings); action and statusCallback are absolute http(s) URLs or
// empty (then the attribute is left out).
func ConnectStream(action, streamURL, statusCallback string, params map[string]string) (string, error) {
	if err := checkStreamURL(streamURL); err != nil {
		return "", fmt.Errorf("twiml: connect stream: %w", err)
	}
	if err := checkCallbackURL(action); err != nil {
		return "", fmt.Errorf("twiml: connect stream: action: %w", err)
	}
	if err := checkCallbackURL(statusCallback); err != nil {
		return "", fmt.Errorf("twiml: connect stream: statusCallback: %w", err)
	}
	names := make([]string, 0, len(params))
	for name, value := range params {
		if name == "" {
			return "", errors.New("twiml: connect stream: empty parameter name")
		}
		if len(name)+len(value) > MaxParameterLength {
			return "", fmt.Errorf("twiml: connect stream: parameter %q: name and value longer than %d", name, MaxParameterLength)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	stream := &element{name: "Stream", attrs: present(attr{"url", streamURL}, attr{"statusCallback", statusCallback})}
	for _, name := range names {
		stream.children = append(stream.children, &element{name: "Parameter", attrs: []attr{{"name", name}, {"value", params[name]}}})
	}
	connect := &element{name: "Connect", attrs: present(attr{"action", action}), children: []*element{stream}}
	return render(connect), nil
}

// Reject returns `<Response><Reject reason="..."/></Response>`; reason is
// Rejected or Busy.
func Reject(reason string) (string, error) {
	if reason != Rejected && reason != Busy {
		return "", fmt.Errorf("twiml: reject: reason %q is neither %q nor %q", reason, Rejected, Busy)
	}
	return rejectDoc(reason), nil
}

// Refer returns `<Response><Refer action="..."><Sip>sipURI</Sip></Refer></Response>`.
// sipURI must be a sip: or sips: URI; action is an absolute http(s) URL or
// empty.
func Refer(action, sipURI string) (string, error) {
	scheme, rest, ok := strings.Cut(sipURI, ":")
	if !ok || rest == "" || !(strings.EqualFold(scheme, "sip") || strings.EqualFold(scheme, "sips")) {
		return "", errors.New("twiml: refer: target is not a sip: or sips: URI")
	}
	if err := checkCallbackURL(action); err != nil {
		return "", fmt.Errorf("twiml: refer: action: %w", err)
	}
	sip := &element{name: "Sip", text: sipURI}
	return render(&element{name: "Refer", attrs: present(attr{"action", action}), children: []*element{sip}}), nil
}

// Hangup returns `<Response><Hangup/></Response>`.
func Hangup() string { return render(&element{name: "Hangup"}) }

// Empty returns `<Response/>`: the answer to a callback that must change
// nothing (a stale or replayed one).
func Empty() string { return xmlHeader + "<Response/>" }

func rejectDoc(reason string) string {
	return render(&element{name: "Reject", attrs: []attr{{"reason", reason}}})
}

func checkStreamURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return errors.New("stream URL does not parse")
	case u.Scheme != "wss" || u.Host == "":
		return errors.New("stream URL must be an absolute wss:// URL")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return errors.New("stream URL must not have a query or fragment")
	}
	return nil
}

func checkCallbackURL(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return errors.New("must be an absolute http(s) URL")
	}
	return nil
}

// attr is one attribute of an element.
type attr struct{ name, value string }

// present returns the attributes whose value is not empty: an optional
// attribute left empty is left out of the document.
func present(attrs ...attr) []attr {
	out := attrs[:0]
	for _, a := range attrs {
		if a.value != "" {
			out = append(out, a)
		}
	}
	return out
}

// element is a TwiML element with ordered attributes and either text or children.
type element struct {
	name     string
	attrs    []attr
	text     string
	children []*element
}

// render returns the document <Response>verb</Response>.
func render(verb *element) string {
	var b strings.Builder
	b.WriteString(xmlHeader)
	b.WriteString("<Response>")
	verb.write(&b)
	b.WriteString("</Response>")
	return b.String()
}

func (e *element) write(b *strings.Builder) {
	b.WriteByte('<')
	b.WriteString(e.name)
	for _, a := range e.attrs {
		b.WriteByte(' ')
		b.WriteString(a.name)
		b.WriteString(`="`)
		escape(b, a.value)
		b.WriteByte('"')
	}
	if e.text == "" && len(e.children) == 0 {
		b.WriteString("/>")
		return
	}
	b.WriteByte('>')
	escape(b, e.text)
	for _, c := range e.children {
		c.write(b)
	}
	b.WriteString("</")
	b.WriteString(e.name)
	b.WriteByte('>')
}

func escape(b *strings.Builder, s string) {
	// xml.EscapeText only fails when the writer does; a strings.Builder never does.
	_ = xml.EscapeText(b, []byte(s))
}
