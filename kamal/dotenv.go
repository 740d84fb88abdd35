package kamal

import (
	"strings"
)

// Kamal reads .kamal/secrets with the dotenv gem (3.1, Dotenv::Parser)
// after replacing its command substitution with its own
// (Kamal::Secrets::Dotenv::InlineCommandSubstitution). This file follows
// those rules exactly, without a shell:
//
//   - the file is scanned for lines matching dotenv's LINE pattern: leading
//     whitespace, optional `export `, a key of [A-Za-z0-9_.], then `=` (or
//     `: `) and a value that is single-quoted, double-quoted (either may span
//     lines; \' and \" do not close), or unquoted up to a # or the end of the
//     line; then an optional # comment. Other lines are ignored;
//   - a value is stripped; surrounding quotes of one kind are removed. A
//     single-quoted value is taken as it is. Otherwise backslash escapes are
//     undone (\x becomes x, except before $), then $VAR, ${VAR} are replaced
//     (case-insensitive names; an earlier key of the same file, else the
//     environment, else ""; \$ keeps a literal $), then each $(command) runs
//     in a shell after the same variable replacement in its text, and its
//     output, less one trailing newline, takes its place (\$(...) is kept).
//     A command starting `kamal secrets` is Kamal's own, run as kamal with
//     --inline. Nothing else is ever run, and no value is read by a shell.

// dotenvEntry is one matched line: the key and the value as written.
type dotenvEntry struct {
	Key    string
	Value  string // the value group as matched (quotes included), "" when absent
	HasVal bool
	Export bool
	Line   int // 1-based line of the key
	end    int
}

func isDotenvSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

func isKeyChar(c byte) bool {
	return c == '_' || c == '.' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

// parseDotenv scans text the way Dotenv::Parser#call does.
func parseDotenv(text string) []dotenvEntry {
	text = strings.ReplaceAll(strings.ReplaceAll(text, "\r\n", "\n"), "\r", "\n")
	var out []dotenvEntry
	for p := 0; p <= len(text); {
		if e, ok := matchLine(text, p); ok {
			out = append(out, e)
			p = e.end
			if p < len(text) && text[p] == '\n' {
				p++
			} else if p >= len(text) {
				break
			}
			continue
		}
		i := strings.IndexByte(text[p:], '\n')
		if i < 0 {
			break
		}
		p += i + 1
	}
	return out
}

// tailEnd matches \s*(?:#.*)?(?:$|\z) at i: the greedy whitespace first.
func tailEnd(s string, i int) (int, bool) {
	j := i
	for j < len(s) && isDotenvSpace(s[j]) {
		j++
	}
	for ; j >= i; j-- {
		k := j
		if k < len(s) && s[k] == '#' {
			for k < len(s) && s[k] != '\n' {
				k++
			}
		}
		if k == len(s) || s[k] == '\n' {
			return k, true
		}
	}
	return 0, false
}

// matchLine tries dotenv's LINE pattern at a line start p.
func matchLine(s string, p int) (dotenvEntry, bool) {
	i := p
	for i < len(s) && isDotenvSpace(s[i]) {
		i++
	}
	line := 1 + strings.Count(s[:i], "\n")
	try := func(k int, export bool) (dotenvEntry, bool) {
		ks := k
		for k < len(s) && isKeyChar(s[k]) {
			k++
		}
		if k == ks {
			return dotenvEntry{}, false
		}
		e := dotenvEntry{Key: s[ks:k], Export: export, Line: line}
		if v, end, ok := matchValue(s, k); ok {
			e.Value, e.HasVal, e.end = v.text, v.present, end
			return e, true
		}
		if end, ok := tailEnd(s, k); ok {
			e.end = end
			return e, true
		}
		return dotenvEntry{}, false
	}
	if strings.HasPrefix(s[i:], "export") && i+6 < len(s) && isDotenvSpace(s[i+6]) {
		k := i + 6
		for k < len(s) && isDotenvSpace(s[k]) {
			k++
		}
		if e, ok := try(k, true); ok {
			return e, true
		}
	}
	return try(i, false)
}

type matchedValue struct {
	text    string
	present bool
}

// matchValue matches the separator and the optional value at k (after the
// key), with the tail; the alternatives in the pattern's order.
func matchValue(s string, k int) (matchedValue, int, bool) {
	// separators: \s*=\s*? (lazy) or :\s+? (lazy, at least one)
	type sep struct{ from, minWS int }
	var seps []sep
	j := k
	for j < len(s) && isDotenvSpace(s[j]) {
		j++
	}
	for w := j; w >= k; w-- { // \s* before = is greedy
		if w < len(s) && s[w] == '=' {
			seps = append(seps, sep{w + 1, 0})
		}
	}
	if k < len(s) && s[k] == ':' {
		seps = append(seps, sep{k + 1, 1})
	}
	for _, sp := range seps {
		maxWS := sp.from
		for maxWS < len(s) && isDotenvSpace(s[maxWS]) {
			maxWS++
		}
		for v := sp.from + sp.minWS; v <= maxWS; v++ { // lazy: fewest first
			if v > len(s) {
				break
			}
			if mv, end, ok := valueAt(s, v); ok {
				return mv, end, true
			}
		}
	}
	return matchedValue{}, 0, false
}

// valueAt tries the value alternatives at v, then the value-less form.
func valueAt(s string, v int) (matchedValue, int, bool) {
	w := v
	for w < len(s) && isDotenvSpace(s[w]) {
		w++
	}
	for _, q := range []byte{'\'', '"'} {
		for ws := w; ws >= v; ws-- { // the quoted forms' own \s* is greedy
			if ws >= len(s) || s[ws] != q {
				continue
			}
			for _, close := range closeCandidates(s, ws, q) {
				if end, ok := tailEnd(s, close+1); ok {
					return matchedValue{s[v : close+1], true}, end, true
				}
			}
		}
	}
	// unquoted: [^#\n]+ greedy; the tail then always matches.
	u := v
	for u < len(s) && s[u] != '#' && s[u] != '\n' {
		u++
	}
	for e := u; e > v; e-- {
		if end, ok := tailEnd(s, e); ok {
			return matchedValue{s[v:e], true}, end, true
		}
	}
	if end, ok := tailEnd(s, v); ok {
		return matchedValue{"", false}, end, true
	}
	return matchedValue{}, 0, false
}

// closeCandidates lists, longest first, where (?:\\q|[^q])*q can close a
// quote opened at open: the first q not after a backslash, then each
// backslashed q before it.
func closeCandidates(s string, open int, q byte) []int {
	var bs []int
	for i := open + 1; i < len(s); i++ {
		if s[i] != q {
			continue
		}
		if s[i-1] == '\\' && i-1 > open {
			bs = append(bs, i)
			continue
		}
		out := []int{i}
		for j := len(bs) - 1; j >= 0; j-- {
			out = append(out, bs[j])
		}
		return out
	}
	out := []int{}
	for j := len(bs) - 1; j >= 0; j-- {
		out = append(out, bs[j])
	}
	return out
}

// dotenvValue is parse_value before substitutions: strip, unquote, the
// double-quote newline rule, unescape. quote is the removed quote, or 0.
func dotenvValue(raw string) (string, byte) {
	v := strings.Trim(raw, " \t\n\r\f\v\x00")
	var quote byte
	if len(v) >= 2 && (v[0] == '\'' || v[0] == '"') && v[len(v)-1] == v[0] {
		quote = v[0]
		v = v[1 : len(v)-1]
	}
	if quote == '\'' {
		return v, quote
	}
	if quote == '"' {
		// DOTENV_LINEBREAK_MODE unset: \n and \r become \\n and \\r, which the
		// unescape below turns back into \n and \r (backslash and letter).
		v = strings.ReplaceAll(strings.ReplaceAll(v, `\n`, `\\n`), `\r`, `\\r`)
	}
	// gsub(/\\([^$])/, '\1')
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) && v[i+1] != '$' {
			b.WriteByte(v[i+1])
			i++
			continue
		}
		b.WriteByte(v[i])
	}
	return b.String(), quote
}

// substituteVariables is Dotenv::Substitutions::Variable: lookup gives a
// name's value.
func substituteVariables(v string, lookup func(string) string) string {
	var b strings.Builder
	for i := 0; i < len(v); {
		start := i
		escaped := false
		if v[i] == '\\' && i+1 < len(v) && v[i+1] == '$' {
			escaped = true
			i++
		}
		if v[i] != '$' || (i+1 < len(v) && v[i+1] == '(') {
			if escaped {
				b.WriteByte('\\')
			}
			b.WriteByte(v[i])
			i++
			continue
		}
		j := i + 1
		if j < len(v) && v[j] == '{' {
			j++
		}
		n := j
		for n < len(v) && (v[n] == '_' || (v[n] >= '0' && v[n] <= '9') || (v[n]|0x20 >= 'a' && v[n]|0x20 <= 'z')) {
			n++
		}
		name := v[j:n]
		if n < len(v) && v[n] == '}' {
			n++
		}
		switch {
		case escaped:
			b.WriteString(v[start+1 : n])
		case name != "":
			b.WriteString(lookup(name))
		default:
			b.WriteString(v[start:n])
		}
		i = n
	}
	return b.String()
}

// commandSpan finds Kamal's $(...) at i: balanced parentheses, backslash
// escapes inside. It returns the end (after the closing parenthesis).
func commandSpan(v string, i int) (int, bool) {
	if i+1 >= len(v) || v[i] != '$' || v[i+1] != '(' {
		return 0, false
	}
	depth := 0
	for j := i + 1; j < len(v); j++ {
		switch v[j] {
		case '\\':
			j++
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				if j == i+2 {
					return 0, false // "$()": the pattern needs something inside
				}
				return j + 1, true
			}
		}
	}
	return 0, false
}
