package kamal

import (
	"strings"

	"go.yaml.in/yaml/v3"
)

// Values to write into a YAML file: Raw is scalar text exactly as it must
// appear; Map and List nest.
type (
	Raw string
	KV  struct {
		Key string
		Val any
	}
	Map  []KV
	List []any
)

// Quote renders a string as a YAML scalar, quoting only when needed.
func Quote(s string) Raw {
	b, err := yaml.Marshal(s)
	if err != nil || strings.Count(strings.TrimRight(string(b), "\n"), "\n") > 0 {
		r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
		return Raw(`"` + r.Replace(s) + `"`)
	}
	return Raw(strings.TrimRight(string(b), "\n"))
}

// entry renders "key: value" at an indentation, nesting as the file does.
func (st style) entry(key string, v any, indent int) []string {
	pad := strings.Repeat(" ", indent)
	switch x := v.(type) {
	case Raw:
		return []string{pad + key + ": " + string(x)}
	case Map:
		out := []string{pad + key + ":"}
		for _, kv := range x {
			out = append(out, st.entry(kv.Key, kv.Val, indent+st.unit)...)
		}
		return out
	case List:
		out := []string{pad + key + ":"}
		in := indent + st.unit
		if st.compact {
			in = indent
		}
		for _, it := range x {
			for i, l := range st.item(it) {
				if i == 0 {
					out = append(out, strings.Repeat(" ", in)+"- "+l)
				} else {
					out = append(out, strings.Repeat(" ", in+2)+l)
				}
			}
		}
		return out
	}
	panic("kamal: cannot emit this value")
}

// item renders a list item as lines relative to the text after "- ".
func (st style) item(v any) []string {
	switch x := v.(type) {
	case Raw:
		return []string{string(x)}
	case Map:
		if len(x) == 0 {
			return []string{"{}"}
		}
		var out []string
		for _, kv := range x {
			out = append(out, st.entry(kv.Key, kv.Val, 0)...)
		}
		return out
	case List: // a list in a list: "- - a"
		if len(x) == 0 {
			return []string{"[]"}
		}
		var out []string
		for _, it := range x {
			for i, l := range st.item(it) {
				if i == 0 {
					out = append(out, "- "+l)
				} else {
					out = append(out, "  "+l)
				}
			}
		}
		return out
	}
	panic("kamal: cannot emit this list item")
}

// fromVal turns a configuration value into something to write again, keeping
// each single-line scalar's source text (quotes and ERB included).
func fromVal(v *Val) any {
	switch {
	case v.IsMap():
		var m Map
		for _, k := range v.Keys() {
			m = append(m, KV{k, fromVal(v.Get(k))})
		}
		return m
	case v.IsSeq():
		var l List
		for _, it := range v.Items() {
			l = append(l, fromVal(it))
		}
		return l
	case v.IsNull():
		return Raw("")
	}
	f := v.File
	if end, ok := f.scalarEnd(v.Node); ok {
		st := f.offset(v.Node.Line, v.Node.Column)
		return Raw(f.text.original[st:end])
	}
	return Quote(v.Source())
}

// Get returns the value of a key, or nil.
func (m Map) Get(k string) any {
	for _, kv := range m {
		if kv.Key == k {
			return kv.Val
		}
	}
	return nil
}

// Set replaces a key's value in place, or appends the key.
func (m Map) Set(k string, v any) Map {
	for i := range m {
		if m[i].Key == k {
			m[i].Val = v
			return m
		}
	}
	return append(m, KV{k, v})
}

// Delete removes a key.
func (m Map) Delete(k string) Map {
	out := m[:0:0]
	for _, kv := range m {
		if kv.Key != k {
			out = append(out, kv)
		}
	}
	return out
}
