package channel

import (
	"fmt"
	"regexp"
	"slices"
)

// CodeInvalidAnalysis is the validation code of a bad Agent.Analysis.
const CodeInvalidAnalysis = "invalid_analysis"

// Types of an agent's analysis field (AnalysisField.Type).
const (
	FieldString  = "string"
	FieldNumber  = "number"
	FieldInteger = "integer"
	FieldBoolean = "boolean"
)

// Limits of an agent's analysis settings: they go into every analysis
// request, so they stay small.
const (
	MaxAnalysisInstructions = 4000
	MaxAnalysisFields       = 20
	MaxFieldDescription     = 300
	MaxFieldEnum            = 20
	MaxFieldEnumValue       = 100
)

var fieldNamePattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,39}$`)

// AgentAnalysis is how the calls of an agent are analysed once they end:
// a summary, the caller's intent, the outcome and follow-ups always, plus
// the agent's own Fields.
type AgentAnalysis struct {
	// Enabled turns the analysis off when false; nil means on.
	Enabled *bool `json:"enabled,omitempty" yaml:"enabled,omitempty"`
	// Instructions are added to the analysis model's instructions (what
	// matters to this business, how to judge an outcome).
	Instructions string          `json:"instructions,omitempty" yaml:"instructions,omitempty"`
	Fields       []AnalysisField `json:"fields,omitempty" yaml:"fields,omitempty"`
}

// AnalysisField is one of the agent's own analysis fields, found in
// AnalysisResult.Extra under Name.
type AnalysisField struct {
	Name        string `json:"name" yaml:"name"`
	Description string `json:"description,omitempty" yaml:"description,omitempty"`
	// Type is string, number, integer or boolean.
	Type string `json:"type" yaml:"type"`
	// Enum lists the values a string field may take (none: any string).
	Enum []string `json:"enum,omitempty" yaml:"enum,omitempty"`
}

// On reports whether the analysis is enabled (Enabled nil or true).
func (a AgentAnalysis) On() bool { return a.Enabled == nil || *a.Enabled }

func (a *AgentAnalysis) check() *ValidationError {
	if a == nil {
		return nil
	}
	if err := checkText(CodeInvalidAnalysis, "analysis.instructions", a.Instructions, MaxAnalysisInstructions, true); err != nil {
		return err
	}
	if len(a.Fields) > MaxAnalysisFields {
		return invalid(CodeInvalidAnalysis, "analysis.fields", "has %d fields; at most %d", len(a.Fields), MaxAnalysisFields)
	}
	seen := make(map[string]bool, len(a.Fields))
	for i, f := range a.Fields {
		field := fmt.Sprintf("analysis.fields[%d]", i)
		if !fieldNamePattern.MatchString(f.Name) {
			return invalid(CodeInvalidAnalysis, field+".name", "%q is not a field name: a letter, then letters, digits or '_', at most 40 characters", f.Name)
		}
		if seen[f.Name] {
			return invalid(CodeInvalidAnalysis, field+".name", "%q is listed twice", f.Name)
		}
		seen[f.Name] = true
		if err := checkText(CodeInvalidAnalysis, field+".description", f.Description, MaxFieldDescription, false); err != nil {
			return err
		}
		switch f.Type {
		case FieldString, FieldNumber, FieldInteger, FieldBoolean:
		default:
			return invalid(CodeInvalidAnalysis, field+".type", "%q is not one of string, number, integer, boolean", f.Type)
		}
		if len(f.Enum) == 0 {
			continue
		}
		if f.Type != FieldString {
			return invalid(CodeInvalidAnalysis, field+".enum", "only a string field may have an enum")
		}
		if len(f.Enum) > MaxFieldEnum {
			return invalid(CodeInvalidAnalysis, field+".enum", "has %d values; at most %d", len(f.Enum), MaxFieldEnum)
		}
		for j, v := range f.Enum {
			vf := fmt.Sprintf("%s.enum[%d]", field, j)
			if v == "" {
				return invalid(CodeInvalidAnalysis, vf, "is empty")
			}
			if err := checkText(CodeInvalidAnalysis, vf, v, MaxFieldEnumValue, false); err != nil {
				return err
			}
			if slices.Contains(f.Enum[:j], v) {
				return invalid(CodeInvalidAnalysis, vf, "%q is listed twice", v)
			}
		}
	}
	return nil
}
