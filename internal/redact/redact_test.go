package redact

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestText(t *testing.T) {
	const tok = "e2eauthtoken000000000000000000000"
	r := New(tok, "short")
	for name, tc := range map[string]struct{ in, want string }{
		"plain":            {"Call is not in-progress. Cannot redirect.", "Call is not in-progress. Cannot redirect."},
		"echoed header":    {"bad request\nAuthorization: Basic QUM6dG9rZW4=\nHost: x", "bad request Authorization: [redacted] Host: x"},
		"json header":      {`{"message":"nope","headers":{"Authorization":"Basic QUM6dG9rZW4="}}`, `{"message":"nope","headers":{"Authorization":"[redacted]"}}`},
		"bearer elsewhere": {"upstream said: Bearer sk-abc.def-ghi rejected", "upstream said: Bearer [redacted] rejected"},
		"api key":          {"Incorrect API key provided: sk-proj-AbCdEf123456. See docs", "Incorrect API key provided: [redacted]. See docs"},
		"password pair":    {"dsn host=db password=hunter22 user=x", "dsn host=db password=[redacted] user=x"},
		"json secret":      {`{"auth_token":"abc123","x":1}`, `{"auth_token":"[redacted]","x":1}`},
		"url password":     {"dial redis://:s3cret@10.0.0.1:6379 failed", "dial redis://:[redacted]@10.0.0.1:6379 failed"},
		"own token":        {"token " + tok + " is wrong", "token [redacted] is wrong"},
		"own token bare":   {"echo:" + tok, "echo:[redacted]"},
		"short not secret": {"short", "short"},
		"invalid utf8":     {"bad \xff byte", "bad \uFFFD byte"},
	} {
		t.Run(name, func(t *testing.T) {
			if got := r.Text(tc.in); got != tc.want {
				t.Errorf("Text(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestTextClips(t *testing.T) {
	long := strings.Repeat("é", 2000) // 2 bytes a rune: a cut must not split one
	got := Text(long)
	if !strings.HasSuffix(got, clipped) || len(got) > MaxLen+len(clipped) || !utf8.ValidString(got) {
		t.Fatalf("clipped to %d bytes, valid %v, suffix %q", len(got), utf8.ValidString(got), got[len(got)-20:])
	}
	// A credential just past the scan window is never half-shown.
	huge := strings.Repeat("x ", window/2-3) + "Authorization: Basic QUM6dG9rZW4xMjM0NTY3ODkw"
	if got := Text(huge); strings.Contains(got, "QUM6") {
		t.Fatalf("half a credential left: ...%q", got[len(got)-40:])
	}
}

func TestError(t *testing.T) {
	if Error(nil) != "" || (*Redactor)(nil).Error(nil) != "" {
		t.Fatal("nil error is not empty")
	}
	if got := Error(errors.New("Authorization: Bearer abc")); got != "Authorization: [redacted]" {
		t.Fatalf("got %q", got)
	}
}

// FuzzText: whatever surrounds it, a credential never survives, and the
// result is bounded, valid UTF-8 without control characters.
func FuzzText(f *testing.F) {
	for _, s := range []string{
		"", "plain text", "Authorization: Basic QUM6dG9rZW4=", `{"Authorization":"Bearer x"}`,
		"password=hunter2&x=1", "https://u:p@host/", "sk-proj-abcdefgh", "\xff\xfe", strings.Repeat("a", 600),
		"Status: 401 - ApiError 20003: Authenticate (null) More info: https://www.twilio.com/docs/errors/20003",
	} {
		f.Add(s, s, "AbCdEf0123456789")
	}
	secrets := New("OWNSECRETTOKEN-0123456789")
	f.Fuzz(func(t *testing.T, pre, post, cred string) {
		cred = strings.Map(func(r rune) rune {
			if r < 128 && (unicode.IsLetter(r) || unicode.IsDigit(r)) {
				return r
			}
			return -1
		}, cred)
		for _, in := range []string{pre + post, pre + "\nAuthorization: Basic " + cred + "\n" + post,
			pre + " Bearer " + cred + " " + post, pre + " password=" + cred + " " + post,
			pre + "OWNSECRETTOKEN-0123456789" + post} {
			got := secrets.Text(in)
			if len(got) > MaxLen+len(clipped) || !utf8.ValidString(got) {
				t.Fatalf("Text(%q) = %q: %d bytes, valid %v", in, got, len(got), utf8.ValidString(got))
			}
			for _, r := range got {
				if unicode.IsControl(r) {
					t.Fatalf("Text(%q) = %q keeps control character %U", in, got, r)
				}
			}
			if strings.Contains(got, "OWNSECRETTOKEN-0123456789") {
				t.Fatalf("Text(%q) = %q keeps the process's secret", in, got)
			}
			if len(cred) >= 12 && strings.Contains(in, cred) && !strings.Contains(pre+post, cred) && strings.Contains(got, cred) {
				t.Fatalf("Text(%q) = %q keeps the credential %q", in, got, cred)
			}
		}
	})
}
