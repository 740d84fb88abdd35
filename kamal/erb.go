package kamal

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Kamal renders config/deploy.yml through ERB before it parses the YAML
// (research/kamal.md §4.1). understudy must both read values the way Kamal
// would and edit the file without disturbing its ERB, so it never renders the
// text. Instead every ERB tag is replaced by a placeholder of exactly the same
// length ("masking"): the YAML parser then sees a document whose line and
// column positions are those of the original file, and an edit computed on the
// masked text applies byte for byte to the original.

// erbTag is one <% ... %> tag in a file.
type erbTag struct {
	start, end int    // byte offsets [start, end) in the file
	code       string // the Ruby between the delimiters, trimmed
	output     bool   // <%= ... %>
	comment    bool   // <%# ... %>
	line       int    // 1-based line of the opening delimiter
}

// scanERB finds every ERB tag. An unclosed tag is an error naming its line.
func scanERB(src string) ([]erbTag, error) {
	var tags []erbTag
	i := 0
	for {
		j := strings.Index(src[i:], "<%")
		if j < 0 {
			return tags, nil
		}
		start := i + j
		if strings.HasPrefix(src[start:], "<%%") { // literal "<%" in ERB
			i = start + 3
			continue
		}
		k := strings.Index(src[start+2:], "%>")
		if k < 0 {
			return nil, fmt.Errorf("line %d: an ERB tag opened with <%% is never closed with %%>", lineAt(src, start))
		}
		end := start + 2 + k + 2
		inner := src[start+2 : end-2]
		t := erbTag{start: start, end: end, line: lineAt(src, start)}
		switch {
		case strings.HasPrefix(inner, "="):
			t.output = true
			inner = inner[1:]
		case strings.HasPrefix(inner, "#"):
			t.comment = true
		}
		inner = strings.TrimPrefix(inner, "-")
		inner = strings.TrimSuffix(inner, "-")
		t.code = strings.TrimSpace(inner)
		tags = append(tags, t)
		i = end
	}
}

func lineAt(s string, off int) int { return strings.Count(s[:off], "\n") + 1 }

var controlFlow = regexp.MustCompile(`^(if|unless|else|elsif|end|case|when|while|until|for|begin|rescue|ensure)\b|\bdo\s*(\|[^|]*\|)?\s*$|\{\s*\|`)

// placeholder returns the same-length stand-in for output tag number i.
func placeholder(i, length int) (string, bool) {
	p := "ERB" + strconv.Itoa(i)
	if len(p) > length {
		return "", false
	}
	return p + strings.Repeat("_", length-len(p)), true
}

var placeholderRE = regexp.MustCompile(`ERB([0-9]+)_*`)

// maskedText is a file's text with ERB tags masked, plus what was masked.
type maskedText struct {
	original string
	masked   string
	tags     []erbTag // output tags, indexed by placeholder number
}

// mask replaces output tags with placeholders and blanks statement and
// comment tags (keeping newlines). ERB control flow cannot be followed without
// running Ruby, so it is refused.
func mask(src string) (*maskedText, error) {
	tags, err := scanERB(src)
	if err != nil {
		return nil, err
	}
	b := []byte(src)
	m := &maskedText{original: src}
	for _, t := range tags {
		if t.output {
			p, ok := placeholder(len(m.tags), t.end-t.start)
			if !ok {
				return nil, fmt.Errorf("line %d: ERB tag %q is too short for understudy to track; write it with spaces, e.g. <%%= %s %%>", t.line, src[t.start:t.end], t.code)
			}
			copy(b[t.start:t.end], p)
			m.tags = append(m.tags, t)
			continue
		}
		if !t.comment && controlFlow.MatchString(t.code) {
			return nil, fmt.Errorf("line %d: ERB control flow (%s) decides which YAML Kamal sees, and understudy does not run Ruby; move the varying part into a destination file (config/deploy.<destination>.yml) and use -d", t.line, src[t.start:t.end])
		}
		for k := t.start; k < t.end; k++ {
			if b[k] != '\n' {
				b[k] = ' '
			}
		}
	}
	m.masked = string(b)
	return m, nil
}

// unmask puts the original ERB text back into a string taken from the masked text.
func (m *maskedText) unmask(s string) string {
	return placeholderRE.ReplaceAllStringFunc(s, func(p string) string {
		n, _ := strconv.Atoi(placeholderRE.FindStringSubmatch(p)[1])
		if n >= len(m.tags) {
			return p
		}
		t := m.tags[n]
		return m.original[t.start:t.end]
	})
}

// hasERB reports whether a masked string contains a placeholder.
func hasERB(s string) bool { return placeholderRE.MatchString(s) }

// resolve substitutes each placeholder with the value of its Ruby expression.
// Only the forms that are plain environment lookups are evaluated; anything
// else makes the value unknown (ok == false) and the caller asks for it by flag.
func (m *maskedText) resolve(s string, env func(string) (string, bool)) (string, bool) {
	ok := true
	out := placeholderRE.ReplaceAllStringFunc(s, func(p string) string {
		n, _ := strconv.Atoi(placeholderRE.FindStringSubmatch(p)[1])
		if n >= len(m.tags) {
			return p
		}
		v, good := evalRuby(m.tags[n].code, env)
		if !good {
			ok = false
		}
		return v
	})
	return out, ok
}

var (
	rubyString   = `(?:"([^"\\]*)"|'([^'\\]*)')`
	envIndexRE   = regexp.MustCompile(`^ENV\[` + rubyString + `\]$`)
	envFetchRE   = regexp.MustCompile(`^ENV\.fetch\(\s*` + rubyString + `\s*(?:,\s*` + rubyString + `\s*)?\)$`)
	envOrRE      = regexp.MustCompile(`^ENV\[` + rubyString + `\]\s*\|\|\s*` + rubyString + `$`)
	rubyStringRE = regexp.MustCompile(`^` + rubyString + `$`)
)

func pick(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// evalRuby evaluates the few Ruby expressions that are plain environment
// lookups: ENV["X"], ENV.fetch("X"), ENV.fetch("X", "d"), ENV["X"] || "d" and
// string literals. ENV["X"] of an unset variable is nil, which ERB prints as "".
func evalRuby(code string, env func(string) (string, bool)) (string, bool) {
	code = strings.TrimSpace(code)
	if g := rubyStringRE.FindStringSubmatch(code); g != nil {
		return pick(g[1], g[2]), true
	}
	if g := envOrRE.FindStringSubmatch(code); g != nil {
		if v, set := env(pick(g[1], g[2])); set && v != "" {
			return v, true
		}
		return pick(g[3], g[4]), true
	}
	if g := envIndexRE.FindStringSubmatch(code); g != nil {
		v, set := env(pick(g[1], g[2]))
		return v, set
	}
	if g := envFetchRE.FindStringSubmatch(code); g != nil {
		if v, set := env(pick(g[1], g[2])); set {
			return v, true
		}
		if g[3] != "" || g[4] != "" {
			return pick(g[3], g[4]), true
		}
		return "", false
	}
	return "", false
}

var envNameRE = regexp.MustCompile(`ENV(?:\[|\.fetch\(\s*)["']([A-Za-z_][A-Za-z0-9_]*)["']`)

// erbVars lists the environment variables the ERB in a masked string reads.
func (m *maskedText) erbVars(s string) []string {
	var out []string
	for _, g := range placeholderRE.FindAllStringSubmatch(s, -1) {
		n, _ := strconv.Atoi(g[1])
		if n < len(m.tags) {
			for _, v := range envNameRE.FindAllStringSubmatch(m.tags[n].code, -1) {
				out = append(out, v[1])
			}
		}
	}
	return out
}
