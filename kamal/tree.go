package kamal

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// File is one YAML file of the Kamal configuration, parsed from its masked
// text so that node positions are positions in the original bytes.
type File struct {
	Path string // relative to the app directory, as shown to the user
	text *maskedText
	doc  *yaml.Node // the document's root mapping (nil for an empty file)
}

// Original returns the file's bytes as they are on disk.
func (f *File) Original() string { return f.text.original }

var yamlLineRE = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)

func parseFile(path, src string) (*File, error) {
	if strings.HasPrefix(src, "\ufeff") {
		return nil, fmt.Errorf("%s:1: the file starts with a UTF-8 byte-order mark, which Kamal's YAML reader refuses; save it as UTF-8 without a BOM", path)
	}
	m, err := mask(src)
	if err != nil {
		return nil, fmt.Errorf("%s:%s", path, strings.TrimPrefix(err.Error(), "line "))
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(m.masked), &doc); err != nil {
		msg := err.Error()
		if g := yamlLineRE.FindStringSubmatch(strings.SplitN(msg, "\n", 2)[0]); g != nil {
			line := g[1]
			if line == "" {
				line = "1"
			}
			if n := firstBadLine(m.masked); n > 0 {
				line = strconv.Itoa(n)
			}
			return nil, fmt.Errorf("%s:%s: not valid YAML (%s); fix the syntax there (kamal would refuse this file too)", path, line, g[2])
		}
		return nil, fmt.Errorf("%s: not valid YAML (%s); fix the syntax (kamal would refuse this file too)", path, msg)
	}
	f := &File{Path: path, text: m}
	if len(doc.Content) == 0 {
		return f, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: the top level must be a mapping of keys (service:, accessories:, ...), not a %s", path, root.Line, kindName(root))
	}
	f.doc = root
	return f, nil
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.AliasNode:
		return "alias"
	}
	return "scalar"
}

// Val is a value of the merged configuration: a node of one file, or a
// mapping built by deep-merging a destination file over the base file
// (hashes merge, arrays and scalars are replaced: Kamal: lib/kamal/configuration.rb, deep_merge of the destination file).
type Val struct {
	Node    *yaml.Node // the (alias-resolved) node this value was read from
	KeyNode *yaml.Node // the key of the entry holding this value, if any
	File    *File
	keys    []string
	fields  map[string]*Val
	items   []*Val
}

// Pos is "file:line" of the value, for messages.
func (v *Val) Pos() string {
	if v == nil {
		return ""
	}
	n := v.Node
	if v.KeyNode != nil {
		n = v.KeyNode
	}
	return fmt.Sprintf("%s:%d", v.File.Path, n.Line)
}

// isMergeKey reports whether a mapping key is YAML's merge key (<<).
func isMergeKey(k *yaml.Node) bool { return k.Value == "<<" && k.Tag == "!!merge" }

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// Limits on what a file can make the reader do. A Kamal config has a few
// hundred values; aliases can multiply them (each alias of a list of
// aliases copies it again), so expansion is counted, as mature YAML loaders
// bound it, and a value that contains itself is refused.
const (
	maxValues = 100_000
	maxDepth  = 100
)

// builder turns one file's nodes into values, within the limits.
type builder struct {
	f      *File
	values int
	onPath map[*yaml.Node]bool // mappings and lists being built: an alias back to one is a cycle
	err    error
}

func build(f *File, key, n *yaml.Node) (*Val, error) {
	b := &builder{f: f, onPath: map[*yaml.Node]bool{}}
	v := b.build(key, n, 0)
	if b.err != nil {
		return nil, b.err
	}
	return v, nil
}

func (b *builder) fail(n *yaml.Node, format string, a ...any) *Val {
	if b.err == nil {
		b.err = fmt.Errorf("%s:%d: "+format, append([]any{b.f.Path, n.Line}, a...)...)
	}
	return &Val{Node: &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}, File: b.f}
}

func (b *builder) build(key, n *yaml.Node, depth int) *Val {
	if b.err != nil {
		return b.fail(n, "")
	}
	if n.Kind == yaml.AliasNode {
		if t := resolveAlias(n); t == nil || b.onPath[t] {
			return b.fail(n, "the alias *%s refers to a value that contains it, so the value would be endless; give it a finite value (Kamal cannot use it either)", n.Value)
		}
	}
	n = resolveAlias(n)
	if b.values++; b.values > maxValues {
		return b.fail(n, "the aliases in this file expand to more than %d values (nested anchors of lists of aliases multiply); write the values out, or use fewer levels of aliases", maxValues)
	}
	if depth > maxDepth {
		return b.fail(n, "values are nested more than %d levels deep; a Kamal config needs a few", maxDepth)
	}
	v := &Val{Node: n, KeyNode: key, File: b.f}
	if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
		b.onPath[n] = true
		defer delete(b.onPath, n)
	}
	switch n.Kind {
	case yaml.MappingNode:
		// Entries apply in file order, as Kamal's loader (Ruby's Psych,
		// Psych::Visitors::ToRuby#revive_hash) applies them: a merge key
		// (<<) replaces the keys written before it, and a key written
		// after it wins; of a list of merged mappings, the first to have a
		// key gives it.
		v.fields = map[string]*Val{}
		seen := map[string]*yaml.Node{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if isMergeKey(k) {
				var merges []*Val
				if src := resolveAlias(val); src != nil && src.Kind == yaml.SequenceNode {
					for _, s := range src.Content {
						merges = append(merges, b.build(nil, s, depth+1))
					}
				} else {
					merges = append(merges, b.build(nil, val, depth+1))
				}
				got := map[string]bool{}
				for _, m := range merges {
					for _, mk := range m.keys {
						if !got[mk] {
							got[mk] = true
							v.set(mk, m.fields[mk])
						}
					}
				}
				continue
			}
			if first, dup := seen[k.Value]; dup {
				return b.fail(k, "%s: appears twice in this mapping (first at line %d). YAML loaders keep the last one, so Kamal ignores line %d; merge the two into one %s: entry", k.Value, first.Line, first.Line, k.Value)
			}
			seen[k.Value] = k
			v.set(k.Value, b.build(k, val, depth+1))
		}
	case yaml.SequenceNode:
		for _, it := range n.Content {
			v.items = append(v.items, b.build(nil, it, depth+1))
		}
	}
	return v
}

func (v *Val) set(k string, c *Val) {
	if _, ok := v.fields[k]; !ok {
		v.keys = append(v.keys, k)
	}
	v.fields[k] = c
}

// merge deep-merges over onto base the way ActiveSupport's deep_merge! does.
func merge(base, over *Val) *Val {
	if base == nil {
		return over
	}
	if over == nil {
		return base
	}
	if !base.IsMap() || !over.IsMap() {
		return over
	}
	out := &Val{Node: over.Node, KeyNode: over.KeyNode, File: over.File, fields: map[string]*Val{}}
	for _, k := range base.keys {
		out.set(k, base.fields[k])
	}
	for _, k := range over.keys {
		out.set(k, merge(out.fields[k], over.fields[k]))
	}
	return out
}

func (v *Val) IsMap() bool { return v != nil && v.Node.Kind == yaml.MappingNode }
func (v *Val) IsSeq() bool { return v != nil && v.Node.Kind == yaml.SequenceNode }
func (v *Val) IsScalar() bool {
	return v != nil && v.Node.Kind == yaml.ScalarNode && v.Node.Tag != "!!null"
}
func (v *Val) IsNull() bool {
	return v == nil || (v.Node.Kind == yaml.ScalarNode && v.Node.Tag == "!!null")
}

// Get walks mapping keys; nil when any is missing.
func (v *Val) Get(path ...string) *Val {
	for _, p := range path {
		if !v.IsMap() {
			return nil
		}
		v = v.fields[p]
	}
	return v
}

// Keys lists a mapping's keys in file order.
func (v *Val) Keys() []string {
	if !v.IsMap() {
		return nil
	}
	return v.keys
}

// Items lists a sequence's items.
func (v *Val) Items() []*Val {
	if !v.IsSeq() {
		return nil
	}
	return v.items
}

// Masked is a scalar's text as parsed, with ERB placeholders in it.
func (v *Val) Masked() string { return v.Node.Value }

// Source is a scalar's value with the original ERB text put back.
func (v *Val) Source() string { return v.File.text.unmask(v.Node.Value) }

// HasERB reports whether the scalar's value comes (partly) from ERB.
func (v *Val) HasERB() bool { return v.IsScalar() && v.File.text.has(v.Node.Value) }

// Resolve gives the scalar's value as Kamal would see it, evaluating ERB that
// is a plain environment lookup. ok is false when some ERB could not be evaluated.
func (v *Val) Resolve(env func(string) (string, bool)) (string, bool) {
	return v.File.text.resolve(v.Node.Value, env)
}

// Int parses a scalar integer value.
func (v *Val) Int() (int, bool) {
	if !v.IsScalar() {
		return 0, false
	}
	n, err := strconv.Atoi(v.Node.Value)
	return n, err == nil
}

// ERBHint says how to make a scalar's ERB readable: which variables to set.
func (v *Val) ERBHint() string {
	vars := v.File.text.erbVars(v.Node.Value)
	if len(vars) == 0 {
		return "understudy evaluates only ENV[\"X\"] / ENV.fetch(\"X\") lookups; write the value plainly"
	}
	return "set " + strings.Join(vars, " and ") + " in the environment you run understudy from (as for kamal)"
}

// firstBadLine finds the first line at which the text stops parsing: the
// YAML parser reports the line where the enclosing block began, which is not
// where a user has to look.
func firstBadLine(text string) int {
	lines := strings.SplitAfter(text, "\n")
	var doc yaml.Node
	for n := 1; n <= len(lines); n++ {
		if yaml.Unmarshal([]byte(strings.Join(lines[:n], "")), &doc) != nil {
			return n
		}
	}
	return 0
}
