package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap/zapcore"

	"github.com/vivi/bridge/bridge/realtime/realtimetest"
	"github.com/vivi/bridge/session"
	"github.com/vivi/bridge/twiliotest"
)

// functionOutputs returns the outputs the bridge sent for tool calls, by call_id.
func functionOutputs(t *testing.T, mc *realtimetest.Conn) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, e := range mc.Events() {
		if e.Type != "conversation.item.create" {
			continue
		}
		var it struct {
			Item struct {
				Type   string `json:"type"`
				CallID string `json:"call_id"`
				Output string `json:"output"`
			} `json:"item"`
		}
		_ = json.Unmarshal(e.Raw, &it)
		if it.Item.Type == "function_call_output" {
			out[it.Item.CallID] = it.Item.Output
		}
	}
	return out
}

func TestDTMF(t *testing.T) {
	tr := &recTransfers{}
	h := newHarness(t, harnessOpts{transfers: tr})
	call, mc := h.call(nil)
	waitEvent(t, mc, "response.create", 1) // the greeting

	call.Digit("5")
	waitEvent(t, mc, "response.create", 2)
	got := itemTexts(t, mc)
	if len(got) != 1 || got[0] != [2]string{"user/input_text", "The caller pressed 5."} {
		t.Fatalf("items %v", got)
	}

	call.Digit("0") // bound to Front Desk
	waitFor(t, "the DTMF transfer", func() bool { return len(tr.requests()) == 1 })
	req := tr.requests()[0]
	if req.Destination.Name != "Front Desk" || req.Destination.Number != "2001" || req.Via != ViaDTMF ||
		req.CallSID != call.CallSID() || req.ChannelID != testChannel || req.AgentID != "ag1" {
		t.Fatalf("transfer request %+v", req)
	}
	waitFor(t, "both digits recorded", func() bool {
		n := 0
		for _, e := range h.sessions.get(call.CallSID()).Timeline {
			if e.Type == session.EventDigit {
				n++
			}
		}
		return n == 2
	})
	if n := len(itemTexts(t, mc)); n != 1 {
		t.Fatalf("the bound digit was told to the model too (%d items)", n)
	}
}

func TestDTMFTransfersNotEnabled(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	call, mc := h.call(nil)
	waitEvent(t, mc, "response.create", 1)
	call.Digit("0")
	h.waitLog(zapcore.InfoLevel, "transfer requested (transfers not enabled)")
	keepsRelaying(t, mc)
}

func TestEndCallWaitsForGoodbye(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	call, mc := h.call(nil)
	waitFor(t, "the greeting at Twilio", func() bool { return call.ReceivedBytes() >= 1600 })

	// At the REST request, Twilio must have played the whole goodbye.
	var mu sync.Mutex
	var buffered, received = -1, -1
	h.rest.OnCallUpdate(func(sid string, form url.Values) (int, string) {
		mu.Lock()
		defer mu.Unlock()
		buffered, received = call.BufferedBytes(), call.ReceivedBytes()
		return 200, `{"sid":"` + sid + `","status":"completed"}`
	})
	goodbye := realtimetest.Pattern(4000) // 500 ms
	mc.Speak("item_bye", goodbye, "Goodbye!")
	callID := mc.CallFunction("end_call", "{}")

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	req, err := h.rest.WaitRequest(ctx, func(r twiliotest.RESTRequest) bool { return r.Form.Get("Status") == "completed" })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(req.Path, "/Calls/"+call.CallSID()+".json") {
		t.Fatalf("hang-up path %s", req.Path)
	}
	mu.Lock()
	if received < 1600+len(goodbye) || buffered != 0 {
		t.Fatalf("hang-up with %d of %d bytes still buffered at Twilio", buffered, received)
	}
	mu.Unlock()
	if out := functionOutputs(t, mc)[callID]; out != `{"ok":true}` {
		t.Fatalf("end_call output %q", out)
	}
	waitDone(t, "the Twilio socket to close", call.Done())
	s := h.waitEnded(call.CallSID())
	if s.EndReason != ReasonAgentHangup {
		t.Fatalf("end reason %q", s.EndReason)
	}
	if ev, ok := hasEvent(s, session.EventToolCall); !ok || ev.Detail != "end_call {}" {
		t.Fatalf("tool_call event %+v", ev)
	}
}

func TestTransferTool(t *testing.T) {
	tr := &recTransfers{}
	h := newHarness(t, harnessOpts{transfers: tr})
	call, mc := h.call(nil)
	waitEvent(t, mc, "response.create", 1)

	bad := mc.CallFunction("transfer_call", `{"destination":"Nowhere"}`)
	waitEvent(t, mc, "response.create", 2)
	if out := functionOutputs(t, mc)[bad]; out != `{"ok":false,"error":"unknown destination"}` {
		t.Fatalf("unknown destination output %q", out)
	}

	good := mc.CallFunction("transfer_call", `{"destination":"Sales"}`)
	waitFor(t, "the transfer", func() bool { return functionOutputs(t, mc)[good] != "" })
	if out := functionOutputs(t, mc)[good]; out != `{"ok":true,"status":"transferring"}` {
		t.Fatalf("transfer output %q", out)
	}
	reqs := tr.requests()
	if len(reqs) != 1 || reqs[0].Destination.Name != "Sales" || reqs[0].Via != ViaTool {
		t.Fatalf("transfers %+v (want exactly one: output_item.done must not act again)", reqs)
	}
	waitFor(t, "two tool_call events", func() bool {
		var details []string
		for _, e := range h.sessions.get(call.CallSID()).Timeline {
			if e.Type == session.EventToolCall {
				details = append(details, e.Detail)
			}
		}
		return len(details) == 2 && details[0] == `transfer_call {"destination":"Nowhere"}`
	})
	if call.ClosedByServer() {
		t.Fatal("the call ended")
	}
	// Twilio stops the stream to run the REFER.
	call.Stop()
	waitDone(t, "the model connection to close", mc.Done())
	waitFor(t, "the call counted as transferred", func() bool {
		return h.counter("vivi_bridge_streams_ended_total", "reason", labelTransferred) == 1
	})
}

func TestTransferToolFailureAndUnavailable(t *testing.T) {
	t.Run("transferer fails", func(t *testing.T) {
		tr := &recTransfers{err: errors.New("twilio: 500")}
		h := newHarness(t, harnessOpts{transfers: tr})
		_, mc := h.call(nil)
		waitEvent(t, mc, "response.create", 1)
		id := mc.CallFunction("transfer_call", `{"destination":"Sales"}`)
		waitEvent(t, mc, "response.create", 2)
		if out := functionOutputs(t, mc)[id]; out != `{"ok":false,"error":"transfer failed"}` {
			t.Fatalf("output %q", out)
		}
		h.waitLog(zapcore.WarnLevel, "transfer failed")
	})
	t.Run("no transferer", func(t *testing.T) {
		h := newHarness(t, harnessOpts{})
		_, mc := h.call(nil)
		waitEvent(t, mc, "response.create", 1)
		id := mc.CallFunction("transfer_call", `{"destination":"Sales"}`)
		waitEvent(t, mc, "response.create", 2)
		if out := functionOutputs(t, mc)[id]; out != `{"ok":false,"error":"transfers are not available"}` {
			t.Fatalf("output %q", out)
		}
		h.waitLog(zapcore.InfoLevel, "transfer requested (transfers not enabled)")
	})
}
