package usage

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vivi/bridge/session"
)

func TestLookup(t *testing.T) {
	p := Default()
	for model, want := range map[string]float64{
		"gpt-realtime":                            32,
		"gpt-realtime-2025-08-28":                 32,
		"gpt-realtime-mini-2025-10-06":            10, // snapshot date stripped
		"gpt-4o-mini-realtime-preview-2024-12-17": 10,
		"gpt-4o-realtime-preview":                 40,
	} {
		pr, ok := p.Lookup(model)
		if !ok || pr.AudioInput != want {
			t.Errorf("Lookup(%q) = %+v, %v; want audio input %v", model, pr, ok, want)
		}
	}
	for _, model := range []string{"gpt-5", "gpt-realtime-2025-08", "", "gpt-realtime-mini-x"} {
		if pr, ok := p.Lookup(model); ok {
			t.Errorf("Lookup(%q) = %+v, want none", model, pr)
		}
	}
	if pr, _ := p.Lookup("gpt-4o-mini"); pr != (Price{TextInput: 0.15, TextCachedInput: 0.075, TextOutput: 0.60}) {
		t.Errorf("gpt-4o-mini = %+v", pr)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-12 }

// TestApply: costs from the default table, to the figure: cached tokens are
// billed at the cached price and taken off the input, unknown models are
// listed and cost nothing, and a second Apply changes nothing.
func TestApply(t *testing.T) {
	u := &session.Usage{Models: []session.ModelUsage{
		{Model: "gpt-realtime", Use: session.UseRealtime, Responses: 3,
			InputTextTokens: 10_000, CachedTextTokens: 4_000, InputAudioTokens: 20_000, CachedAudioTokens: 5_000,
			OutputTextTokens: 1_000, OutputAudioTokens: 3_000},
		{Model: "gpt-4o-mini-2024-07-18", Use: session.UseAnalysis, Responses: 1, InputTextTokens: 2_000, CachedTextTokens: 1_000, OutputTextTokens: 500},
		{Model: "my-local-model", Use: session.UseAnalysis, Responses: 1, InputTextTokens: 99},
		{Model: "another", Use: session.UseRealtime, OutputAudioTokens: 1},
	}}
	Apply(u, Default())
	// gpt-realtime: 6000*4 + 4000*0.4 + 1000*16 + 15000*32 + 5000*0.4 + 3000*64 = 715,600 per 1M
	// gpt-4o-mini: 1000*0.15 + 1000*0.075 + 500*0.6 = 525 per 1M
	wantRT, wantMini := 0.7156, 0.000525
	if m := u.Models[0]; !m.Priced || !near(m.CostUSD, wantRT) {
		t.Errorf("gpt-realtime: %+v, want cost %v", m, wantRT)
	}
	if m := u.Models[1]; !m.Priced || !near(m.CostUSD, wantMini) {
		t.Errorf("gpt-4o-mini: %+v, want cost %v", m, wantMini)
	}
	if m := u.Models[2]; m.Priced || m.CostUSD != 0 || m.InputTextTokens != 99 {
		t.Errorf("unknown model: %+v", m)
	}
	if !near(u.CostUSD, wantRT+wantMini) || u.CostUSD != 0.716125 {
		t.Errorf("total %v, want %v", u.CostUSD, wantRT+wantMini)
	}
	if !slices.Equal(u.Unpriced, []string{"another", "my-local-model"}) {
		t.Errorf("unpriced %v", u.Unpriced)
	}
	before := *u
	Apply(u, Default())
	if u.CostUSD != before.CostUSD || !slices.Equal(u.Unpriced, before.Unpriced) {
		t.Errorf("a second Apply changed %+v to %+v", before, u)
	}
	Apply(nil, Default()) // no panic
	// A model priced since: no longer unpriced.
	p := Default()
	p["my-local-model"] = Price{TextInput: 1e6}
	Apply(u, p)
	if !slices.Equal(u.Unpriced, []string{"another"}) || !near(u.Models[2].CostUSD, 99) {
		t.Errorf("after pricing my-local-model: %+v", u)
	}
}

func TestCostMoreCachedThanInput(t *testing.T) {
	// A malformed count never makes a negative cost.
	c := Price{TextInput: 1, TextCachedInput: 1}.Cost(session.ModelUsage{InputTextTokens: 1, CachedTextTokens: 1_000_000})
	if c != 1 {
		t.Fatalf("cost %v", c)
	}
}

func TestLoadFileMerges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "prices.yaml")
	doc := `# our negotiated prices
gpt-realtime:
  textInput: 3
  audioInput: 24
  audioOutput: 48
my-model:
  textInput: 1.5
  textOutput: 2
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The file's entry replaces the default wholly: the fields it leaves out are 0.
	if got := p["gpt-realtime"]; got != (Price{TextInput: 3, AudioInput: 24, AudioOutput: 48}) {
		t.Errorf("gpt-realtime = %+v", got)
	}
	if got := p["my-model"]; got != (Price{TextInput: 1.5, TextOutput: 2}) {
		t.Errorf("my-model = %+v", got)
	}
	// The defaults it does not name stay, the dated snapshot's included.
	def := Default()
	for _, m := range []string{"gpt-realtime-mini", "gpt-4o-mini", "gpt-realtime-2025-08-28"} {
		if p[m] != def[m] {
			t.Errorf("%s = %+v, want the default %+v", m, p[m], def[m])
		}
	}
	if len(p) != len(def)+1 {
		t.Errorf("%d entries, want %d", len(p), len(def)+1)
	}
	if _, err := LoadFile(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("a missing file loaded")
	}
}

func TestParseErrors(t *testing.T) {
	for name, tc := range map[string]struct{ doc, want string }{
		"unknown field":    {"gpt-realtime:\n  textInput: 4\n  textinput: 5\n", `line 3: unknown field "textinput"`},
		"snake case":       {"m:\n  text_input: 4\n", `line 2: unknown field "text_input"`},
		"negative":         {"m:\n  textInput: 1\n  audioOutput: -2\n", "line 3: audioOutput is -2"},
		"infinite":         {"m:\n  textOutput: .inf\n", "line 2: textOutput is +Inf"},
		"not a number":     {"m:\n  textOutput: cheap\n", `line 2: textOutput: want a number, not "cheap"`},
		"quoted number":    {"m:\n  textOutput: '4'\n", `line 2: textOutput: want a number`},
		"repeated field":   {"m:\n  textInput: 1\n  textInput: 2\n", "line 3: textInput given twice"},
		"repeated model":   {"m:\n  textInput: 1\nm:\n  textInput: 2\n", `line 3: model "m" listed twice`},
		"model not a map":  {"m: 4\n", `model "m": line 1: want a mapping`},
		"list":             {"- m\n", "line 1: want a mapping of model names"},
		"empty model name": {"'':\n  textInput: 1\n", "line 1: empty model name"},
		"bad yaml":         {"m: [\n", "yaml:"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse(%q) = %v, want an error with %q", tc.doc, err, tc.want)
			}
		})
	}
	for _, doc := range []string{"", "# nothing\n", "~\n"} {
		if p, err := Parse([]byte(doc)); err != nil || len(p) != 0 {
			t.Errorf("Parse(%q) = %v, %v", doc, p, err)
		}
	}
}

// FuzzParsePrices: any document parses or fails cleanly; what parses has
// only finite, non-negative prices and non-empty model names.
func FuzzParsePrices(f *testing.F) {
	for _, s := range []string{
		"gpt-realtime:\n  textInput: 4\n  textCachedInput: 0.4\n  textOutput: 16\n  audioInput: 32\n  audioCachedInput: 0.4\n  audioOutput: 64\n",
		"m:\n  textInput: 1e3\n", "m:\n  textInput: -1\n", "m:\n  textOutput: .nan\n", "m: {}\n", "m: ~\n",
		"a: &x {textInput: 1}\nb: *x\n", "m:\n  textInput: 0x10\n", "", "[]", "{m: {textInput: 1, bogus: 2}}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		for model, pr := range p {
			if model == "" {
				t.Fatalf("empty model name from %q", b)
			}
			for _, v := range []float64{pr.TextInput, pr.TextCachedInput, pr.TextOutput, pr.AudioInput, pr.AudioCachedInput, pr.AudioOutput} {
				if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
					t.Fatalf("price %v of %q from %q", v, model, b)
				}
			}
		}
	})
}

// TestTokensCount: the counters by model, use and kind, and the cost of
// priced usage only; a nil *Tokens counts nothing; a second NewTokens on
// the same registry shares the counters.
func TestTokensCount(t *testing.T) {
	reg := prometheus.NewRegistry()
	tk := NewTokens(reg)
	m := session.ModelUsage{Model: "gpt-realtime", Use: session.UseRealtime, Responses: 1,
		InputTextTokens: 100, CachedTextTokens: 40, InputAudioTokens: 300, CachedAudioTokens: 100,
		OutputTextTokens: 20, OutputAudioTokens: 200}
	pr, _ := Default().Lookup(m.Model)
	m.CostUSD, m.Priced = pr.Cost(m), true
	tk.Count(m)
	tk.Count(m)
	NewTokens(reg).Count(session.ModelUsage{Model: "x", Use: session.UseAnalysis, InputTextTokens: 7, CostUSD: 5})
	var nilTokens *Tokens
	nilTokens.Count(m)

	for kind, want := range map[string]float64{
		KindInputText: 120, KindInputAudio: 400, KindCachedText: 80, KindCachedAudio: 200, KindOutputText: 40, KindOutputAudio: 400,
	} {
		if got := testutil.ToFloat64(tk.tokens.WithLabelValues("gpt-realtime", "realtime", kind)); got != want {
			t.Errorf("tokens{%s} = %v, want %v", kind, got, want)
		}
	}
	// 60*4 + 40*0.4 + 20*16 + 200*32 + 100*0.4 + 200*64 = 19,816 per 1M, twice.
	if got := testutil.ToFloat64(tk.cost.WithLabelValues("gpt-realtime", "realtime")); !near(got, 2*0.019816) {
		t.Errorf("cost = %v", got)
	}
	if got := testutil.ToFloat64(tk.tokens.WithLabelValues("x", "analysis", KindInputText)); got != 7 {
		t.Errorf("x tokens = %v", got)
	}
	if n := testutil.CollectAndCount(tk.cost); n != 1 {
		t.Errorf("%d cost series: an unpriced model was counted", n)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP vivi_model_cost_usd_total Estimated cost of the tokens the models used, in US dollars, at the price table's prices (models it does not price are not counted), by model and use.
# TYPE vivi_model_cost_usd_total counter
vivi_model_cost_usd_total{model="gpt-realtime",use="realtime"} 0.039632
`), "vivi_model_cost_usd_total"); err != nil {
		t.Error(err)
	}
}
