package transfer

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/twilio/twilio-go/twiml"
)

// Errors of Refer-To construction. Everything that reaches a SIP URI or a
// TwiML document is validated here, so nothing can be injected into either.
var (
	ErrBadNumber   = errors.New("transfer: destination number must be 1-20 digits")
	ErrBadOrigin   = errors.New("transfer: bad origin host")
	ErrBadPort     = errors.New("transfer: bad origin port")
	ErrBadProtocol = errors.New("transfer: bad origin protocol")
)

// Origin is where a channel's PBX listens for SIP: the REFER goes back there.
type Origin struct {
	Host     string
	Port     int
	Protocol string // TLS, TCP or UDP
}

// ReferURI builds the Refer-To URI for an extension on the customer's PBX:
// sip:{number}@{host}:{port};transport={tls|tcp|udp}.
func ReferURI(number string, o Origin) (string, error) {
	if !digits(number, 20) {
		return "", fmt.Errorf("%w: %q", ErrBadNumber, number)
	}
	if !validHost(o.Host) {
		return "", fmt.Errorf("%w: %q", ErrBadOrigin, o.Host)
	}
	if o.Port < 1 || o.Port > 65535 {
		return "", fmt.Errorf("%w: %d", ErrBadPort, o.Port)
	}
	var transport string
	switch strings.ToUpper(o.Protocol) {
	case "TLS":
		transport = "tls"
	case "TCP":
		transport = "tcp"
	case "UDP":
		transport = "udp"
	default:
		return "", fmt.Errorf("%w: %q", ErrBadProtocol, o.Protocol)
	}
	return fmt.Sprintf("sip:%s@%s:%d;transport=%s", number, strings.ToLower(o.Host), o.Port, transport), nil
}

// ReferTwiML is the document that makes Twilio send the REFER:
// <Response><Refer action="..."><Sip>URI</Sip></Refer></Response>.
func ReferTwiML(action, uri string) (string, error) {
	doc, err := twiml.Voice([]twiml.Element{
		&twiml.VoiceRefer{Action: action, InnerElements: []twiml.Element{&twiml.VoiceSip{SipUrl: uri}}},
	})
	if err != nil {
		return "", fmt.Errorf("transfer: refer twiml: %w", err)
	}
	return doc, nil
}

func digits(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// validHost accepts an IPv4 literal or an RFC 1123 host name.
func validHost(h string) bool {
	if ip := net.ParseIP(h); ip != nil {
		return ip.To4() != nil
	}
	if len(h) == 0 || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
