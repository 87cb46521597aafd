package realtimetest

import (
	"encoding/json"
	"testing"
)

// TestUsageOption: Options.Usage is every response.done's usage, as is,
// unless the response has its own (Respond with Response.Usage); without
// either the fake estimates the output audio tokens.
func TestUsageOption(t *testing.T) {
	fixed := json.RawMessage(`{"input_tokens":5,"output_tokens":2,"total_tokens":7}`)
	s := newServer(t, Options{Usage: fixed})
	cl, c := dial(t, s)
	cl.expect("session.created")
	cl.send(map[string]any{"type": "response.create"})
	done, _ := cl.until("response.done")
	if got, _ := json.Marshal(done.obj("response")["usage"]); string(got) != string(fixed) {
		t.Errorf("greeting usage %s, want %s", got, fixed)
	}
	own := json.RawMessage(`{"output_tokens":"odd"}`)
	c.Respond(Response{Transcript: "hi", Usage: own})
	done, _ = cl.until("response.done")
	if got, _ := json.Marshal(done.obj("response")["usage"]); string(got) != string(own) {
		t.Errorf("own usage %s, want %s", got, own)
	}

	s2 := newServer(t, Options{})
	cl2, _ := dial(t, s2)
	cl2.expect("session.created")
	cl2.send(map[string]any{"type": "response.create"})
	done, _ = cl2.until("response.done")
	u := done.obj("response").obj("usage")
	if u.num("output_tokens") != defaultGreeting/(50*bytesPerMs) || u.obj("output_token_details").num("audio_tokens") != u.num("output_tokens") {
		t.Errorf("estimated usage %v", u)
	}
}
