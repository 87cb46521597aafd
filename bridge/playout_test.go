package bridge

import (
	"reflect"
	"testing"
	"time"
)

// step is one event of a playout scenario, at ms after t0.
type step struct {
	at   int
	send string // item of an 800-byte (100 ms) chunk sent, followed by the next mark
	echo uint64 // mark echoed
}

func TestPlayoutInterrupt(t *testing.T) {
	tests := map[string]struct {
		steps []step
		at    int // barge-in time
		want  []truncation
	}{
		"nothing sent": {at: 100, want: nil},
		"all played": {
			steps: []step{{at: 0, send: "A"}, {at: 100, echo: 1}},
			at:    500, want: nil,
		},
		"playing, no echo yet: capped at the first pending mark": {
			steps: []step{{at: 0, send: "A"}, {at: 0, send: "A"}, {at: 0, send: "A"}},
			at:    150, want: []truncation{{"A", 100}},
		},
		"playing, within the first chunk": {
			steps: []step{{at: 0, send: "A"}, {at: 0, send: "A"}},
			at:    40, want: []truncation{{"A", 40}},
		},
		"after echoes": {
			steps: []step{{at: 0, send: "A"}, {at: 0, send: "A"}, {at: 0, send: "A"}, {at: 100, echo: 1}, {at: 200, echo: 2}},
			at:    260, want: []truncation{{"A", 260}},
		},
		"echo late: capped at the next pending mark": {
			steps: []step{{at: 0, send: "A"}, {at: 0, send: "A"}, {at: 100, echo: 1}},
			at:    450, want: []truncation{{"A", 200}},
		},
		"buffer ran dry inside the item": {
			steps: []step{{at: 0, send: "A"}, {at: 100, echo: 1}, {at: 300, send: "A"}},
			at:    350, want: []truncation{{"A", 150}},
		},
		"second item queued behind the first": {
			steps: []step{{at: 0, send: "A"}, {at: 0, send: "A"}, {at: 10, send: "B"}, {at: 100, echo: 1}},
			at:    150, want: []truncation{{"A", 150}, {"B", 0}},
		},
		"second item playing": {
			steps: []step{{at: 0, send: "A"}, {at: 0, send: "A"}, {at: 10, send: "B"}, {at: 100, echo: 1}, {at: 200, echo: 2}},
			at:    250, want: []truncation{{"B", 50}},
		},
		"item started after the buffer was idle": {
			steps: []step{{at: 0, send: "A"}, {at: 100, echo: 1}, {at: 1000, send: "B"}, {at: 1000, send: "B"}},
			at:    1080, want: []truncation{{"B", 80}},
		},
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var p playout
			var seq uint64
			for _, s := range tc.steps {
				if s.send != "" {
					seq++
					p.sent(s.send, 800, seq, ms(s.at))
				}
				if s.echo != 0 && !p.echo(s.echo, ms(s.at)) {
					t.Fatalf("echo %d not counted", s.echo)
				}
			}
			got := p.interrupt(ms(tc.at))
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("interrupt = %v, want %v", got, tc.want)
			}
			if !p.idle() {
				t.Fatal("not idle after interrupt")
			}
		})
	}
}

func TestPlayoutIgnoresClearedEchoes(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var p playout
	p.sent("A", 800, 1, t0)
	p.sent("A", 800, 2, t0)
	if cuts := p.interrupt(t0.Add(50 * time.Millisecond)); len(cuts) != 1 || cuts[0].audioEndMs != 50 {
		t.Fatalf("cuts = %v", cuts)
	}
	// Twilio echoes every pending mark after the clear: they must not count.
	for _, seq := range []uint64{1, 2} {
		if p.echo(seq, t0.Add(60*time.Millisecond)) {
			t.Fatalf("echo %d of a cleared mark counted", seq)
		}
	}
	// The next item starts from an idle buffer.
	p.sent("B", 800, 3, t0.Add(time.Second))
	if got := p.interrupt(t0.Add(time.Second + 30*time.Millisecond)); len(got) != 1 || got[0] != (truncation{"B", 30}) {
		t.Fatalf("after clear: %v", got)
	}
	if p.echo(99, t0) {
		t.Fatal("unknown mark counted")
	}
}

func TestHeldAudio(t *testing.T) {
	h := heldAudio{limit: 300}
	var evicted []int
	mk := func(id int) *[]byte { b := []byte{byte(id)}; return &b }
	for i := 1; i <= 5; i++ {
		h.push(heldChunk{buf: mk(i), audio: 100}, func(b *[]byte) { evicted = append(evicted, int((*b)[0])) })
	}
	if !reflect.DeepEqual(evicted, []int{1, 2}) || h.dropped != 2 || h.droppedBytes != 200 {
		t.Fatalf("evicted %v dropped %d/%d", evicted, h.dropped, h.droppedBytes)
	}
	order := []int{int((*h.pop().buf)[0])}
	for _, f := range h.drain() {
		order = append(order, int((*f.buf)[0]))
	}
	if !reflect.DeepEqual(order, []int{3, 4, 5}) || h.len() != 0 {
		t.Fatalf("drained %v, len %d", order, h.len())
	}
	// A long hold compacts and stays bounded.
	for i := range 1000 {
		h.push(heldChunk{buf: mk(i), audio: 100}, func(*[]byte) {})
	}
	if h.len() != 3 || cap(h.chunks) > 256 {
		t.Fatalf("len %d cap %d", h.len(), cap(h.chunks))
	}
}
