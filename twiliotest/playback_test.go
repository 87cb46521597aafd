package twiliotest

import (
	"bytes"
	"slices"
	"testing"
	"time"
)

func TestPlayerPlaysInRealTimeAndEchoesMarks(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	var p player

	if echo := p.addMark(at(0), "idle"); !slices.Equal(echo, []string{"idle"}) {
		t.Errorf("mark with nothing buffered echoed %q, want [idle]", echo)
	}
	audio := bytes.Repeat([]byte{1}, 800)
	p.addAudio(at(0), audio)
	if echo := p.addMark(at(0), "m1"); echo != nil {
		t.Errorf("mark behind audio echoed at once: %q", echo)
	}
	if due, ok := p.nextMarkDue(); !ok || !due.Equal(at(100)) {
		t.Errorf("nextMarkDue = %v %v, want +100ms", due, ok)
	}
	if echo := p.advance(at(50)); echo != nil || p.total != 400 {
		t.Errorf("at 50ms: echo %q, played %d; want none, 400", echo, p.total)
	}
	if echo := p.advance(at(100)); !slices.Equal(echo, []string{"m1"}) || p.total != 800 {
		t.Errorf("at 100ms: echo %q, played %d; want [m1], 800", echo, p.total)
	}
	// Idle time is not owed: audio arriving later starts playing when it arrives.
	p.addAudio(at(1000), bytes.Repeat([]byte{2}, 160))
	if p.advance(at(1010)); p.total != 880 || p.sinceIdle != 80 {
		t.Errorf("after idle: played %d, since idle %d; want 880, 80", p.total, p.sinceIdle)
	}
}

func TestPlayerCarriesFractionsOfAByte(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var p player
	p.addAudio(t0, make([]byte, 100))
	for i := 1; i <= 10; i++ { // 10 steps of 100µs = 1 ms = 8 bytes
		p.advance(t0.Add(time.Duration(i) * 100 * time.Microsecond))
	}
	if p.total != 8 {
		t.Errorf("played %d bytes in 1 ms of small steps, want 8", p.total)
	}
}

func TestPlayerClear(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tests := map[string]struct {
		run      func(p *player)
		clearAt  int
		want     ClearInfo
		wantEcho []string
	}{
		"mid utterance": {
			run: func(p *player) {
				p.addAudio(at(0), make([]byte, 800))
				p.addMark(at(0), "a")
				p.addAudio(at(0), make([]byte, 800))
				p.addMark(at(0), "b")
			},
			clearAt:  50,
			want:     ClearInfo{PlayedBytesOfSinceLastIdle: 400, PlayedBytesTotal: 400, ClearedBytes: 1200, PendingMarks: []string{"a", "b"}},
			wantEcho: []string{"a", "b"},
		},
		"second utterance after idle": {
			run: func(p *player) {
				p.addAudio(at(0), make([]byte, 800))
				p.advance(at(500))
				p.addAudio(at(500), make([]byte, 800))
				p.addMark(at(500), "c")
			},
			clearAt:  525,
			want:     ClearInfo{PlayedBytesOfSinceLastIdle: 200, PlayedBytesTotal: 1000, ClearedBytes: 600, PendingMarks: []string{"c"}},
			wantEcho: []string{"c"},
		},
		"already idle": {
			run: func(p *player) {
				p.addAudio(at(0), make([]byte, 400))
				p.addMark(at(0), "d")
			},
			clearAt:  200,
			want:     ClearInfo{PlayedBytesOfSinceLastIdle: 400, PlayedBytesTotal: 400, PendingMarks: []string{}},
			wantEcho: []string{"d"}, // echoed by the advance to the clear, not by the clear
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var p player
			tc.run(&p)
			echo := p.clear(at(tc.clearAt))
			if !slices.Equal(echo, tc.wantEcho) {
				t.Errorf("echo = %q, want %q", echo, tc.wantEcho)
			}
			got := p.clears[0]
			tc.want.At = at(tc.clearAt)
			if !got.At.Equal(tc.want.At) || got.PlayedBytesOfSinceLastIdle != tc.want.PlayedBytesOfSinceLastIdle ||
				got.PlayedBytesTotal != tc.want.PlayedBytesTotal || got.ClearedBytes != tc.want.ClearedBytes ||
				!slices.Equal(got.PendingMarks, tc.want.PendingMarks) {
				t.Errorf("clear = %+v, want %+v", got, tc.want)
			}
			if p.advance(at(tc.clearAt + 1000)); p.total != tc.want.PlayedBytesTotal || len(p.played) != p.total {
				t.Errorf("played %d after the clear, want %d", p.total, tc.want.PlayedBytesTotal)
			}
		})
	}
}
