package twiml

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
)

// node is a parsed XML element: what a TwiML document means, independent of
// attribute order, whitespace between elements and escaping style.
type node struct {
	Name     string
	Attrs    map[string]string
	Text     string
	Children []*node
}

// parseXML parses a whole document strictly and returns its root element.
func parseXML(doc string) (*node, error) {
	d := xml.NewDecoder(strings.NewReader(doc))
	d.Strict = true
	var stack []*node
	var root *node
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			n := &node{Name: tok.Name.Local, Attrs: map[string]string{}}
			for _, a := range tok.Attr {
				n.Attrs[a.Name.Local] = a.Value
			}
			if len(stack) > 0 {
				p := stack[len(stack)-1]
				p.Children = append(p.Children, n)
			} else if root != nil {
				return nil, errors.New("more than one root element")
			} else {
				root = n
			}
			stack = append(stack, n)
		case xml.EndElement:
			n := stack[len(stack)-1]
			n.Text = strings.TrimSpace(n.Text)
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].Text += string(tok)
			} else if strings.TrimSpace(string(tok)) != "" {
				return nil, fmt.Errorf("text outside the root: %q", tok)
			}
		}
	}
	if root == nil {
		return nil, errors.New("no root element")
	}
	return root, nil
}

// mustParse parses doc or fails the test.
func mustParse(t *testing.T, doc string) *node {
	t.Helper()
	n, err := parseXML(doc)
	if err != nil {
		t.Fatalf("parse TwiML: %v\n%s", err, doc)
	}
	return n
}

// verb returns the single verb of a <Response> document.
func verb(t *testing.T, doc string) *node {
	t.Helper()
	root := mustParse(t, doc)
	if root.Name != "Response" || len(root.Children) != 1 || root.Text != "" {
		t.Fatalf("want <Response> with one verb, got:\n%s", doc)
	}
	return root.Children[0]
}

func sameXML(t *testing.T, got, want *node) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("documents differ:\n got  %s\n want %s", dump(got), dump(want))
	}
}

func dump(n *node) string {
	var b strings.Builder
	fmt.Fprintf(&b, "<%s %v %q", n.Name, n.Attrs, n.Text)
	for _, c := range n.Children {
		b.WriteString(" " + dump(c))
	}
	b.WriteString(">")
	return b.String()
}
