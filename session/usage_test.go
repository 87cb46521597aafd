package session

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

func rt(model string, responses int, in, out int64) ModelUsage {
	return ModelUsage{Model: model, Use: UseRealtime, Responses: responses, InputAudioTokens: in, OutputAudioTokens: out}
}

// TestPutStreamUsage: a stream's running total is added once however often
// it is put, later totals add their difference, other streams and the
// analysis add to the same entries, and the streams kept are bounded.
func TestPutStreamUsage(t *testing.T) {
	s := New("CA1", "ch", "ag", time.Unix(0, 0))
	s.AddUsage(ModelUsage{Model: "gpt-4o-mini", Use: UseAnalysis, Responses: 1, InputTextTokens: 50})
	s.PutStreamUsage("MZ1", []ModelUsage{rt("gpt-realtime", 1, 100, 10)})
	s.PutStreamUsage("MZ1", []ModelUsage{rt("gpt-realtime", 1, 100, 10)}) // re-applied
	s.PutStreamUsage("MZ1", []ModelUsage{rt("gpt-realtime", 3, 300, 30), rt("gpt-realtime-mini", 1, 5, 5)})
	s.PutStreamUsage("MZ1", []ModelUsage{rt("gpt-realtime", 3, 300, 30), rt("gpt-realtime-mini", 1, 5, 5)})
	// The call moved: the next stream's total adds to the same entry.
	s.PutStreamUsage("MZ2", []ModelUsage{rt("gpt-realtime", 2, 40, 4)})
	s.PutStreamUsage("MZ1", []ModelUsage{rt("gpt-realtime", 3, 300, 30), rt("gpt-realtime-mini", 1, 5, 5)}) // late, same total
	got := map[string]ModelUsage{}
	for _, m := range s.Usage.Models {
		got[m.Model+"/"+m.Use] = m
	}
	if m := got["gpt-realtime/realtime"]; m != rt("gpt-realtime", 5, 340, 34) {
		t.Errorf("gpt-realtime = %+v", m)
	}
	if m := got["gpt-realtime-mini/realtime"]; m != rt("gpt-realtime-mini", 1, 5, 5) {
		t.Errorf("gpt-realtime-mini = %+v", m)
	}
	if m := got["gpt-4o-mini/analysis"]; m.InputTextTokens != 50 || m.Responses != 1 {
		t.Errorf("analysis = %+v", m)
	}
	// A total that went down adds nothing.
	s.PutStreamUsage("MZ2", []ModelUsage{rt("gpt-realtime", 1, 10, 1)})
	if m := s.Usage.Models[1]; m != rt("gpt-realtime", 5, 340, 34) {
		t.Errorf("after a smaller total: %+v", m)
	}
	for i := range 10 {
		s.PutStreamUsage(fmt.Sprintf("MZx%d", i), nil)
	}
	if n := len(s.Usage.Streams); n != MaxUsageStreams || s.Usage.Streams[n-1].Stream != "MZx9" {
		t.Errorf("streams %+v", s.Usage.Streams)
	}
	// It survives the record's JSON form (how the stores keep it).
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back Session
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	back.PutStreamUsage("MZx9", nil)
	if len(back.Usage.Models) != 3 || back.Usage.Models[1] != rt("gpt-realtime", 5, 340, 34) {
		t.Errorf("after a round trip: %+v", back.Usage)
	}
}
