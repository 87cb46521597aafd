package bridge

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
)

// TestEveryChunkGetsAMark: each chunk of model audio, however small,
// carries its own mark (DESIGN 1.6): the barge-in and the announcement waits
// rely on Twilio echoing exactly that chunk.
func TestEveryChunkGetsAMark(t *testing.T) {
	var p playout
	for range 8 {
		if !p.wantMark(160) {
			t.Fatal("a 20 ms chunk went without a mark")
		}
	}
	if !p.wantMark(1) {
		t.Fatal("a 1-byte chunk went without a mark")
	}
}

// TestPlayoutTail: audio sent without a mark counts as playing until a mark
// covers it, for barge-in and for the waits on an announcement.
func TestPlayoutTail(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	t.Run("tail alone is playing from when it was sent", func(t *testing.T) {
		var p playout
		p.sentUnmarked("A", 160, ms(0))
		p.sentUnmarked("A", 160, ms(20))
		if got := p.interrupt(ms(25)); !reflect.DeepEqual(got, []truncation{{"A", 25}}) {
			t.Fatalf("interrupt = %v", got)
		}
		if p.cleared != 0 {
			t.Fatalf("cleared %d with no mark sent", p.cleared)
		}
	})
	t.Run("a mark covers the tail", func(t *testing.T) {
		var p playout
		p.sentUnmarked("A", 160, ms(0))
		if !p.markTail(7) || p.tail.n != 0 || len(p.marks) != 1 || p.marks[0].end != 160 {
			t.Fatalf("marks %+v tail %+v", p.marks, p.tail)
		}
		if p.markTail(8) {
			t.Fatal("marked an empty tail")
		}
		p.echo(7, ms(20))
		if !p.idle() {
			t.Fatal("not idle after the echo of the tail's mark")
		}
	})
	t.Run("item change", func(t *testing.T) {
		var p playout
		p.sent("A", 800, 1, ms(0))
		p.sentUnmarked("A", 160, ms(0))
		if !p.tailOf("B") || p.tailOf("A") {
			t.Fatal("tailOf")
		}
		p.markTail(2)
		p.sentUnmarked("B", 160, ms(10))
		// A has played: B, a tail of its own, starts now.
		p.echo(2, ms(120))
		if got := p.interrupt(ms(130)); !reflect.DeepEqual(got, []truncation{{"B", 10}}) {
			t.Fatalf("interrupt = %v", got)
		}
	})
	t.Run("queued tail of the next item is cut at 0", func(t *testing.T) {
		var p playout
		p.sent("A", 800, 1, ms(0))
		p.sentUnmarked("B", 160, ms(0))
		if got := p.interrupt(ms(50)); !reflect.DeepEqual(got, []truncation{{"A", 50}, {"B", 0}}) {
			t.Fatalf("interrupt = %v", got)
		}
	})
}

// TestSmallChunksEachGetAMark: a greeting in 20 ms chunks reaches Twilio
// whole and in order, each chunk followed by its mark.
func TestSmallChunksEachGetAMark(t *testing.T) {
	greeting := realtimetest.Pattern(1280) // 160 ms in 8 chunks of 20 ms
	h := newHarness(t, harnessOpts{model: realtimetest.Options{Greeting: greeting, ChunkBytes: 160}})
	call, _ := h.call(nil)
	waitFor(t, "the greeting at Twilio", func() bool { return call.ReceivedBytes() >= len(greeting) })
	var kinds []string
	waitFor(t, "the last mark", func() bool {
		kinds = kinds[:0]
		for _, m := range call.Messages() {
			kinds = append(kinds, m.Event)
		}
		return len(kinds) == 16
	})
	if got, want := strings.Join(kinds, " "), strings.TrimSpace(strings.Repeat("media mark ", 8)); got != want {
		t.Fatalf("messages\n%s\nwant\n%s", got, want)
	}
	if errs := call.ProtocolErrors(); len(errs) != 0 {
		t.Fatalf("protocol errors: %v", errs)
	}
}
