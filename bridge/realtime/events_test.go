package realtime

import "testing"

// FuzzParseEvent: any server event text decodes or fails cleanly; a
// decoded event always has a type.
func FuzzParseEvent(f *testing.F) {
	for _, s := range []string{
		`{"type":"response.done","response":{"id":"r","status":"completed","output":[{"id":"i","type":"function_call","call_id":"c","name":"end_call","arguments":"{}"}]}}`,
		`{"type":"response.function_call_arguments.done","item_id":"i","call_id":"c","arguments":"{}"}`,
		`{"type":"response.output_item.added","item":{"id":"i","type":"function_call","call_id":"c","name":"x"}}`,
		`{"type":"error","error":{"type":"invalid_request_error","code":null,"message":"m"}}`,
		`{"type":""}`, `[]`, `{"type":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := ParseEvent(b)
		if err == nil && ev.Type == "" {
			t.Fatalf("decoded %q without a type", b)
		}
	})
}
