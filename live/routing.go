package live

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/understudy-dev/understudy/agent"
	"github.com/understudy-dev/understudy/failover"
	"github.com/understudy-dev/understudy/internal/version"
	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/router"
)

// The node agents and the routers as status and check see them: each
// agent's own /status (what it answers /primary), and each router's view
// of the agents (which node it sends writes to), read from HAProxy's
// Prometheus endpoint on every router host.

// RoutingReader reads the agents and routers of a target (lab: over
// loopback; Kamal: through the SSH connection to each server).
type RoutingReader interface {
	AgentStatus(ctx context.Context, node string) (agent.Status, error)
	// RouterHosts are where the routers run ("" entries are not allowed;
	// none when the setup has no router).
	RouterHosts() []string
	RouterMetrics(ctx context.Context, host string) (string, error)
}

// AgentReading is one node agent's answer, as status shows it.
type AgentReading struct {
	Node    string `json:"node"`
	Addr    string `json:"addr"`            // where it serves (the node's address, its agent port)
	Error   string `json:"error,omitempty"` // its agent did not answer
	Role    string `json:"role,omitempty"`
	Primary bool   `json:"primary_ok"` // GET /primary answers 200
	Reason  string `json:"reason,omitempty"`
	// Understudy is the agent's build (zero when it did not answer).
	Understudy version.Build `json:"understudy,omitzero"`
	// Failover is its failover loop's report (nil: it runs none).
	Failover *failover.Report `json:"failover,omitempty"`
}

// RouterReading is one router's view.
type RouterReading struct {
	Host    string               `json:"host"`
	Error   string               `json:"error,omitempty"`
	Servers []router.ServerState `json:"servers,omitempty"`
}

// Writes lists the nodes this router sends writes to now.
func (r RouterReading) Writes() []string { return router.Writes(r.Servers) }

// routingDeadline bounds each agent or router read.
const routingDeadline = 5 * time.Second

// GatherRouting reads every agent and router at once (none without
// agents), each under its own deadline.
func GatherRouting(ctx context.Context, t Target) ([]AgentReading, []RouterReading) {
	r := t.Routing
	if r == nil {
		return nil, nil
	}
	var wg sync.WaitGroup
	agents := make([]AgentReading, len(t.Cluster.Nodes))
	for i, n := range t.Cluster.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := AgentReading{Node: n.Name, Addr: n.Agent()}
			actx, cancel := context.WithTimeout(ctx, routingDeadline)
			s, err := r.AgentStatus(actx, n.Name)
			cancel()
			if err != nil {
				a.Error = err.Error()
			} else {
				a.Role, a.Primary, a.Reason, a.Understudy = string(s.View.Role), s.Checks["primary"].OK, s.Checks["primary"].Reason, s.Understudy
				a.Failover = failoverReport(s.Failover)
			}
			agents[i] = a
		}()
	}
	hosts := r.RouterHosts()
	routers := make([]RouterReading, len(hosts))
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rr := RouterReading{Host: h}
			rctx, cancel := context.WithTimeout(ctx, routingDeadline)
			text, err := r.RouterMetrics(rctx, h)
			cancel()
			if err != nil {
				rr.Error = err.Error()
			} else {
				rr.Servers = router.ParseMetrics(text)
			}
			routers[i] = rr
		}()
	}
	wg.Wait()
	return agents, routers
}

// The routing finding codes.
const (
	CodeTwoPrimaries      FindingCode = "agents-two-primaries"
	CodeAgentDown         FindingCode = "agent-down"
	CodeRouterUnreachable FindingCode = "router-unreachable"
	CodeRouterWrongNode   FindingCode = "router-wrong-node"
	CodeRouterNoAgent     FindingCode = "router-agent-unreachable"
	CodeRouterNoWrites    FindingCode = "router-no-writes"
)

// CheckRouting judges the agents and routers of a reading. Pure.
func CheckRouting(st *Status) []Finding {
	var out []Finding
	add := func(sev Severity, code FindingCode, node, problem, fix string) {
		out = append(out, Finding{sev, code, node, problem, fix})
	}
	var twoHundred []string
	for _, a := range st.Agents {
		switch {
		case a.Error != "":
			add(Warning, CodeAgentDown, a.Node, fmt.Sprintf("%s's node agent does not answer: %s", a.Node, a.Error),
				fmt.Sprintf("start it: `understudy apply` (Kamal: it boots the %s-agent accessory; its log: kamal accessory logs %s-agent)", a.Node, a.Node))
		case a.Primary:
			twoHundred = append(twoHundred, a.Node)
		}
	}
	if len(twoHundred) > 1 {
		add(Critical, CodeTwoPrimaries, "", fmt.Sprintf("two node agents answer GET /primary with 200 (%s): routers may send writes to either", strings.Join(twoHundred, ", ")),
			"stop the app's writes now; keep the node the app has been writing to, and bring the other back as a standby with `understudy rejoin`")
	}
	for _, r := range st.Routers {
		if r.Error != "" {
			add(Warning, CodeRouterUnreachable, "", fmt.Sprintf("the router on %s cannot be read: %s", r.Host, r.Error),
				"make sure it runs (`understudy apply` boots its accessory; a lab's starts with `understudy lab up`) and serves its HAProxy metrics where the error says")
			continue
		}
		writes := r.Writes()
		for _, w := range writes {
			if w != st.Primary {
				what := "is not the primary"
				if st.Primary == "" {
					what = "is not a single primary (see the nodes above)"
				}
				add(Critical, CodeRouterWrongNode, w, fmt.Sprintf("the router on %s sends writes to %s, which %s", r.Host, w, what),
					fmt.Sprintf("the node agents decide: read `curl http://%s/primary` and %s's agent log; if %s accepts writes it should not, stop it and run `understudy rejoin %s`", agentAddr(st, w), w, w, w))
			}
		}
		if len(writes) > 1 {
			add(Critical, CodeRouterWrongNode, "", fmt.Sprintf("the router on %s sends writes to two nodes: %s", r.Host, strings.Join(writes, ", ")),
				"stop the app's writes now; keep the node the app has been writing to and rejoin the other (`understudy rejoin`)")
		}
		if len(writes) == 0 && st.Primary != "" {
			add(Critical, CodeRouterNoWrites, "", fmt.Sprintf("the router on %s sends writes nowhere, though %s is the primary", r.Host, st.Primary),
				fmt.Sprintf("read what %s's agent answers (`curl http://%s/primary`) and whether that router reaches it", st.Primary, agentAddr(st, st.Primary)))
		}
		var unreached []string
		for _, s := range r.Servers {
			if s.Backend == router.WriteBackend && !s.AgentReached() {
				unreached = append(unreached, fmt.Sprintf("%s (%s)", s.Server, s.Check))
			}
		}
		sort.Strings(unreached)
		if len(unreached) > 0 {
			add(Critical, CodeRouterNoAgent, "", fmt.Sprintf("the router on %s cannot reach the agent of %s", r.Host, strings.Join(unreached, ", ")),
				fmt.Sprintf("the router follows only the agents it reaches: check that each agent runs (`understudy apply`) and that the app hosts reach them (%s)", agentAddrs(st)))
		}
	}
	return out
}

// RoutingText renders the agents and routers for `status`.
func RoutingText(st *Status) string {
	if len(st.Agents) == 0 && len(st.Routers) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\nnode agents:\n")
	for _, a := range st.Agents {
		switch {
		case a.Error != "":
			fmt.Fprintf(&b, "  %s: no answer (%s)\n", a.Node, firstLine(a.Error))
		case a.Primary:
			fmt.Fprintf(&b, "  %s: /primary 200 (%s)\n", a.Node, a.Reason)
		default:
			fmt.Fprintf(&b, "  %s: /primary 503 (%s)\n", a.Node, a.Reason)
		}
	}
	if len(st.Routers) > 0 {
		b.WriteString("routers (where each app host's router sends writes):\n")
		for _, r := range st.Routers {
			if r.Error != "" {
				fmt.Fprintf(&b, "  %s: cannot read it (%s)\n", r.Host, firstLine(r.Error))
				continue
			}
			w := r.Writes()
			to := strings.Join(w, " and ")
			if len(w) == 0 {
				to = "nowhere"
			}
			var reads []string
			for _, s := range r.Servers {
				if s.Backend == router.ReadBackend && s.Status == "UP" {
					reads = append(reads, s.Server)
				}
			}
			rd := strings.Join(reads, ", ")
			if rd == "" {
				rd = "the primary (no standby within the lag limit)"
			}
			fmt.Fprintf(&b, "  %s: writes to %s; reads to %s\n", r.Host, to, rd)
		}
	}
	return b.String()
}

// agentAddr is where node's agent serves, as the reading has it.
func agentAddr(st *Status, node string) string {
	for _, a := range st.Agents {
		if a.Node == node && a.Addr != "" {
			return a.Addr
		}
	}
	return "<" + node + "'s private address>:" + strconv.Itoa(pgconf.DefaultAgentPort)
}

// agentAddrs lists every agent's address.
func agentAddrs(st *Status) string {
	var out []string
	for _, a := range st.Agents {
		out = append(out, a.Node+" at "+agentAddr(st, a.Node))
	}
	return strings.Join(out, ", ")
}
