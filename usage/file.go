package usage

import (
	"fmt"
	"math"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// MaxFile bounds the size of a prices file.
const MaxFile = 1 << 20

// LoadFile reads a prices file (see Parse) and returns its prices merged
// over Default: a model in the file replaces the default entry wholly (a
// field it leaves out is 0), the other defaults stay.
func LoadFile(path string) (Prices, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("usage: read prices file: %w", err)
	}
	if len(b) > MaxFile {
		return nil, fmt.Errorf("usage: prices file %s: larger than %d bytes", path, MaxFile)
	}
	file, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("usage: prices file %s: %w", path, err)
	}
	p := Default()
	for model, pr := range file {
		p[model] = pr
	}
	return p, nil
}

// fields are the keys of a model's entry, in Price's order.
var fields = []string{"textInput", "textCachedInput", "textOutput", "audioInput", "audioCachedInput", "audioOutput"}

// Parse reads a YAML prices document: a mapping of model name to its
// prices in US dollars per 1M tokens, keyed textInput, textCachedInput,
// textOutput, audioInput, audioCachedInput and audioOutput:
//
//	gpt-realtime:
//	  textInput: 4
//	  textCachedInput: 0.4
//	  textOutput: 16
//	  audioInput: 32
//	  audioCachedInput: 0.4
//	  audioOutput: 64
//
// It is strict: an unknown or repeated key, a model that is not a
// mapping, or a price that is not a finite non-negative number is an
// error naming its line. An empty document has no prices.
func Parse(b []byte) (Prices, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	out := Prices{}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return out, nil // empty, or only comments
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return out, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: want a mapping of model names to prices", root.Line)
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		model, err := scalarKey(k)
		if err != nil {
			return nil, err
		}
		if model == "" {
			return nil, fmt.Errorf("line %d: empty model name", k.Line)
		}
		if _, dup := out[model]; dup {
			return nil, fmt.Errorf("line %d: model %q listed twice", k.Line, model)
		}
		pr, err := parsePrice(v)
		if err != nil {
			return nil, fmt.Errorf("model %q: %w", model, err)
		}
		out[model] = pr
	}
	return out, nil
}

func parsePrice(n *yaml.Node) (Price, error) {
	if n.Kind != yaml.MappingNode {
		return Price{}, fmt.Errorf("line %d: want a mapping of %s", n.Line, strings.Join(fields, ", "))
	}
	var p Price
	dst := []*float64{&p.TextInput, &p.TextCachedInput, &p.TextOutput, &p.AudioInput, &p.AudioCachedInput, &p.AudioOutput}
	seen := make([]bool, len(fields))
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name, err := scalarKey(k)
		if err != nil {
			return Price{}, err
		}
		j := -1
		for f := range fields {
			if fields[f] == name {
				j = f
			}
		}
		switch {
		case j < 0:
			return Price{}, fmt.Errorf("line %d: unknown field %q (want %s)", k.Line, name, strings.Join(fields, ", "))
		case seen[j]:
			return Price{}, fmt.Errorf("line %d: %s given twice", k.Line, name)
		}
		seen[j] = true
		if v.Kind != yaml.ScalarNode || (v.Tag != "!!int" && v.Tag != "!!float") {
			return Price{}, fmt.Errorf("line %d: %s: want a number, not %q", v.Line, name, v.Value)
		}
		if err := v.Decode(dst[j]); err != nil {
			return Price{}, fmt.Errorf("line %d: %s: %w", v.Line, name, err)
		}
		if f := *dst[j]; f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
			return Price{}, fmt.Errorf("line %d: %s is %v: want a finite, non-negative number of dollars per 1M tokens", v.Line, name, f)
		}
	}
	return p, nil
}

func scalarKey(k *yaml.Node) (string, error) {
	if k.Kind != yaml.ScalarNode {
		return "", fmt.Errorf("line %d: a key must be a plain name", k.Line)
	}
	return k.Value, nil
}
