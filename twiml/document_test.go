package twiml

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDocumentsMatchGolden(t *testing.T) {
	connect, err := ConnectStream("https://bridge.example.com/twilio/connect-ended",
		"wss://bridge.example.com/twilio/stream", "https://bridge.example.com/twilio/stream-status",
		map[string]string{"token": "abc.def", "tenant": `a&b"c<d>`})
	if err != nil {
		t.Fatal(err)
	}
	rejected, err := Reject(Rejected)
	if err != nil {
		t.Fatal(err)
	}
	busy, err := Reject(Busy)
	if err != nil {
		t.Fatal(err)
	}
	refer, err := Refer("https://bridge.example.com/twilio/refer-status",
		"sip:2001@sbc.example.com:5061;transport=tls?X-Acct=1&X-Why=billing")
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct{ doc, golden string }{
		"connect stream":  {connect, "connect_stream.xml"},
		"reject rejected": {rejected, "reject_rejected.xml"},
		"reject busy":     {busy, "reject_busy.xml"},
		"refer":           {refer, "refer.xml"},
		"hangup":          {Hangup(), "hangup.xml"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join("testdata", tc.golden))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(tc.doc, `<?xml version="1.0" encoding="UTF-8"?><Response>`) {
				t.Errorf("document does not start with the XML declaration and <Response>: %s", tc.doc)
			}
			sameXML(t, mustParse(t, tc.doc), mustParse(t, string(want)))
		})
	}
}

// The design's literal documents: deterministic output lets outside tests
// look for them as text too.
func TestDocumentsAsDesignWritesThem(t *testing.T) {
	rejected, _ := Reject(Rejected)
	busy, _ := Reject(Busy)
	for doc, want := range map[string]string{
		rejected: `<Response><Reject reason="rejected"/></Response>`,
		busy:     `<Response><Reject reason="busy"/></Response>`,
		Hangup(): `<Response><Hangup/></Response>`,
	} {
		if !strings.HasSuffix(doc, want) {
			t.Errorf("got %s, want it to end with %s", doc, want)
		}
	}
}

// Nothing given to a builder can add or change an element or attribute.
func TestDocumentsEscapeEverything(t *testing.T) {
	hostile := "x\"/><Hangup/><Say a='1'>&amp;\n\t\r\x00\x01\xff</Say>"
	// URLs with control characters do not parse and are refused; the rest of
	// the hostile text goes into the action.
	action := "https://h.example/a?q=x\"/><Hangup/><Say a='1'>&amp;</Say>"
	doc, err := ConnectStream(action, "wss://h.example/twilio/stream", "https://h.example/s?x=<>",
		map[string]string{"token": hostile, "<evil>": "1"})
	if err != nil {
		t.Fatal(err)
	}
	connect := verb(t, doc)
	if connect.Name != "Connect" || len(connect.Children) != 1 || connect.Children[0].Name != "Stream" {
		t.Fatalf("structure changed: %s", dump(connect))
	}
	stream := connect.Children[0]
	if len(stream.Children) != 2 {
		t.Fatalf("want 2 parameters, got %s", dump(stream))
	}
	// XML cannot hold NUL, \x01 or invalid UTF-8: they become U+FFFD; the rest round-trips.
	clean := strings.NewReplacer("\x00", "\uFFFD", "\x01", "\uFFFD", "\xff", "\uFFFD").Replace(hostile)
	if got := connect.Attrs["action"]; got != action {
		t.Errorf("action = %q", got)
	}
	for _, p := range stream.Children {
		if p.Attrs["name"] == "token" && p.Attrs["value"] != clean {
			t.Errorf("token value = %q, want %q", p.Attrs["value"], clean)
		}
	}
	if stream.Children[0].Attrs["name"] != "<evil>" {
		t.Errorf("parameter name = %q", stream.Children[0].Attrs["name"])
	}

	refer, err := Refer("", "sip:2001@h?X-A=</Sip><Hangup/>")
	if err != nil {
		t.Fatal(err)
	}
	r := verb(t, refer)
	if r.Name != "Refer" || len(r.Attrs) != 0 || len(r.Children) != 1 || r.Children[0].Text != "sip:2001@h?X-A=</Sip><Hangup/>" {
		t.Fatalf("refer structure changed: %s", dump(r))
	}
}

func TestDocumentArgumentErrors(t *testing.T) {
	long := strings.Repeat("v", MaxParameterLength-len("token")+1)
	tests := map[string]func() error{
		"stream url not wss": func() error {
			_, err := ConnectStream("", "https://h/twilio/stream", "", nil)
			return err
		},
		"stream url ws": func() error {
			_, err := ConnectStream("", "ws://h/twilio/stream", "", nil)
			return err
		},
		"stream url with query": func() error {
			_, err := ConnectStream("", "wss://h/twilio/stream?token=1", "", nil)
			return err
		},
		"relative action": func() error {
			_, err := ConnectStream("/twilio/connect-ended", "wss://h/s", "", nil)
			return err
		},
		"relative status callback": func() error {
			_, err := ConnectStream("", "wss://h/s", "stream-status", nil)
			return err
		},
		"empty parameter name": func() error {
			_, err := ConnectStream("", "wss://h/s", "", map[string]string{"": "v"})
			return err
		},
		"parameter too long": func() error {
			_, err := ConnectStream("", "wss://h/s", "", map[string]string{"token": long})
			return err
		},
		"reject reason": func() error {
			_, err := Reject("declined")
			return err
		},
		"reject empty reason": func() error {
			_, err := Reject("")
			return err
		},
		"refer tel target": func() error {
			_, err := Refer("", "tel:+15551234")
			return err
		},
		"refer empty target": func() error {
			_, err := Refer("", "sip:")
			return err
		},
		"refer relative action": func() error {
			_, err := Refer("refer-status", "sip:1@h")
			return err
		},
	}
	for name, call := range tests {
		t.Run(name, func(t *testing.T) {
			if call() == nil {
				t.Fatal("want an error")
			}
		})
	}
	if _, err := ConnectStream("", "wss://h/s", "", map[string]string{"token": long[1:]}); err != nil {
		t.Fatalf("a parameter of exactly %d characters must pass: %v", MaxParameterLength, err)
	}
}

func TestConnectStreamOmitsEmptyOptionalAttributes(t *testing.T) {
	doc, err := ConnectStream("", "wss://h/s", "", map[string]string{"token": ""})
	if err != nil {
		t.Fatal(err)
	}
	c := verb(t, doc)
	if len(c.Attrs) != 0 {
		t.Errorf("Connect attrs %v", c.Attrs)
	}
	s := c.Children[0]
	if len(s.Attrs) != 1 || s.Attrs["url"] != "wss://h/s" {
		t.Errorf("Stream attrs %v", s.Attrs)
	}
	if p := s.Children[0]; p.Attrs["name"] != "token" || len(p.Attrs) != 2 {
		t.Errorf("a Parameter keeps an empty value attribute: %v", p.Attrs)
	}
}
