package kamal

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Editor changes accessories in the configuration one "ensure" at a time:
// each operation looks at the current text, changes nothing when the
// configuration already says what is wanted (so a second run is a no-op), and
// otherwise edits the smallest range it can. Edits go to the destination file
// when there is one, so that other destinations are left alone.
type Editor struct {
	src        *Overlay
	configPath string
	dest       string
	env        func(string) (string, bool)
	cfg        *Config
}

// NewEditor loads the configuration for editing.
func NewEditor(src Source, configPath, dest string, env func(string) (string, bool)) (*Editor, error) {
	e := &Editor{src: &Overlay{Base: src, Files: map[string]string{}}, configPath: configPath, dest: dest, env: env}
	return e, e.reload()
}

func (e *Editor) reload() error {
	c, err := Load(e.src, e.configPath, e.dest, e.env)
	if err != nil {
		return err
	}
	e.cfg = c
	return nil
}

// Config is the configuration as edited so far.
func (e *Editor) Config() *Config { return e.cfg }

// Changed returns the files whose text differs from what is on disk. A
// file written with CRLF line ends gets CRLF on the lines understudy adds.
func (e *Editor) Changed() map[string]string {
	out := map[string]string{}
	for p, s := range e.src.Files {
		orig, err := e.src.Base.ReadFile(p)
		if err == nil && strings.Contains(orig, "\r\n") {
			s = strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
		}
		if err != nil || orig != s {
			out[p] = s
		}
	}
	return out
}

func (e *Editor) commit(f *File, ed textEdit) error {
	e.src.Files[f.Path] = apply(f.text.original, []textEdit{ed})
	if err := e.reload(); err != nil {
		return fmt.Errorf("internal error: editing %s produced a file that does not load: %w", f.Path, err)
	}
	return nil
}

// directGet finds key in a mapping node without following merge keys.
func directGet(m *yaml.Node, key string) (k, v *yaml.Node) {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}

// aliasedNodes is every node that an alias in the document refers to.
func aliasedNodes(doc *yaml.Node) map[*yaml.Node]bool {
	out := map[*yaml.Node]bool{}
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n == nil {
			return
		}
		if n.Kind == yaml.AliasNode {
			out[n.Alias] = true
			return
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(doc)
	return out
}

// mergeProvides reports whether a merge key's value (a mapping, an alias
// of one, or a list of them) gives key.
func mergeProvides(v *yaml.Node, key string, depth int) bool {
	v = resolveAlias(v)
	if v == nil || depth > maxDepth {
		return false
	}
	if v.Kind == yaml.SequenceNode {
		for _, it := range v.Content {
			if has(resolveAlias(it), key, depth+1) {
				return true
			}
		}
		return false
	}
	return has(v, key, depth+1)
}

// has reports whether a mapping has key, written in it or merged into it.
func has(m *yaml.Node, key string, depth int) bool {
	if m == nil || m.Kind != yaml.MappingNode {
		return false
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if k := m.Content[i]; isMergeKey(k) {
			if mergeProvides(m.Content[i+1], key, depth) {
				return true
			}
		} else if k.Value == key {
			return true
		}
	}
	return false
}

// lastMerge is the last merge key of a mapping that gives key (nil if
// none), and its index in the mapping's content.
func lastMerge(m *yaml.Node, key string) (*yaml.Node, int) {
	var mk *yaml.Node
	at := -1
	if m == nil || m.Kind != yaml.MappingNode {
		return nil, -1
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if isMergeKey(m.Content[i]) && mergeProvides(m.Content[i+1], key, 0) {
			mk, at = m.Content[i], i
		}
	}
	return mk, at
}

func indexOf(m, k *yaml.Node) int {
	for i := 0; i < len(m.Content); i += 2 {
		if m.Content[i] == k {
			return i
		}
	}
	return -1
}

// inherited is an element of a path in the edit file whose value comes
// from an anchor: through a merge key of mapping, or as an alias (key and
// alias set).
type inherited struct {
	mapping    *yaml.Node
	name       string
	key, alias *yaml.Node
}

// locate walks path in the edit file. It returns the deepest mapping reached,
// its indentation, and how many path elements were found.
type location struct {
	mapping *yaml.Node // deepest existing mapping along the path
	key     *yaml.Node // key of the last found element (nil for the root)
	val     *yaml.Node // value of the last found element
	found   int
}

// locate stops at the first element that comes from an anchor, and
// returns it; own writes such elements out.
func (e *Editor) locate(f *File, path []string) (location, *inherited, error) {
	loc := location{mapping: f.doc}
	cur := f.doc
	shared := aliasedNodes(f.doc)
	for i, p := range path {
		where := strings.Join(path[:i+1], "/")
		k, v := directGet(cur, p)
		// Kamal's loader applies a mapping's entries in order, so a merge
		// key after p: replaces it (see build).
		if mk, at := lastMerge(cur, p); mk != nil {
			if k == nil {
				return loc, &inherited{mapping: cur, name: p}, nil
			}
			if at > indexOf(cur, k) {
				return loc, nil, fmt.Errorf("%s:%d: %s is hidden by the merge key (<<) at line %d after it (Kamal's YAML loader lets a later << replace an earlier key), so a change there would not reach Kamal: remove the hidden %s: (Kamal does not see it), or, if it is the one you meant, move it below the <<: line; then run init again",
					f.Path, k.Line, where, mk.Line, p)
			}
		}
		if k == nil {
			return loc, nil, nil
		}
		if v.Kind == yaml.AliasNode {
			return loc, &inherited{mapping: cur, name: p, key: k, alias: v}, nil
		}
		if shared[v] {
			return loc, nil, fmt.Errorf("%s:%d: %s is the anchor &%s, which other places use through *%s; understudy must change it, and that would change them too: give %s its own copy instead of the anchor",
				f.Path, k.Line, where, v.Anchor, v.Anchor, where)
		}
		if i < len(path)-1 && f.text.has(v.Value) {
			return loc, nil, fmt.Errorf("%s:%d: %s comes from ERB, which understudy must change; write it as plain YAML", f.Path, k.Line, where)
		}
		loc.key, loc.val, loc.found = k, v, i+1
		if v.Kind == yaml.MappingNode {
			loc.mapping = v
		}
		cur = v
	}
	return loc, nil, nil
}

// own walks path in the edit file like locate, first writing out in full,
// at this one place, each element whose value comes from an anchor
// (through a merge key or an alias): the anchor stays as it is, so
// whatever else uses it reads the same, and Kamal reads this place the
// same until understudy changes it. A merged element is written after the
// merge key, where it wins.
func (e *Editor) own(path []string) (*File, location, error) {
	for range len(path) + 1 {
		f := e.cfg.EditFile()
		loc, in, err := e.locate(f, path)
		if err != nil || in == nil {
			return f, loc, err
		}
		if in.mapping.Style&yaml.FlowStyle != 0 {
			return f, loc, fmt.Errorf("%s:%d: %s comes from an anchor, and this mapping is written in flow style ({...}); rewrite it as an indented block so understudy can write %s out in it", f.Path, in.mapping.Line, strings.Join(path[:loc.found+1], "/"), in.name)
		}
		m, err := build(f, nil, in.mapping)
		if err != nil {
			return f, loc, err
		}
		val := fromVal(m.Get(in.name))
		st := f.style()
		var ed textEdit
		if in.alias != nil {
			indent := in.key.Column - 1
			text := strings.TrimPrefix(strings.Join(st.entry(in.key.Value, val, indent), "\n"), strings.Repeat(" ", indent)+in.key.Value+":")
			// A comment after the alias stays on the key's line.
			end := f.offset(in.alias.Line, in.alias.Column) + len("*"+in.alias.Value)
			if rest := f.Original()[end:f.lineEnd(in.alias.Line)]; strings.HasPrefix(strings.TrimLeft(rest, " \t"), "#") {
				if first, more, ok := strings.Cut(text, "\n"); ok {
					text = first + rest + "\n" + more
				} else {
					text += rest
				}
			}
			ed, err = f.replaceBlock(in.key, in.alias, text)
		} else {
			ed, err = f.insertEntry(in.mapping, st.entry(in.name, val, in.mapping.Content[0].Column-1))
		}
		if err != nil {
			return f, loc, err
		}
		if err := e.commit(f, ed); err != nil {
			return f, loc, err
		}
	}
	return nil, location{}, fmt.Errorf("internal error: %s still comes from an anchor after writing it out", strings.Join(path, "/"))
}

// nest wraps a value in the path's remaining keys.
func nest(path []string, v any) (string, any) {
	for i := len(path) - 1; i > 0; i-- {
		v = Map{{path[i], v}}
	}
	return path[0], v
}

// put writes value at path in the edit file, creating missing mappings.
func (e *Editor) put(path []string, value any) error {
	if f := e.cfg.EditFile(); f.doc == nil {
		return fmt.Errorf("%s is empty; add the accessory there by hand first", f.Path)
	}
	f, loc, err := e.own(path)
	if err != nil {
		return err
	}
	st := f.style()
	if loc.found == len(path) {
		if raw, ok := value.(Raw); ok {
			ed, err := f.setValue(loc.key, loc.val, string(raw))
			if err != nil {
				return err
			}
			return e.commit(f, ed)
		}
		indent := loc.key.Column - 1
		lines := st.entry(loc.key.Value, value, indent)
		ed, err := f.replaceBlock(loc.key, loc.val, strings.TrimPrefix(strings.Join(lines, "\n"), strings.Repeat(" ", indent)+loc.key.Value+":"))
		if err != nil {
			return err
		}
		return e.commit(f, ed)
	}
	rest := path[loc.found:]
	key, v := nest(rest, value)
	if loc.found > 0 && loc.val.Kind != yaml.MappingNode {
		if loc.val.Kind == yaml.ScalarNode && loc.val.Tag == "!!null" {
			indent := loc.key.Column - 1
			lines := st.entry(key, v, indent+st.unit)
			ed, err := f.replaceBlock(loc.key, loc.val, "\n"+strings.Join(lines, "\n"))
			if err != nil {
				return err
			}
			return e.commit(f, ed)
		}
		return fmt.Errorf("%s:%d: %s should be a mapping for understudy to add %s to it", f.Path, loc.key.Line, strings.Join(path[:loc.found], "/"), key)
	}
	m := loc.mapping
	indent := m.Content[0].Column - 1
	ed, err := f.insertEntry(m, st.entry(key, v, indent))
	if err != nil {
		return err
	}
	return e.commit(f, ed)
}

// EnsureScalar makes accessories/<acc>/<path...> equal to value.
func (e *Editor) EnsureScalar(acc string, path []string, value Raw) error {
	full := append([]string{"accessories", acc}, path...)
	if cur := e.cfg.Root.Get(full...); cur.IsScalar() {
		if src, ok := fromVal(cur).(Raw); ok && src == value {
			return nil
		}
	}
	return e.put(full, value)
}

// EnsureListItem makes the list at accessories/<acc>/<path...> contain an item
// that satisfies match, appending item when none does. Kamal replaces whole
// arrays when it merges a destination file, so a list created in a
// destination file carries the base file's items too.
func (e *Editor) EnsureListItem(acc string, path []string, item any, match func(*Val) bool) error {
	full := append([]string{"accessories", acc}, path...)
	merged := e.cfg.Root.Get(full...)
	if merged != nil && !merged.IsSeq() && !merged.IsNull() {
		// Kamal refuses it too ("should be an array"); rewriting it as a
		// list would silently drop what is there.
		return fmt.Errorf("%s: %s must be a list, not a %s (Kamal refuses it: \"should be an array\"); write it as a list, e.g.\n  %s:\n    - %s",
			merged.Pos(), strings.Join(full, "/"), kindName(merged.Node), full[len(full)-1], merged.Node.Value)
	}
	for _, it := range merged.Items() {
		if match(it) {
			return nil
		}
	}
	f, loc, err := e.own(full)
	if err != nil {
		return err
	}
	if loc.found == len(full) && loc.val.Kind == yaml.SequenceNode && len(loc.val.Content) > 0 {
		lines := f.style().item(item)
		ed, err := f.appendItem(loc.val, lines)
		if err != nil {
			return err
		}
		return e.commit(f, ed)
	}
	var l List
	for _, it := range merged.Items() {
		l = append(l, fromVal(it))
	}
	return e.put(full, append(l, item))
}

// AddAccessory adds a new accessory right after the accessory named after
// when the edit file defines it, else after the last one.
func (e *Editor) AddAccessory(name, after string, body Map) error {
	if e.cfg.Root.Get("accessories", name) != nil {
		return fmt.Errorf("accessory %s already exists", name)
	}
	f, loc, err := e.own([]string{"accessories", after})
	if err != nil {
		return err
	}
	if loc.found == 2 && loc.val.Kind == yaml.MappingNode {
		lines := f.style().entry(name, body, loc.key.Column-1)
		end := f.entryEnd(loc.key, loc.val)
		return e.commit(f, textEdit{end, end, "\n" + strings.Join(lines, "\n")})
	}
	return e.put([]string{"accessories", name}, body)
}

// AccessoryBody renders an accessory of the merged configuration so that it
// can be written again (used to derive a standby from its primary).
func AccessoryBody(a *Accessory) Map {
	m, _ := fromVal(a.Val).(Map)
	return m
}

// EnsureComplexEnv rewrites an accessory's env from Kamal's simple form (a
// mapping of clear values) to the complex form (clear: and secret:), which
// is needed before a secret can be added. The values keep their text.
func (e *Editor) EnsureComplexEnv(acc string) error {
	full := []string{"accessories", acc, "env"}
	env := e.cfg.Root.Get(full...)
	if !env.IsMap() || len(env.Keys()) == 0 || env.Get("clear") != nil || env.Get("secret") != nil {
		return nil
	}
	f, loc, err := e.own(full)
	if err != nil {
		return err
	}
	if loc.found != len(full) {
		return fmt.Errorf("%s: accessories/%s/env is written in the simple form (all clear values) in another file; rewrite it as env: clear: ... there, so that a secret can be added", env.Pos(), acc)
	}
	if m := loc.val; m.Kind == yaml.MappingNode && m.Style&yaml.FlowStyle == 0 && len(m.Content) > 0 {
		// Keep every line as written, comments included: the entries move
		// one level in, under a new clear:.
		first := m.Content[0].Line
		last := f.blockEndLine(maxLine(m), indentOf(f.line(loc.key.Line)))
		start, end := f.lineStart(first), f.lineEnd(last)
		unit := strings.Repeat(" ", f.style().unit)
		var b strings.Builder
		b.WriteString(strings.Repeat(" ", indentOf(f.line(first))) + "clear:\n")
		for i, l := range strings.Split(f.src()[start:end], "\n") {
			if i > 0 {
				b.WriteString("\n")
			}
			if strings.TrimSpace(l) != "" {
				b.WriteString(unit)
			}
			b.WriteString(l)
		}
		return e.commit(f, textEdit{start, end, b.String()})
	}
	clear, _ := fromVal(env).(Map)
	return e.put(full, Map{{"clear", clear}})
}
