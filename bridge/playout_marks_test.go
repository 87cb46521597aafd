package bridge

import (
	"strings"
	"testing"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
)

// TestSmallChunksEachGetAMark: a greeting in 20 ms chunks reaches Twilio
// whole and in order, each chunk followed by its mark.
func TestSmallChunksEachGetAMark(t *testing.T) {
	greeting := realtimetest.Pattern(1280) // 160 ms in 8 chunks of 20 ms
	h := newHarness(t, harnessOpts{model: realtimetest.Options{Greeting: greeting, ChunkBytes: 160}})
	call, _ := h.call(nil)
	waitFor(t, "the greeting at Twilio", func() bool { return call.ReceivedBytes() >= len(greeting) })
	var kinds []string
	for _, m := range waitMessages(t, call, 8, isMark) { // the last mark follows the last bytes
		kinds = append(kinds, m.Event)
	}
	if got, want := strings.Join(kinds, " "), strings.TrimSpace(strings.Repeat("media mark ", 8)); got != want {
		t.Fatalf("messages\n%s\nwant\n%s", got, want)
	}
	if errs := call.ProtocolErrors(); len(errs) != 0 {
		t.Fatalf("protocol errors: %v", errs)
	}
}
