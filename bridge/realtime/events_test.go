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
		`{"type":"response.done","response":{"id":"r","status":"completed","usage":{"total_tokens":1200,"input_tokens":1000,"output_tokens":200,"input_token_details":{"text_tokens":300,"audio_tokens":700,"image_tokens":0,"cached_tokens":640,"cached_tokens_details":{"text_tokens":256,"audio_tokens":384,"image_tokens":0}},"output_token_details":{"text_tokens":50,"audio_tokens":150}}}}`,
		`{"type":"response.done","response":{"usage":{"input_tokens":"1","output_tokens":-2,"input_token_details":[],"output_token_details":{"audio_tokens":1e3}}}}`,
		`{"type":"response.done","response":{"usage":null}}`, `{"type":"response.done","response":{"usage":7}}`,
		`{"type":""}`, `[]`, `{"type":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := ParseEvent(b)
		if err == nil && ev.Type == "" {
			t.Fatalf("decoded %q without a type", b)
		}
		if err == nil && ev.Response != nil && ev.Response.Usage != nil {
			u := ev.Response.Usage
			for _, n := range []int64{u.TotalTokens, u.InputTokens, u.OutputTokens, u.Input.TextTokens, u.Input.AudioTokens,
				u.Input.ImageTokens, u.Input.CachedTokens, u.Input.Cached.TextTokens, u.Input.Cached.AudioTokens,
				u.Input.Cached.ImageTokens, u.Output.TextTokens, u.Output.AudioTokens} {
				if n < 0 {
					t.Fatalf("negative token count in %+v from %q", u, b)
				}
			}
		}
	})
}

func TestParseUsage(t *testing.T) {
	full := `{"type":"response.done","response":{"id":"r","status":"completed","usage":{"total_tokens":1200,"input_tokens":1000,"output_tokens":200,` +
		`"input_token_details":{"text_tokens":300,"audio_tokens":700,"image_tokens":0,"cached_tokens":640,"cached_tokens_details":{"text_tokens":256,"audio_tokens":384,"image_tokens":0}},` +
		`"output_token_details":{"text_tokens":50,"audio_tokens":150}}}}`
	for name, tc := range map[string]struct {
		event string
		want  *Usage
	}{
		"full": {full, &Usage{TotalTokens: 1200, InputTokens: 1000, OutputTokens: 200,
			Input:  InputTokenDetails{TextTokens: 300, AudioTokens: 700, CachedTokens: 640, Cached: TokenDetails{TextTokens: 256, AudioTokens: 384}},
			Output: OutputTokenDetails{TextTokens: 50, AudioTokens: 150}}},
		"absent":      {`{"type":"response.done","response":{"id":"r","status":"completed"}}`, nil},
		"null":        {`{"type":"response.done","response":{"id":"r","usage":null}}`, nil},
		"not object":  {`{"type":"response.done","response":{"id":"r","usage":[1,2]}}`, nil},
		"empty":       {`{"type":"response.done","response":{"id":"r","usage":{}}}`, &Usage{}},
		"totals only": {`{"type":"response.done","response":{"usage":{"input_tokens":10,"output_tokens":4}}}`, &Usage{InputTokens: 10, OutputTokens: 4}},
		"no cached details": {`{"type":"response.done","response":{"usage":{"input_token_details":{"audio_tokens":9,"cached_tokens":5}}}}`,
			&Usage{Input: InputTokenDetails{AudioTokens: 9, CachedTokens: 5}}},
		"wrong types read as zero": {`{"type":"response.done","response":{"id":"r","usage":{"total_tokens":"12","input_tokens":-3,"output_tokens":1.5,` +
			`"input_token_details":7,"output_token_details":{"text_tokens":true,"audio_tokens":99999999999999999999999}}}}`, &Usage{}},
		"case folded key": {`{"type":"response.done","response":{"USAGE":{"Total_Tokens":3}}}`, &Usage{TotalTokens: 3}},
	} {
		t.Run(name, func(t *testing.T) {
			ev, err := ParseEvent([]byte(tc.event))
			if err != nil {
				t.Fatal(err)
			}
			got := ev.Response.Usage
			if (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want {
				t.Fatalf("usage = %+v, want %+v", got, tc.want)
			}
		})
	}
	// The rest of the response is read as before.
	ev, err := ParseEvent([]byte(`{"type":"response.done","response":{"id":"r1","status":"cancelled","output":[{"id":"i","type":"function_call"}],"usage":"x"}}`))
	if err != nil || ev.Response.ID != "r1" || ev.Response.Status != "cancelled" || len(ev.Response.Output) != 1 || ev.Response.Usage != nil {
		t.Fatalf("response %+v, %v", ev.Response, err)
	}
	// A response of the wrong type still fails the event, as before.
	if _, err := ParseEvent([]byte(`{"type":"response.done","response":{"id":5}}`)); err == nil {
		t.Fatal("id 5 accepted")
	}
}
