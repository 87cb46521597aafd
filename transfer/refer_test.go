package transfer

import (
	"encoding/xml"
	"errors"
	"testing"
)

func TestReferURI(t *testing.T) {
	tests := map[string]struct {
		number string
		origin Origin
		want   string
		err    error
	}{
		"tls":           {"2001", Origin{"sbc.yourcompany.com", 5061, "TLS"}, "sip:2001@sbc.yourcompany.com:5061;transport=tls", nil},
		"tcp":           {"2001", Origin{"pbx.example.com", 5060, "TCP"}, "sip:2001@pbx.example.com:5060;transport=tcp", nil},
		"udp ip":        {"7", Origin{"203.0.113.9", 5060, "udp"}, "sip:7@203.0.113.9:5060;transport=udp", nil},
		"host lowered":  {"2001", Origin{"SBC.Example.COM", 5061, "TLS"}, "sip:2001@sbc.example.com:5061;transport=tls", nil},
		"20 digits":     {"12345678901234567890", Origin{"h.example", 5061, "TLS"}, "sip:12345678901234567890@h.example:5061;transport=tls", nil},
		"21 digits":     {"123456789012345678901", Origin{"h.example", 5061, "TLS"}, "", ErrBadNumber},
		"empty number":  {"", Origin{"h.example", 5061, "TLS"}, "", ErrBadNumber},
		"plus number":   {"+15551234", Origin{"h.example", 5061, "TLS"}, "", ErrBadNumber},
		"inject params": {"2001;transport=udp", Origin{"h.example", 5061, "TLS"}, "", ErrBadNumber},
		"inject header": {"2001?X=1", Origin{"h.example", 5061, "TLS"}, "", ErrBadNumber},
		"inject xml":    {"2001</Sip>", Origin{"h.example", 5061, "TLS"}, "", ErrBadNumber},
		"host with at":  {"2001", Origin{"evil@h.example", 5061, "TLS"}, "", ErrBadOrigin},
		"host ipv6":     {"2001", Origin{"::1", 5061, "TLS"}, "", ErrBadOrigin},
		"host empty":    {"2001", Origin{"", 5061, "TLS"}, "", ErrBadOrigin},
		"port zero":     {"2001", Origin{"h.example", 0, "TLS"}, "", ErrBadPort},
		"port high":     {"2001", Origin{"h.example", 70000, "TLS"}, "", ErrBadPort},
		"protocol ws":   {"2001", Origin{"h.example", 5061, "WS"}, "", ErrBadProtocol},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ReferURI(tt.number, tt.origin)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if got != tt.want {
				t.Fatalf("uri = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestReferTwiML(t *testing.T) {
	doc, err := ReferTwiML("https://bridge.example.com/twilio/refer-status", "sip:2001@sbc.example.com:5061;transport=tls")
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		XMLName xml.Name `xml:"Response"`
		Refer   []struct {
			Action string   `xml:"action,attr"`
			Sip    []string `xml:"Sip"`
		} `xml:"Refer"`
	}
	if err := xml.Unmarshal([]byte(doc), &r); err != nil {
		t.Fatalf("parse %s: %v", doc, err)
	}
	if len(r.Refer) != 1 || r.Refer[0].Action != "https://bridge.example.com/twilio/refer-status" ||
		len(r.Refer[0].Sip) != 1 || r.Refer[0].Sip[0] != "sip:2001@sbc.example.com:5061;transport=tls" {
		t.Fatalf("unexpected document %s", doc)
	}
}
