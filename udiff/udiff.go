// Package udiff renders unified diffs of text files, for `understudy plan`.
package udiff

import (
	"fmt"
	"strings"
)

// Diff returns a unified diff from a to b with context lines of context,
// or "" when they are equal. An empty a with isNew renders as a new file.
func Diff(path, a, b string, context int, isNew bool) string {
	if a == b {
		return ""
	}
	al, bl := split(a), split(b)
	ops := lcsOps(al, bl)
	var out strings.Builder
	from := "a/" + path
	if isNew {
		from = "/dev/null"
	}
	fmt.Fprintf(&out, "--- %s\n+++ b/%s\n", from, path)
	// Group ops into hunks.
	type op struct {
		kind byte // ' ', '-', '+'
		text string
		ai   int
		bi   int
	}
	var all []op
	ai, bi := 0, 0
	for _, k := range ops {
		switch k {
		case ' ':
			all = append(all, op{' ', al[ai], ai, bi})
			ai++
			bi++
		case '-':
			all = append(all, op{'-', al[ai], ai, bi})
			ai++
		case '+':
			all = append(all, op{'+', bl[bi], ai, bi})
			bi++
		}
	}
	for i := 0; i < len(all); {
		if all[i].kind == ' ' {
			i++
			continue
		}
		start := max(i-context, 0)
		end := i
		for end < len(all) {
			if all[end].kind != ' ' {
				end++
				continue
			}
			j := end
			for j < len(all) && all[j].kind == ' ' {
				j++
			}
			if j == len(all) || j-end > 2*context {
				end = min(end+context, len(all))
				break
			}
			end = j
		}
		var an, bn int
		for _, o := range all[start:end] {
			if o.kind != '+' {
				an++
			}
			if o.kind != '-' {
				bn++
			}
		}
		as, bs := all[start].ai+1, all[start].bi+1
		if an == 0 {
			as--
		}
		if bn == 0 {
			bs--
		}
		fmt.Fprintf(&out, "@@ -%d,%d +%d,%d @@\n", as, an, bs, bn)
		for _, o := range all[start:end] {
			out.WriteByte(o.kind)
			out.WriteString(o.text)
			out.WriteByte('\n')
		}
		i = end
	}
	if !strings.HasSuffix(b, "\n") && b != "" {
		out.WriteString("\\ No newline at end of file\n")
	}
	return out.String()
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// lcsOps computes an edit script (' ' keep, '-' delete, '+' insert) by
// longest common subsequence over the lines that differ between the common
// prefix and suffix; config files are small, so quadratic space is fine.
func lcsOps(a, b []string) []byte {
	pre := 0
	for pre < len(a) && pre < len(b) && a[pre] == b[pre] {
		pre++
	}
	suf := 0
	for suf < len(a)-pre && suf < len(b)-pre && a[len(a)-1-suf] == b[len(b)-1-suf] {
		suf++
	}
	ma, mb := a[pre:len(a)-suf], b[pre:len(b)-suf]
	n, m := len(ma), len(mb)
	dp := make([][]int, n+1)
	for i := range dp {
		dp[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if ma[i] == mb[j] {
				dp[i][j] = dp[i+1][j+1] + 1
			} else {
				dp[i][j] = max(dp[i+1][j], dp[i][j+1])
			}
		}
	}
	ops := make([]byte, 0, len(a)+len(b))
	for range pre {
		ops = append(ops, ' ')
	}
	i, j := 0, 0
	for i < n && j < m {
		switch {
		case ma[i] == mb[j]:
			ops = append(ops, ' ')
			i++
			j++
		case dp[i+1][j] >= dp[i][j+1]:
			ops = append(ops, '-')
			i++
		default:
			ops = append(ops, '+')
			j++
		}
	}
	for ; i < n; i++ {
		ops = append(ops, '-')
	}
	for ; j < m; j++ {
		ops = append(ops, '+')
	}
	for range suf {
		ops = append(ops, ' ')
	}
	return ops
}
