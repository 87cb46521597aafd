package channel

import (
	"errors"
	"strconv"
	"strings"
)

// Codes of errors that only the YAML apply reports.
const (
	CodeInvalidYAML     = "invalid_yaml"
	CodeUnknownField    = "unknown_field"
	CodeDuplicateID     = "duplicate_id"
	CodeChannelConflict = "channel_conflict"
)

// ConfigError is one problem of an apply file, located by file, line and
// path ("channels[0].extensions[1]"). Its text reads
// "vivi.yaml:12: channels[0].extensions[1]: invalid_extension: ...".
// Err is the underlying error when there is one (a store conflict matches
// ErrConflict with errors.Is).
type ConfigError struct {
	File    string
	Line    int
	Path    string
	Code    string
	Message string
	Err     error
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Code + ": " + e.Message)
	return b.String()
}

// Unwrap returns the underlying error, if any.
func (e *ConfigError) Unwrap() error { return e.Err }

// ConfigErrors returns every *ConfigError in err (ParseConfig and Apply join
// them with errors.Join), in file order.
func ConfigErrors(err error) []*ConfigError {
	var out []*ConfigError
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		if ce, ok := err.(*ConfigError); ok {
			out = append(out, ce)
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		walk(errors.Unwrap(err))
	}
	walk(err)
	return out
}

// positions maps paths of a parsed file to their lines.
type positions struct {
	file  string
	lines map[string]int
}

// lineOf returns the line of path, or of its nearest ancestor that the file
// has (a missing field is reported at its object); 0 when unknown.
func (p positions) lineOf(path string) int {
	for path != "" {
		if l, ok := p.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return 0
		}
		path = path[:i]
	}
	return 0
}

func (p positions) errorAt(path, code, msg string, err error) *ConfigError {
	file := p.file
	if file == "" {
		file = "config"
	}
	return &ConfigError{File: file, Line: p.lineOf(path), Path: path, Code: code, Message: msg, Err: err}
}

// validationAt places a *ValidationError of the object at prefix.
func (p positions) validationAt(prefix string, v *ValidationError) *ConfigError {
	path := prefix
	if v.Field != "" {
		path += "." + v.Field
	}
	return p.errorAt(path, v.Code, v.Message, v)
}

func joinConfigErrors(errs []*ConfigError) error {
	if len(errs) == 0 {
		return nil
	}
	list := make([]error, len(errs))
	for i, e := range errs {
		list[i] = e
	}
	return errors.Join(list...)
}
