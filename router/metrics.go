package router

import (
	"bufio"
	"sort"
	"strconv"
	"strings"
)

// ServerState is one server of a router's backend, as HAProxy's
// Prometheus endpoint reports it.
type ServerState struct {
	Backend  string `json:"backend"` // WriteBackend or ReadBackend
	Server   string `json:"server"`  // the node
	Status   string `json:"status"`  // UP, DOWN, MAINT, DRAIN, NOLB
	Check    string `json:"check"`   // the last check's status: L7OK, L7STS (the agent answered 503), L4TOUT, L4CON, SOCKERR, ...
	Sessions int    `json:"sessions"`
}

// AgentReached reports whether the last check got an answer from the
// node's agent (an HTTP status, good or bad), rather than a connection
// that failed or timed out.
func (s ServerState) AgentReached() bool {
	return strings.HasPrefix(s.Check, "L7") || s.Check == "" || s.Check == "INI"
}

// ParseMetrics reads the server states from HAProxy's /metrics
// (haproxy_server_status and haproxy_server_check_status carry the state
// as a label, 1 for the current one). Pure.
func ParseMetrics(text string) []ServerState {
	type key struct{ b, s string }
	m := map[key]*ServerState{}
	get := func(b, s string) *ServerState {
		k := key{b, s}
		if m[k] == nil {
			m[k] = &ServerState{Backend: b, Server: s}
		}
		return m[k]
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, labels, value, ok := parseSample(line)
		if !ok || (labels["proxy"] != WriteBackend && labels["proxy"] != ReadBackend) {
			continue
		}
		switch name {
		case "haproxy_server_status":
			if value == 1 {
				get(labels["proxy"], labels["server"]).Status = labels["state"]
			}
		case "haproxy_server_check_status":
			if value == 1 {
				get(labels["proxy"], labels["server"]).Check = labels["state"]
			}
		case "haproxy_server_current_sessions":
			get(labels["proxy"], labels["server"]).Sessions = int(value)
		}
	}
	var out []ServerState
	for _, s := range m {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Backend != out[j].Backend {
			return out[i].Backend > out[j].Backend // rw first
		}
		return out[i].Server < out[j].Server
	})
	return out
}

// parseSample reads one line of the text format: name{l="v",...} value.
func parseSample(line string) (string, map[string]string, float64, bool) {
	labels := map[string]string{}
	name, rest := line, ""
	if i := strings.IndexByte(line, '{'); i >= 0 {
		j := strings.LastIndexByte(line, '}')
		if j < i {
			return "", nil, 0, false
		}
		name, rest = line[:i], line[j+1:]
		body := line[i+1 : j]
		for body != "" {
			eq := strings.IndexByte(body, '=')
			if eq < 0 || eq+1 >= len(body) || body[eq+1] != '"' {
				return "", nil, 0, false
			}
			k := strings.TrimSpace(body[:eq])
			v, n, ok := unquote(body[eq+1:])
			if !ok {
				return "", nil, 0, false
			}
			labels[k] = v
			body = strings.TrimPrefix(strings.TrimSpace(body[eq+1+n:]), ",")
		}
	} else if i := strings.IndexByte(line, ' '); i >= 0 {
		name, rest = line[:i], line[i:]
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return "", nil, 0, false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	return name, labels, v, err == nil
}

// unquote reads a quoted label value and how many bytes it took.
func unquote(s string) (string, int, bool) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if i+1 < len(s) {
				i++
				if s[i] == 'n' {
					b.WriteByte('\n')
				} else {
					b.WriteByte(s[i])
				}
			}
		case '"':
			return b.String(), i + 1, true
		default:
			b.WriteByte(s[i])
		}
	}
	return "", 0, false
}

// Writes lists the servers the router would send writes to now.
func Writes(states []ServerState) []string {
	var up []string
	for _, s := range states {
		if s.Backend == WriteBackend && s.Status == "UP" {
			up = append(up, s.Server)
		}
	}
	return up
}
