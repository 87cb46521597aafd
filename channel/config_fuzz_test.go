package channel_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/vivi/bridge/channel"
)

// FuzzParseConfig: any file either parses into agents and channels or is
// refused with errors that name a line; it never panics.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("agents:\n  - id: a\n    name: A\n    realtime: true\nchannels:\n  - id: c\n    name: C\n    originHost: 203.0.113.1\n    extensions: [\"1001\"]\n    agentId: a\n"))
	f.Add([]byte("agents: [{id: a, name: A, dtmf: {\"0\": x}}]\n"))
	f.Add([]byte("channels:\n  - extensions: [1001, \"12a\"]\n    bogus: 1\n"))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := channel.ParseConfig(bytes.NewReader(data))
		if err != nil {
			for _, ce := range channel.ConfigErrors(err) {
				if ce.Line < 0 {
					t.Fatalf("error without a usable line: %v", ce)
				}
			}
			var ce *channel.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error is not a ConfigError: %v", err)
			}
		}
	})
}
