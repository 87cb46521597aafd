package channel

import (
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxConfigSize bounds an apply file.
const maxConfigSize = 16 << 20

// Config is the content of an apply file (vivi.yaml): agents and channels
// with the same camelCase fields as the admin API. Ids are chosen by the
// author. A channel that lists originIps keeps them as written; one that
// does not gets them from resolving originHost (an IPv4 literal is its own
// list), exactly like a channel created through the API.
type Config struct {
	Agents   []Agent   `yaml:"agents"`
	Channels []Channel `yaml:"channels"`

	pos positions // lines of the parsed file, for errors
}

// ParseConfigFile reads and parses the apply file at path; errors name it.
func ParseConfigFile(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("channel: read config: %w", err)
	}
	defer f.Close()
	return ParseConfig(f)
}

// ParseConfig parses an apply file and checks everything that needs neither
// the store nor DNS: unknown fields, types, every field's validation
// (normalizing agents and channels as the API does), ids required and
// unique. The error joins one *ConfigError per problem (see ConfigErrors),
// each naming the line and the field:
// "vivi.yaml:12: channels[0].extensions[1]: invalid_extension: ...".
// Errors name the file when r has a Name method (an *os.File), else "config".
func ParseConfig(r io.Reader) (Config, error) {
	name := "config"
	if n, ok := r.(interface{ Name() string }); ok {
		name = n.Name()
	}
	cfg := Config{pos: positions{file: name, lines: map[string]int{}}}
	data, err := io.ReadAll(io.LimitReader(r, maxConfigSize+1))
	if err != nil {
		return Config{}, fmt.Errorf("channel: read config %s: %w", name, err)
	}
	if len(data) > maxConfigSize {
		return Config{}, cfg.pos.errorAt("", CodeInvalidYAML, fmt.Sprintf("file is larger than %d bytes", maxConfigSize), nil)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return Config{}, yamlSyntaxError(cfg.pos, err)
	}
	if len(root.Content) == 0 { // an empty file applies nothing
		return cfg, nil
	}
	w := walker{pos: cfg.pos}
	w.decode(root.Content[0], reflect.ValueOf(&cfg).Elem(), "")
	if len(w.errs) > 0 {
		return Config{}, joinConfigErrors(w.errs)
	}
	if errs := cfg.check(); len(errs) > 0 {
		return Config{}, joinConfigErrors(errs)
	}
	return cfg, nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

func yamlSyntaxError(p positions, err error) error {
	msg := err.Error()
	ce := p.errorAt("", CodeInvalidYAML, msg, err)
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		ce.Line, _ = strconv.Atoi(m[1])
		ce.Message = msg[len(m[0]):]
	}
	return ce
}

// check normalizes and validates every agent and channel in place, and
// refuses duplicate ids. It needs neither the store nor DNS.
func (c *Config) check() []*ConfigError {
	var errs []*ConfigError
	agentIDs := map[string]bool{}
	for i := range c.Agents {
		prefix := fmt.Sprintf("agents[%d]", i)
		if v := c.Agents[i].normalize(); v != nil {
			errs = append(errs, c.pos.validationAt(prefix, v))
			continue
		}
		if id := c.Agents[i].ID; agentIDs[id] {
			errs = append(errs, c.pos.errorAt(prefix+".id", CodeDuplicateID, fmt.Sprintf("agent %q is defined twice", id), nil))
		}
		agentIDs[c.Agents[i].ID] = true
	}
	channelIDs := map[string]bool{}
	for i := range c.Channels {
		prefix := fmt.Sprintf("channels[%d]", i)
		ch := &c.Channels[i]
		ch.EventsSecret, ch.Destination = "", nil
		if v := ch.normalize(); v != nil {
			errs = append(errs, c.pos.validationAt(prefix, v))
			continue
		}
		if channelIDs[ch.ID] {
			errs = append(errs, c.pos.errorAt(prefix+".id", CodeDuplicateID, fmt.Sprintf("channel %q is defined twice", ch.ID), nil))
		}
		channelIDs[ch.ID] = true
	}
	return errs
}

// walker decodes a YAML node tree into Go values field by field, so that
// every error names its path and line, and unknown fields are errors.
type walker struct {
	pos  positions
	errs []*ConfigError
}

func (w *walker) fail(path string, line int, code, format string, args ...any) {
	ce := w.pos.errorAt(path, code, fmt.Sprintf(format, args...), nil)
	if line > 0 {
		ce.Line = line
	}
	w.errs = append(w.errs, ce)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (w *walker) decode(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if _, ok := w.pos.lines[path]; !ok && path != "" {
		w.pos.lines[path] = n.Line
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // an empty value keeps the zero value, like an absent field
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		w.decode(n, v.Elem(), path)
	case reflect.Struct:
		w.decodeStruct(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.fail(path, n.Line, CodeInvalidYAML, "want a list, got %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			w.pos.lines[p] = item.Line
			w.decode(item, s.Index(i), p)
		}
		v.Set(s)
	case reflect.Map:
		w.decodeMap(n, v, path)
	default:
		if n.Kind != yaml.ScalarNode {
			w.fail(path, n.Line, CodeInvalidYAML, "want %s, got %s", scalarName(v.Kind()), kindName(n))
			return
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			w.fail(path, n.Line, CodeInvalidYAML, "want %s, got %q", scalarName(v.Kind()), n.Value)
		}
	}
}

func (w *walker) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		w.fail(path, n.Line, CodeInvalidYAML, "want a mapping, got %s", kindName(n))
		return
	}
	fields := yamlFields(v.Type())
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		p := join(path, k.Value)
		w.pos.lines[p] = k.Line
		idx, ok := fields[k.Value]
		switch {
		case k.Kind != yaml.ScalarNode || !ok:
			w.fail(p, k.Line, CodeUnknownField, "unknown field %q", k.Value)
		case seen[k.Value]:
			w.fail(p, k.Line, CodeInvalidYAML, "field %q is given twice", k.Value)
		default:
			seen[k.Value] = true
			w.decode(val, v.Field(idx), p)
		}
	}
}

func (w *walker) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		w.fail(path, n.Line, CodeInvalidYAML, "want a mapping, got %s", kindName(n))
		return
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		p := join(path, k.Value)
		w.pos.lines[p] = k.Line
		key := reflect.New(v.Type().Key()).Elem()
		if k.Kind != yaml.ScalarNode || k.Decode(key.Addr().Interface()) != nil {
			w.fail(p, k.Line, CodeInvalidYAML, "bad key %q", k.Value)
			continue
		}
		if m.MapIndex(key).IsValid() {
			w.fail(p, k.Line, CodeInvalidYAML, "key %q is given twice", k.Value)
			continue
		}
		elem := reflect.New(v.Type().Elem()).Elem()
		w.decode(val, elem, p)
		m.SetMapIndex(key, elem)
	}
	v.Set(m)
}

// yamlFields maps the yaml names of t's exported fields to their index;
// fields tagged "-" (outputs such as eventsSecret) are unknown in a file.
func yamlFields(t reflect.Type) map[string]int {
	out := make(map[string]int, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = i
	}
	return out
}

func scalarName(k reflect.Kind) string {
	switch k {
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "an integer"
	case reflect.Float64, reflect.Float32:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	default:
		return "a " + k.String()
	}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	default:
		return "something else"
	}
}
