package live

import (
	"strings"
	"testing"

	"github.com/understudy-dev/understudy/router"
)

// The fixes name where each agent serves as the reading has it (a lab's
// agents are on ports of its own, not Kamal's 8008), and no router port.
func TestRoutingFixesNameTheAgentsAddresses(t *testing.T) {
	st := &Status{Primary: "db",
		Agents: []AgentReading{{Node: "db", Addr: "127.0.0.1:24001", Role: "primary", Primary: true}, {Node: "db-replica", Addr: "127.0.0.1:24002", Role: "standby"}},
		Routers: []RouterReading{
			{Host: "app1", Servers: []router.ServerState{
				{Backend: router.WriteBackend, Server: "db", Status: "DOWN", Check: "L4TOUT"},
				{Backend: router.WriteBackend, Server: "db-replica", Status: "UP", Check: "L7OK"}}},
			{Host: "app2", Error: "dial tcp 127.0.0.1:24100: connection refused"}}}
	fixes := map[FindingCode]string{}
	for _, f := range CheckRouting(st) {
		fixes[f.Code] = f.Fix
	}
	for code, want := range map[FindingCode]string{
		CodeRouterWrongNode:   "curl http://127.0.0.1:24002/primary",
		CodeRouterNoAgent:     "db at 127.0.0.1:24001, db-replica at 127.0.0.1:24002",
		CodeRouterUnreachable: "where the error says",
	} {
		if !strings.Contains(fixes[code], want) {
			t.Errorf("%s's fix %q lacks %q", code, fixes[code], want)
		}
	}
	for code, fix := range fixes {
		if strings.Contains(fix, "8008") || strings.Contains(fix, "8405") {
			t.Errorf("%s's fix names a Kamal default port on a setup that has others: %q", code, fix)
		}
	}
	// Without an address in the reading (an older agent's JSON), the fix
	// still says what to look for.
	st.Agents[1].Addr = ""
	for _, f := range CheckRouting(st) {
		if f.Code == CodeRouterWrongNode && !strings.Contains(f.Fix, "<db-replica's private address>:8008") {
			t.Errorf("without an address: %q", f.Fix)
		}
	}
}
