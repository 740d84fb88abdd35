package kamal

import (
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Text edits on a YAML file. Every edit replaces one byte range of the original
// text; all lines outside that range stay byte-identical, comments included.

type textEdit struct {
	start, end int
	text       string
}

// apply applies non-overlapping edits to s.
func apply(s string, edits []textEdit) string {
	sort.Slice(edits, func(i, j int) bool { return edits[i].start < edits[j].start })
	var b strings.Builder
	pos := 0
	for _, e := range edits {
		b.WriteString(s[pos:e.start])
		b.WriteString(e.text)
		pos = e.end
	}
	b.WriteString(s[pos:])
	return b.String()
}

func (f *File) src() string { return f.text.masked }

// lineStart is the byte offset of 1-based line n.
func (f *File) lineStart(n int) int {
	s := f.src()
	off := 0
	for i := 1; i < n; i++ {
		j := strings.IndexByte(s[off:], '\n')
		if j < 0 {
			return len(s)
		}
		off += j + 1
	}
	return off
}

// lineEnd is the offset of the newline ending line n (or len).
func (f *File) lineEnd(n int) int {
	s := f.src()
	st := f.lineStart(n)
	if j := strings.IndexByte(s[st:], '\n'); j >= 0 {
		return st + j
	}
	return len(s)
}

func (f *File) line(n int) string { return f.src()[f.lineStart(n):f.lineEnd(n)] }

func (f *File) numLines() int { return strings.Count(f.src(), "\n") + 1 }

// offset converts yaml's (line, column) (columns count characters) to bytes.
func (f *File) offset(line, col int) int {
	st := f.lineStart(line)
	s := f.src()[st:]
	off := 0
	for i := 1; i < col && off < len(s); i++ {
		_, w := utf8.DecodeRuneInString(s[off:])
		off += w
	}
	return st + off
}

func indentOf(l string) int { return len(l) - len(strings.TrimLeft(l, " ")) }

func isContent(l string) bool {
	t := strings.TrimSpace(l)
	return t != "" && !strings.HasPrefix(t, "#")
}

func maxLine(n *yaml.Node) int {
	m := n.Line
	for _, c := range n.Content {
		if l := maxLine(c); l > m {
			m = l
		}
	}
	return m
}

// blockEndLine is the last line of a block that starts at startLine, whose
// nodes reach down to line last, and whose continuation lines are indented
// deeper than indent.
func (f *File) blockEndLine(last, indent int) int {
	end := last
	for i := last + 1; i <= f.numLines(); i++ {
		l := f.line(i)
		if !isContent(l) {
			continue
		}
		if indentOf(l) <= indent {
			break
		}
		end = i
	}
	return end
}

// entryEnd is the offset just past the last line of a mapping entry.
func (f *File) entryEnd(key, val *yaml.Node) int {
	indent := indentOf(f.line(key.Line))
	if key.Column-1 > indent { // "- key: v": the item's keys sit after the dash
		indent = key.Column - 1
	}
	return f.lineEnd(f.blockEndLine(maxLine(val), indent))
}

// afterColon is the offset just past the ':' that follows a mapping key.
func (f *File) afterColon(key *yaml.Node) (int, error) {
	s := f.src()
	i := f.offset(key.Line, key.Column)
	if key.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
		q := s[i]
		for i++; i < len(s) && s[i] != q; i++ {
			if q == '"' && s[i] == '\\' {
				i++
			}
		}
		i++
	} else {
		i += len(key.Value)
	}
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	if i >= len(s) || s[i] != ':' {
		return 0, fmt.Errorf("%s:%d: cannot find the ':' after %q", f.Path, key.Line, key.Value)
	}
	return i + 1, nil
}

// scalarEnd finds the end of a single-line scalar starting at its node position.
func (f *File) scalarEnd(n *yaml.Node) (int, bool) {
	s := f.src()
	st := f.offset(n.Line, n.Column)
	le := f.lineEnd(n.Line)
	switch {
	case n.Style&yaml.DoubleQuotedStyle != 0:
		for i := st + 1; i < le; i++ {
			if s[i] == '\\' {
				i++
				continue
			}
			if s[i] == '"' {
				return i + 1, true
			}
		}
		return 0, false
	case n.Style&yaml.SingleQuotedStyle != 0:
		for i := st + 1; i < le; i++ {
			if s[i] == '\'' {
				if i+1 < le && s[i+1] == '\'' {
					i++
					continue
				}
				return i + 1, true
			}
		}
		return 0, false
	case n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0:
		return 0, false
	}
	// A plain scalar's value is its text when it is on one line; in a flow
	// collection the text ends before the next , ] or }, not at the line's
	// end. One that continues on the next lines has a value (folded) that
	// is not on its first line.
	if n.Kind == yaml.ScalarNode && n.Value != "" && strings.HasPrefix(s[st:le], n.Value) {
		return st + len(n.Value), true
	}
	return 0, false
}

// setValue replaces the value of a mapping entry. newScalar is a YAML scalar
// written on the key's line; an existing single-line scalar keeps its trailing comment.
func (f *File) setValue(key, val *yaml.Node, newScalar string) (textEdit, error) {
	if val.Kind == yaml.ScalarNode && val.Tag != "!!null" {
		if end, ok := f.scalarEnd(val); ok {
			return textEdit{f.offset(val.Line, val.Column), end, newScalar}, nil
		}
	}
	return f.replaceBlock(key, val, " "+newScalar)
}

// replaceBlock replaces everything after "key:" up to the end of the entry.
func (f *File) replaceBlock(key, val *yaml.Node, text string) (textEdit, error) {
	st, err := f.afterColon(key)
	if err != nil {
		return textEdit{}, err
	}
	end := f.entryEnd(key, val)
	if val.Tag == "!!null" && val.Kind == yaml.ScalarNode {
		end = f.lineEnd(key.Line)
		// keep a trailing comment on the key's line
		if i := strings.Index(f.src()[st:end], " #"); i >= 0 {
			end = st + i
		}
	}
	return textEdit{st, end, text}, nil
}

// insertEntry adds lines (already indented) after the last entry of a block mapping.
func (f *File) insertEntry(m *yaml.Node, lines []string) (textEdit, error) {
	if m.Style&yaml.FlowStyle != 0 {
		return textEdit{}, fmt.Errorf("%s:%d: this mapping is written in flow style ({...}); rewrite it as an indented block so understudy can add to it", f.Path, m.Line)
	}
	if len(m.Content) == 0 {
		return textEdit{}, fmt.Errorf("%s:%d: cannot add to an empty mapping", f.Path, m.Line)
	}
	end := f.entryEnd(m.Content[len(m.Content)-2], m.Content[len(m.Content)-1])
	return textEdit{end, end, "\n" + strings.Join(lines, "\n")}, nil
}

// appendItem adds an item to a sequence, in the style of its existing items.
// itemLines is the item as emitted at column 0 after "- ".
func (f *File) appendItem(seq *yaml.Node, itemLines []string) (textEdit, error) {
	s := f.src()
	if seq.Style&yaml.FlowStyle != 0 {
		if len(itemLines) != 1 {
			return textEdit{}, fmt.Errorf("%s:%d: this list is written in flow style ([...]); rewrite it as an indented block so understudy can add to it", f.Path, seq.Line)
		}
		st := f.offset(seq.Line, seq.Column)
		depth, q := 0, byte(0)
		for i := st; i < len(s); i++ {
			c := s[i]
			switch {
			case q != 0:
				if c == q {
					q = 0
				}
			case c == '"' || c == '\'':
				q = c
			case c == '[':
				depth++
			case c == ']':
				depth--
				if depth == 0 {
					sep := ", "
					if len(seq.Content) == 0 {
						sep = ""
					}
					return textEdit{i, i, sep + itemLines[0]}, nil
				}
			}
		}
		return textEdit{}, fmt.Errorf("%s:%d: unclosed [", f.Path, seq.Line)
	}
	first := seq.Content[0]
	lineText := f.line(first.Line)
	prefixEnd := f.offset(first.Line, first.Column) - f.lineStart(first.Line)
	prefix := lineText[:prefixEnd]
	if !strings.HasSuffix(strings.TrimRight(prefix, " "), "-") {
		return textEdit{}, fmt.Errorf("%s:%d: unexpected list layout; add the item by hand", f.Path, first.Line)
	}
	last := seq.Content[len(seq.Content)-1]
	dash := indentOf(f.line(last.Line))
	end := f.lineEnd(f.blockEndLine(maxLine(last), dash))
	pad := strings.Repeat(" ", len(prefix))
	var b strings.Builder
	for i, l := range itemLines {
		b.WriteString("\n")
		if i == 0 {
			b.WriteString(prefix + l)
		} else {
			b.WriteString(pad + l)
		}
	}
	return textEdit{end, end, b.String()}, nil
}

// style is how a file indents: the width of one level and whether list
// items sit under their key ("compact": "key:\n- item") or one level in.
type style struct {
	unit    int
	compact bool
}

func (f *File) style() style {
	st := style{unit: 2}
	if f.doc == nil {
		return st
	}
	found := false
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind != yaml.MappingNode || n.Style&yaml.FlowStyle != 0 {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			switch {
			case v.Kind == yaml.MappingNode && v.Style&yaml.FlowStyle == 0 && len(v.Content) > 0 && v.Line > k.Line:
				if !found {
					st.unit = v.Content[0].Column - k.Column
					found = st.unit > 0
				}
				walk(v)
			case v.Kind == yaml.SequenceNode && v.Style&yaml.FlowStyle == 0 && len(v.Content) > 0:
				if indentOf(f.line(v.Content[0].Line)) == k.Column-1 {
					st.compact = true
				}
				for _, it := range v.Content {
					walk(it)
				}
			}
		}
	}
	walk(f.doc)
	if st.unit <= 0 {
		st.unit = 2
	}
	return st
}
