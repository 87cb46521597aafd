package chattest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"

	openai "github.com/sashabaranov/go-openai"

	"github.com/vivi/bridge/analysis/chattest"
)

func post(t *testing.T, ctx context.Context, url string, body any) (int, openai.ChatCompletionResponse) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer k")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out openai.ChatCompletionResponse
	_ = json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}

// TestScript: failures and refusals apply to the next n requests only;
// a hold keeps requests until released; every request is recorded.
func TestScript(t *testing.T) {
	s := chattest.New()
	defer s.Close()
	body := openai.ChatCompletionRequest{Model: "m", Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "caller: hi\n"}}}
	s.FailNext(2, 503)
	for i := range 2 {
		if status, _ := post(t, t.Context(), s.URL+"/chat/completions", body); status != 503 {
			t.Fatalf("request %d: %d; want 503", i, status)
		}
	}
	s.RefuseNext(1)
	if _, out := post(t, t.Context(), s.URL+"/chat/completions", body); out.Choices[0].Message.Refusal == "" {
		t.Errorf("not refused: %+v", out)
	}
	status, out := post(t, t.Context(), s.URL+"/chat/completions", body)
	if status != 200 || out.Choices[0].Message.Content != "null" || out.Usage.PromptTokens != 120 || out.Model != "m" {
		t.Errorf("%d %+v", status, out) // no schema: nothing to fill
	}

	select { // the signal of the earlier requests
	case <-s.Arrived():
	default:
	}
	release := s.Hold()
	done := make(chan int)
	go func() {
		status, _ := post(t, context.Background(), s.URL+"/chat/completions", body)
		done <- status
	}()
	<-s.Arrived()
	select {
	case <-done:
		t.Fatal("a held request was answered")
	default:
	}
	release()
	if status := <-done; status != 200 {
		t.Errorf("released request: %d", status)
	}
	if n := len(s.Requests()); n != 5 {
		t.Errorf("%d requests recorded; want 5", n)
	}
}
