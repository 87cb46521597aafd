package channel_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/vivi/bridge/channel"
)

const goodYAML = `# vivi.yaml
agents:
  - id: front
    name: Front desk agent
    instructions: Be brief.
    voice: marin
    realtime: true
    transferDestinations:
      - name: Front Desk
        number: 2001
        trigger: the caller asks for a person
    dtmf:
      0: Front Desk
    turnDetection:
      threshold: 0.6
      silenceMs: 400
channels:
  - id: acme
    name: ACME HQ
    originHost: pbx.acme.test
    originProtocol: udp
    extensions: [1001, "01002"]
    agentId: front
    eventsUrl: https://hooks.acme.test/vivi
  - id: beta
    originHost: 192.0.2.20
    extensions:
      - "2001"
    originIps: [192.0.2.21, 192.0.2.20]
`

func TestParseConfig(t *testing.T) {
	cfg, err := channel.ParseConfig(strings.NewReader(goodYAML))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	if len(cfg.Agents) != 1 || len(cfg.Channels) != 2 {
		t.Fatalf("got %d agents, %d channels", len(cfg.Agents), len(cfg.Channels))
	}
	a := cfg.Agents[0]
	if a.TransferDestinations[0].Number != "2001" || a.DTMF["0"] != "Front Desk" || !a.Realtime ||
		a.TurnDetection == nil || a.TurnDetection.Threshold != 0.6 || a.TurnDetection.SilenceMs != 400 {
		t.Errorf("agent = %+v", a)
	}
	c := cfg.Channels[0]
	if c.OriginProtocol != channel.UDP || c.OriginPort != 5060 || !reflect.DeepEqual(c.Extensions, []string{"1001", "01002"}) {
		t.Errorf("channel = %+v; want UDP 5060 with extensions as written", c)
	}
	if got := cfg.Channels[1].OriginIPs; !reflect.DeepEqual(got, []string{"192.0.2.20", "192.0.2.21"}) {
		t.Errorf("originIps = %v", got)
	}
}

func TestParseConfigEmpty(t *testing.T) {
	cfg, err := channel.ParseConfig(strings.NewReader("# nothing yet\n"))
	if err != nil || len(cfg.Agents)+len(cfg.Channels) != 0 {
		t.Fatalf("got %+v, %v", cfg, err)
	}
}

func TestParseConfigErrorsNameLineAndField(t *testing.T) {
	tests := map[string]struct {
		yaml string
		want []string // each error's text, in order
	}{
		"unknown top-level field": {
			yaml: "agents: []\nchanels: []\n",
			want: []string{`config:2: chanels: unknown_field: unknown field "chanels"`},
		},
		"unknown channel field": {
			yaml: "channels:\n  - id: a\n    originHost: 192.0.2.1\n    extension: [\"1\"]\n",
			want: []string{`config:4: channels[0].extension: unknown_field: unknown field "extension"`},
		},
		"output fields are unknown": {
			yaml: "channels:\n  - id: a\n    originHost: 192.0.2.1\n    extensions: [\"1\"]\n    eventsSecret: x\n    destination: {}\n",
			want: []string{
				`config:5: channels[0].eventsSecret: unknown_field: unknown field "eventsSecret"`,
				`config:6: channels[0].destination: unknown_field: unknown field "destination"`,
			},
		},
		"unknown nested field": {
			yaml: "agents:\n  - id: a\n    name: A\n    turnDetection:\n      silence: 3\n",
			want: []string{`config:5: agents[0].turnDetection.silence: unknown_field: unknown field "silence"`},
		},
		"wrong type": {
			yaml: "channels:\n  - id: a\n    originHost: 192.0.2.1\n    originPort: five\n    extensions: [\"1\"]\n",
			want: []string{`config:4: channels[0].originPort: invalid_yaml: want an integer, got "five"`},
		},
		"list expected": {
			yaml: "channels:\n  - id: a\n    originHost: 192.0.2.1\n    extensions: \"1001\"\n",
			want: []string{`config:4: channels[0].extensions: invalid_yaml: want a list, got "1001"`},
		},
		"field twice": {
			yaml: "agents:\n  - id: a\n    name: A\n    name: B\n",
			want: []string{`config:4: agents[0].name: invalid_yaml: field "name" is given twice`},
		},
		"syntax error": {
			yaml: "agents:\n  - id: a\n    name: a: b\n",
			want: []string{"config:3: invalid_yaml: mapping values are not allowed in this context"},
		},
		"validation of a list item": {
			yaml: "channels:\n  - id: a\n    originHost: 192.0.2.1\n    extensions:\n      - \"1001\"\n      - 10x2\n",
			want: []string{`config:6: channels[0].extensions[1]: invalid_extension: "10x2" is not 1 to 20 digits`},
		},
		"missing id reported at the item": {
			yaml: "agents:\n  - id: a\n    name: A\n  - name: B\n",
			want: []string{`config:4: agents[1].id: invalid_id: is required`},
		},
		"duplicate ids": {
			yaml: "agents:\n  - id: a\n    name: A\n  - id: a\n    name: B\n",
			want: []string{`config:4: agents[1].id: duplicate_id: agent "a" is defined twice`},
		},
		"every problem is reported": {
			yaml: "agents:\n  - id: A\n    name: A\nchannels:\n  - id: c\n    originHost: pbx\n    extensions: [\"1\"]\n",
			want: []string{
				`config:2: agents[0].id: invalid_id: `,
				`config:6: channels[0].originHost: invalid_origin_host: `,
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := channel.ParseConfig(strings.NewReader(tc.yaml))
			errs := channel.ConfigErrors(err)
			if len(errs) != len(tc.want) {
				t.Fatalf("errors = %v; want %d", err, len(tc.want))
			}
			for i, w := range tc.want {
				if got := errs[i].Error(); !strings.HasPrefix(got, w) {
					t.Errorf("error %d = %q; want prefix %q", i, got, w)
				}
			}
		})
	}
}

func TestParseConfigFileNamesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vivi.yaml")
	data := "channels:\n  - id: a\n    originHost: 192.0.2.1\n    extensions: [\"1001\", \"1001\"]\n"
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := channel.ParseConfigFile(path)
	want := path + `:4: channels[0].extensions[1]: invalid_extension: "1001" is listed twice`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v; want %s", err, want)
	}
}

// TestYAMLValidationTable runs every validation case through the YAML
// parser: same code, the field under its path, and the line of that field.
func TestYAMLValidationTable(t *testing.T) {
	check := func(t *testing.T, doc any, prefix, code, field string) {
		t.Helper()
		data, err := yaml.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		_, err = channel.ParseConfig(strings.NewReader(string(data)))
		errs := channel.ConfigErrors(err)
		if len(errs) != 1 {
			t.Fatalf("errors = %v; want one\n%s", err, data)
		}
		ce := errs[0]
		if ce.Code != code || ce.Path != prefix+"."+field {
			t.Fatalf("got %s at %s; want %s at %s.%s", ce.Code, ce.Path, code, prefix, field)
		}
		var v *channel.ValidationError
		if !errors.As(err, &v) || v.Code != code {
			t.Errorf("the *ValidationError is not in the chain: %v", err)
		}
		lines := strings.Split(string(data), "\n")
		if ce.Line < 1 || ce.Line > len(lines) {
			t.Fatalf("line %d out of range\n%s", ce.Line, data)
		}
		if key := lastKey(field); !strings.Contains(lines[ce.Line-1], key) {
			t.Errorf("line %d is %q; want it to hold %q\n%s", ce.Line, lines[ce.Line-1], key, data)
		}
	}
	for name, tc := range agentCases() {
		t.Run("agent "+name, func(t *testing.T) {
			a := baseAgent()
			tc.mutate(&a)
			check(t, map[string]any{"agents": []channel.Agent{a}}, "agents[0]", tc.code, tc.field)
		})
	}
	for name, tc := range channelCases() {
		t.Run("channel "+name, func(t *testing.T) {
			c := baseChannel()
			tc.mutate(&c)
			check(t, map[string]any{"channels": []channel.Channel{c}}, "channels[0]", tc.code, tc.field)
		})
	}
}

// lastKey is what the line of a field path shows: its key, or "- " for a
// list item.
func lastKey(field string) string {
	if strings.HasSuffix(field, "]") {
		return "- "
	}
	if i := strings.LastIndex(field, "."); i >= 0 {
		return field[i+1:]
	}
	return field
}
