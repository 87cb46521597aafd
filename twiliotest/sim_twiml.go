package twiliotest

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// The TwiML the simulator plays: the first verb of a document decides what
// happens (the bridge never sends more than one), and only the verbs and
// attributes the bridge uses are understood. Anything else ends the call
// with OutcomeFailed, so a bridge bug shows instead of being guessed around.

// document is a parsed <Response>.
type document struct {
	XMLName xml.Name `xml:"Response"`
	Verbs   []verb   `xml:",any"`
}

// verb is one verb of a document, with the attributes and nouns of every verb
// the simulator plays.
type verb struct {
	XMLName xml.Name
	Action  string   `xml:"action,attr"`
	Method  string   `xml:"method,attr"`
	Reason  string   `xml:"reason,attr"`
	Streams []stream `xml:"Stream"`
	Sips    []string `xml:"Sip"`
}

// stream is a <Stream> noun.
type stream struct {
	URL                  string      `xml:"url,attr"`
	Name                 string      `xml:"name,attr"`
	StatusCallback       string      `xml:"statusCallback,attr"`
	StatusCallbackMethod string      `xml:"statusCallbackMethod,attr"`
	Params               []parameter `xml:"Parameter"`
}

// parameter is a <Parameter name value/> noun.
type parameter struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

// parseTwiML decodes a TwiML document; it must be a single <Response>.
func parseTwiML(data []byte) (*document, error) {
	var doc document
	dec := xml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("twiliotest: parse TwiML: %w", err)
	}
	return &doc, nil
}

// first returns the name of the document's first verb ("" for an empty
// <Response/>) and the verb.
func (d *document) first() (string, verb) {
	if len(d.Verbs) == 0 {
		return "", verb{}
	}
	return d.Verbs[0].XMLName.Local, d.Verbs[0]
}

// connectPlan is a <Connect><Stream> resolved against the URL of its
// document: what to dial, what to sign and where to report.
type connectPlan struct {
	action    *url.URL // nil without an action
	streamURL *url.URL // the wss:// URL Twilio signs
	statusCB  *url.URL // nil without a statusCallback
	name      string
	params    map[string]string
}

// plan checks a <Connect> verb and resolves its URLs against base.
func (v verb) plan(base *url.URL) (connectPlan, error) {
	var p connectPlan
	if len(v.Streams) != 1 {
		return p, fmt.Errorf("<Connect> holds %d <Stream>s, want exactly 1 (a bidirectional stream)", len(v.Streams))
	}
	if err := postOnly("<Connect>", v.Method); err != nil {
		return p, err
	}
	s := v.Streams[0]
	if err := postOnly("<Stream statusCallbackMethod>", s.StatusCallbackMethod); err != nil {
		return p, err
	}
	var err error
	if p.action, err = callbackURL(base, v.Action); err != nil {
		return p, fmt.Errorf("<Connect action>: %w", err)
	}
	if p.statusCB, err = callbackURL(base, s.StatusCallback); err != nil {
		return p, fmt.Errorf("<Stream statusCallback>: %w", err)
	}
	if p.streamURL, err = streamURL(base, s.URL); err != nil {
		return p, fmt.Errorf("<Stream url>: %w", err)
	}
	p.name = s.Name
	p.params = make(map[string]string, len(s.Params))
	for _, prm := range s.Params {
		if len(prm.Name)+len(prm.Value) >= 500 { // twilio.md §2.2
			return p, fmt.Errorf("<Parameter %q>: name and value are 500 characters or more", prm.Name)
		}
		p.params[prm.Name] = prm.Value
	}
	return p, nil
}

// referPlan is a <Refer> resolved against the URL of its document.
type referPlan struct {
	action *url.URL // nil without an action
	target string   // the <Sip> URI
}

// referPlan checks a <Refer> verb and resolves its action against base.
func (v verb) referPlan(base *url.URL) (referPlan, error) {
	var p referPlan
	if len(v.Sips) != 1 {
		return p, fmt.Errorf("<Refer> holds %d <Sip>s, want exactly 1", len(v.Sips))
	}
	if err := postOnly("<Refer>", v.Method); err != nil {
		return p, err
	}
	p.target = strings.TrimSpace(v.Sips[0])
	scheme, rest, ok := strings.Cut(p.target, ":")
	if !ok || rest == "" || (!strings.EqualFold(scheme, "sip") && !strings.EqualFold(scheme, "sips")) {
		return p, fmt.Errorf("<Sip> %q is not a sip: or sips: URI", p.target)
	}
	var err error
	if p.action, err = callbackURL(base, v.Action); err != nil {
		return p, fmt.Errorf("<Refer action>: %w", err)
	}
	return p, nil
}

// postOnly refuses a method other than POST (the default): the simulator
// signs and posts forms only.
func postOnly(what, method string) error {
	if method != "" && !strings.EqualFold(method, "POST") {
		return fmt.Errorf("%s method %q is not simulated (only POST)", what, method)
	}
	return nil
}

// callbackURL resolves a callback URL (relative or absolute) against the
// document's URL; it must end up http(s). An empty ref is no callback (nil).
func callbackURL(base *url.URL, ref string) (*url.URL, error) {
	if ref == "" {
		return nil, nil
	}
	u, err := base.Parse(ref)
	if err != nil {
		return nil, fmt.Errorf("bad URL %q: %w", ref, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("URL %q is not http(s)", ref)
	}
	return u, nil
}

// streamURL resolves a <Stream url>: Twilio supports only absolute-or-relative
// wss:// URLs without a query string (twilio.md §2.1).
func streamURL(base *url.URL, ref string) (*url.URL, error) {
	if ref == "" {
		return nil, errors.New("missing")
	}
	u, err := base.Parse(ref)
	if err != nil {
		return nil, fmt.Errorf("bad URL %q: %w", ref, err)
	}
	if u.Scheme == "https" { // a relative URL resolved against an https document
		u.Scheme = "wss"
	}
	if u.Scheme != "wss" {
		return nil, fmt.Errorf("URL %q is not wss:// (the only protocol Twilio supports)", ref)
	}
	if u.RawQuery != "" || u.ForceQuery {
		return nil, fmt.Errorf("URL %q has a query string (Twilio does not support one)", ref)
	}
	return u, nil
}

// Timestamp formats of Twilio's callbacks (twilio.md §8).
const (
	streamTimeFormat = "2006-01-02T15:04:05.000Z07:00" // ISO 8601, stream statusCallback
	callTimeFormat   = time.RFC1123Z                   // RFC 2822, call progress events
)
