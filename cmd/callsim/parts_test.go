package main

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	var vals []int64
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		v := int64(r.ExpFloat64() * float64(500*time.Microsecond))
		vals = append(vals, v)
		h.add(v)
	}
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.9, 0.99} {
		exact := vals[int(q*float64(len(vals)))-1]
		got := h.quantile(q)
		if got < exact || float64(got) > float64(exact)*1.04+1 {
			t.Errorf("q%.2f = %d, exact %d: want within +4%%", q, got, exact)
		}
	}
	if h.max.Load() != vals[len(vals)-1] || h.quantile(1) != vals[len(vals)-1] {
		t.Errorf("max %d, q1 %d, want %d", h.max.Load(), h.quantile(1), vals[len(vals)-1])
	}
	var empty histogram
	if s := empty.summary(); s != (Latency{}) {
		t.Errorf("empty summary %+v", s)
	}
}

func TestHistogramBuckets(t *testing.T) {
	prev := -1
	for _, v := range []int64{0, 1, 63, 64, 65, 127, 128, 1 << 20, 1<<44 + 5, 1 << 50} {
		i := histIndex(v)
		if i < prev || i >= histBuckets {
			t.Fatalf("index(%d) = %d after %d", v, i, prev)
		}
		if v < 1<<45 && histUpper(i) < v {
			t.Fatalf("upper(index(%d)) = %d", v, histUpper(i))
		}
		prev = i
	}
}

func TestFrameHeaderRoundTrip(t *testing.T) {
	tmpl := newAudioTemplates()
	var f twilioFrames
	f.streamSID = "MZ0123"
	for _, h := range []frameHeader{{magicCaller, 0, 1}, {magicCaller, 65535, maxSeq}, {magicCaller, 7, 123456}} {
		msg := f.media(3, tmpl.speech, h)
		var m struct {
			Event     string
			StreamSid string
			Media     struct{ Chunk, Timestamp, Payload string }
		}
		if err := json.Unmarshal(msg, &m); err != nil {
			t.Fatalf("media %s: %v", msg, err)
		}
		audio, err := base64.StdEncoding.DecodeString(m.Media.Payload)
		if err != nil || len(audio) != frameBytes || m.Media.Chunk != "3" || m.Media.Timestamp != "40" || m.StreamSid != "MZ0123" {
			t.Fatalf("media %s: %d bytes, %v", msg, len(audio), err)
		}
		got, ok := readHeader([]byte(m.Media.Payload))
		if !ok || got != h {
			t.Fatalf("header %+v, want %+v", got, h)
		}
		o := parseOutbound(msg)
		if string(o.event) != "media" || string(o.payload) != m.Media.Payload {
			t.Fatalf("parseOutbound(%s) = %q %q", msg, o.event, o.payload)
		}
	}
	if h, ok := readHeader(agentAudio(160)); !ok || h.magic != magicAgent {
		t.Fatalf("agent audio header %+v %v", h, ok)
	}
	if _, ok := readHeader([]byte(base64.StdEncoding.EncodeToString(make([]byte, 160)))); ok {
		t.Fatal("zero audio read as a header")
	}
}

func TestTwilioMessagesAreJSON(t *testing.T) {
	f := twilioFrames{streamSID: "MZ1"}
	for name, render := range map[string]func() []byte{ // each message is valid until the next
		"start": func() []byte { return f.start("AC1", "CA1", map[string]string{"token": "t"}) },
		"mark":  func() []byte { return f.mark([]byte("m42")) },
		"dtmf":  func() []byte { return f.dtmf('5') },
		"stop":  func() []byte { return f.stop("AC1", "CA1") },
	} {
		msg := render()
		var m map[string]any
		if err := json.Unmarshal(msg, &m); err != nil || m["event"] != name || m["streamSid"] != "MZ1" {
			t.Errorf("%s: %s (%v)", name, msg, err)
		}
	}
	o := parseOutbound([]byte(`{"event":"mark","streamSid":"MZ1","mark":{"name":"m7"}}`))
	if string(o.event) != "mark" || string(o.name) != "m7" {
		t.Errorf("mark parsed as %q %q", o.event, o.name)
	}
	if o := parseOutbound([]byte(`{"event":"clear","streamSid":"MZ1"}`)); string(o.event) != "clear" {
		t.Errorf("clear parsed as %q", o.event)
	}
}

func TestMarksEchoWhenPlayed(t *testing.T) {
	c := &caller{l: &load{}, idx: 1}
	ms := int64(time.Millisecond)
	payload := []byte(base64.StdEncoding.EncodeToString(make([]byte, 160))) // 20 ms
	c.onMedia(0, payload)
	c.onMark(0, []byte("m1"))
	c.onMedia(ms, payload)
	c.onMark(ms, []byte("m2"))
	if got := c.dueMarks(nil, 19*ms); len(got) != 0 {
		t.Fatalf("due at 19 ms: %d marks", len(got))
	}
	if got := c.dueMarks(nil, 20*ms); len(got) != 1 || string(got[0].name[:got[0].n]) != "m1" {
		t.Fatalf("due at 20 ms: %+v", got)
	}
	c.onClear(25 * ms) // m2 (due at 40 ms) is echoed at once
	if got := c.dueMarks(nil, 25*ms); len(got) != 1 || string(got[0].name[:got[0].n]) != "m2" {
		t.Fatalf("after clear: %+v", got)
	}
}

func TestSpliceSection(t *testing.T) {
	doc := spliceSection([]byte("# B\n\nintro\n"), "one\n")
	doc = append(doc, "tail\n"...)
	doc = spliceSection(doc, "two\n")
	want := "# B\n\nintro\n\n" + mdBegin + "\ntwo\n" + mdEnd + "\ntail\n"
	if string(doc) != want {
		t.Fatalf("got\n%s\nwant\n%s", doc, want)
	}
}

func TestFlagsRefuseOffMachineTargets(t *testing.T) {
	for name, args := range map[string][]string{
		"remote url":     {"-url", "http://10.1.2.3:8080", "-auth-token", "x"},
		"both targets":   {"-url", "http://127.0.0.1:8080", "-bridge-bin", "x", "-auth-token", "x"},
		"no target":      {},
		"no auth token":  {"-url", "http://127.0.0.1:8080"},
		"too many calls": {"-bridge-bin", "x", "-calls", "100000"},
		"bad model":      {"-bridge-bin", "x", "-model", "gpt"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := parseFlags(args, func(string) string { return "" }, io.Discard); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	c, err := parseFlags([]string{"-url", "http://localhost:8080/", "-calls", "5"}, func(k string) string {
		return map[string]string{"TWILIO_AUTH_TOKEN": "tok"}[k]
	}, io.Discard)
	if err != nil || c.AuthToken != "tok" || c.URL != "http://localhost:8080" || c.PublicURL != c.URL || c.MaxCalls != 15 {
		t.Fatalf("%+v %v", c, err)
	}
	if _, err := startEchoModel("10.0.0.1:0", "k", nil); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("echo model off loopback: %v", err)
	}
}
