package session

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

func newTokens(t *testing.T) *Tokens {
	t.Helper()
	tk, err := NewTokens([]byte(strings.Repeat("k", 32)), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func TestTokenRoundTrip(t *testing.T) {
	tk := newTokens(t)
	tok, c, err := tk.Issue("CA1", "ch1", "ag1", t0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tk.Verify(tok, "CA1", t0.Add(59*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if got != c || got.ChannelID != "ch1" || got.AgentID != "ag1" || got.ID == "" {
		t.Fatalf("claims %+v want %+v", got, c)
	}
	tok2, c2, _ := tk.Issue("CA1", "ch1", "ag1", t0)
	if tok2 == tok || c2.ID == c.ID {
		t.Fatal("two tokens share an id")
	}
}

func TestTokenRefused(t *testing.T) {
	tk := newTokens(t)
	tok, _, _ := tk.Issue("CA1", "ch1", "ag1", t0)
	other, _ := NewTokens([]byte(strings.Repeat("x", 32)), time.Minute)
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	tests := map[string]struct {
		tk   *Tokens
		tok  string
		sid  string
		at   time.Time
		want error
	}{
		"other call":        {tk, tok, "CA2", t0, ErrTokenCallSID},
		"expired":           {tk, tok, "CA1", t0.Add(time.Minute), ErrTokenExpired},
		"altered payload":   {tk, flip(tok, 3), "CA1", t0, ErrTokenSignature},
		"altered signature": {tk, flip(tok, len(tok)-3), "CA1", t0, ErrTokenSignature},
		"other secret":      {other, tok, "CA1", t0, ErrTokenSignature},
		"empty":             {tk, "", "CA1", t0, ErrTokenInvalid},
		"no dot":            {tk, "abc", "CA1", t0, ErrTokenInvalid},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := tt.tk.Verify(tt.tok, tt.sid, tt.at); !errors.Is(err, tt.want) || !errors.Is(err, ErrTokenInvalid) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestTokenSecretLength(t *testing.T) {
	if _, err := NewTokens([]byte("short"), time.Minute); err == nil {
		t.Fatal("short secret accepted")
	}
}

func FuzzTokenVerify(f *testing.F) {
	tk, _ := NewTokens([]byte(strings.Repeat("k", 32)), time.Minute)
	// A fixed valid token (Issue draws a random id; the fuzzer needs one token in every worker).
	p := base64.RawURLEncoding.EncodeToString([]byte(`{"jti":"x","sid":"CA1","ch":"c","ag":"a","exp":1795770060}`))
	tok := p + "." + base64.RawURLEncoding.EncodeToString(tk.mac(p))
	f.Add(tok)
	f.Add("a.b")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := tk.Verify(s, "CA1", t0)
		if err == nil && s != tok {
			t.Fatalf("forged token accepted: %q -> %+v", s, c)
		}
	})
}

// The claims of an issued token sign that same token (the voice webhook
// answers a retry with the token it answered first).
func TestSignReproducesIssuedToken(t *testing.T) {
	toks, err := NewTokens([]byte("0123456789abcdef0123456789abcdef"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	token, c, err := toks.Issue("CA1", "ch", "ag", now)
	if err != nil {
		t.Fatal(err)
	}
	again, err := toks.Sign(c)
	if err != nil || again != token {
		t.Fatalf("Sign(claims) = %q, %v; want the issued %q", again, err, token)
	}
	if got, err := toks.Verify(again, "CA1", now); err != nil || got != c {
		t.Fatalf("Verify = %+v, %v", got, err)
	}
}
