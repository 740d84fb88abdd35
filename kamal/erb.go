package kamal

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Kamal renders config/deploy.yml through ERB before it parses the YAML
// (Kamal: lib/kamal/configuration.rb, deep_merge of the destination file). understudy must both read values the way Kamal
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

// placeholder returns the same-length stand-in for output tag number i:
// "ERB", the file's nonce, the number, then underscores to the tag's length.
// The nonce is three letters that occur nowhere in the file, so text of
// the user's never reads as a placeholder, and each placeholder is matched
// at its exact length, so an underscore after a tag stays the user's.
func placeholder(nonce string, i, length int) (string, bool) {
	p := "ERB" + nonce + strconv.Itoa(i)
	if len(p) > length {
		return "", false
	}
	return p + strings.Repeat("_", length-len(p)), true
}

// pickNonce finds three capital letters that do not occur after "ERB" in src.
func pickNonce(src string) string {
	for a := 'Q'; a <= 'Z'; a++ {
		for b := 'A'; b <= 'Z'; b++ {
			for c := 'A'; c <= 'Z'; c++ {
				n := string([]rune{a, b, c})
				if !strings.Contains(src, "ERB"+n) {
					return n
				}
			}
		}
	}
	return "QQQ" // unreachable for a file of at most MaxConfigBytes
}

type maskedText struct {
	original string
	masked   string
	nonce    string
	tags     []erbTag // output tags, indexed by placeholder number
	holders  []string // their placeholders
}

// each calls f for every placeholder in s, in order, with its tag number,
// and returns s with each replaced by f's result.
func (m *maskedText) each(s string, f func(n int) string) string {
	if m == nil || m.nonce == "" {
		return s
	}
	mark := "ERB" + m.nonce
	var b strings.Builder
	for {
		i := strings.Index(s, mark)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		j := i + len(mark)
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		n, err := strconv.Atoi(s[i+len(mark) : j])
		if err == nil && n < len(m.holders) && strings.HasPrefix(s[i:], m.holders[n]) {
			b.WriteString(s[:i])
			b.WriteString(f(n))
			s = s[i+len(m.holders[n]):]
			continue
		}
		b.WriteString(s[:j])
		s = s[j:]
	}
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
	m := &maskedText{original: src, nonce: pickNonce(src)}
	for _, t := range tags {
		if t.output {
			p, ok := placeholder(m.nonce, len(m.tags), t.end-t.start)
			if !ok {
				return nil, fmt.Errorf("line %d: ERB tag %q is too short for understudy to track; write it with spaces, e.g. <%%= %s %%>", t.line, src[t.start:t.end], t.code)
			}
			copy(b[t.start:t.end], p)
			m.tags = append(m.tags, t)
			m.holders = append(m.holders, p)
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
	return m.each(s, func(n int) string { t := m.tags[n]; return m.original[t.start:t.end] })
}

// has reports whether a masked string contains a placeholder.
func (m *maskedText) has(s string) bool {
	found := false
	m.each(s, func(int) string { found = true; return "" })
	return found
}

// resolve substitutes each placeholder with the value of its Ruby expression.
// Only the forms that are plain environment lookups are evaluated; anything
// else makes the value unknown (ok == false) and the caller asks for it by flag.
func (m *maskedText) resolve(s string, env func(string) (string, bool)) (string, bool) {
	ok := true
	out := m.each(s, func(n int) string {
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
	m.each(s, func(n int) string {
		for _, v := range envNameRE.FindAllStringSubmatch(m.tags[n].code, -1) {
			out = append(out, v[1])
		}
		return ""
	})
	return out
}
