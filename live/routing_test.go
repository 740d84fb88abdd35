package live

import (
	"strings"
	"testing"

	"github.com/understudy-dev/understudy/router"
)

func TestCheckRouting(t *testing.T) {
	rw := func(server, status, check string) router.ServerState {
		return router.ServerState{Backend: router.WriteBackend, Server: server, Status: status, Check: check}
	}
	healthy := func() *Status {
		return &Status{Primary: "db",
			Agents: []AgentReading{{Node: "db", Role: "primary", Primary: true}, {Node: "db-replica", Role: "standby"}},
			Routers: []RouterReading{{Host: "app1", Servers: []router.ServerState{rw("db", "UP", "L7OK"), rw("db-replica", "DOWN", "L7STS")}},
				{Host: "app2", Servers: []router.ServerState{rw("db", "UP", "L7OK"), rw("db-replica", "DOWN", "L7STS")}}}}
	}
	cases := []struct {
		name string
		mod  func(*Status)
		want string // codes@severity, in order
	}{
		{"healthy", func(*Status) {}, ""},
		{"a router writes to the standby", func(s *Status) {
			s.Routers[1].Servers = []router.ServerState{rw("db", "DOWN", "L7STS"), rw("db-replica", "UP", "L7OK")}
		}, "router-wrong-node@critical"},
		{"a router writes to both", func(s *Status) {
			s.Routers[0].Servers[1] = rw("db-replica", "UP", "L7OK")
		}, "router-wrong-node@critical router-wrong-node@critical"},
		{"two agents answer 200", func(s *Status) { s.Agents[1].Primary = true }, "agents-two-primaries@critical"},
		{"a router cannot reach an agent", func(s *Status) {
			s.Routers[0].Servers[1] = rw("db-replica", "DOWN", "L4TOUT")
		}, "router-agent-unreachable@critical"},
		{"a router writes nowhere", func(s *Status) {
			s.Routers[0].Servers[0] = rw("db", "DOWN", "L7STS")
		}, "router-no-writes@critical"},
		{"a router cannot be read", func(s *Status) { s.Routers[1] = RouterReading{Host: "app2", Error: "connection refused"} }, "router-unreachable@warning"},
		{"an agent does not answer", func(s *Status) { s.Agents[1] = AgentReading{Node: "db-replica", Error: "timeout"} }, "agent-down@warning"},
	}
	for _, c := range cases {
		st := healthy()
		c.mod(st)
		var got []string
		for _, f := range CheckRouting(st) {
			got = append(got, string(f.Code)+"@"+f.Severity.String())
			if f.Fix == "" || f.Problem == "" {
				t.Errorf("%s: a finding without problem or fix: %+v", c.name, f)
			}
		}
		if g := strings.Join(got, " "); g != c.want {
			t.Errorf("%s: %q, want %q", c.name, g, c.want)
		}
	}
	if txt := RoutingText(healthy()); !strings.Contains(txt, "app1: writes to db; reads to the primary") {
		t.Errorf("status text:\n%s", txt)
	}
}

func TestDecideRouting(t *testing.T) {
	ok := AgentFacts{Name: "db-agent", Container: "running", BinaryCurrent: true, ConfigCurrent: true, Binary: "/bin/us"}
	r := AgentFacts{Name: "db-router", Container: "running", BinaryCurrent: true, ConfigCurrent: true}
	cases := []struct {
		name  string
		agent AgentFacts
		rt    AgentFacts
		want  string
	}{
		{"all in place", ok, r, ""},
		{"nothing yet", AgentFacts{Name: "db-agent", Container: "absent", Binary: "/bin/us"}, AgentFacts{Name: "db-router", Container: "absent", BinaryCurrent: true}, "routing-binary@db-agent routing-boot@db-agent routing-boot@db-router"},
		{"a new binary", func() AgentFacts { f := ok; f.BinaryCurrent = false; return f }(), r, "routing-binary@db-agent routing-reboot@db-agent"},
		{"a changed haproxy.cfg", ok, func() AgentFacts { f := r; f.ConfigCurrent = false; return f }(), "routing-reboot@db-router"},
		{"a stopped agent", func() AgentFacts { f := ok; f.Container = "exited"; return f }(), r, "routing-start@db-agent"},
	}
	for _, c := range cases {
		var got []string
		for _, s := range DecideRouting([]AgentFacts{c.agent, c.rt}, []RoutingKind{RoutingAgent, RoutingRouter}, false) {
			got = append(got, string(s.Kind)+"@"+s.Node)
			if s.Action == "" || s.Effect == "" {
				t.Errorf("%s: step without action or effect: %+v", c.name, s)
			}
		}
		if g := strings.Join(got, " "); g != c.want {
			t.Errorf("%s: %q, want %q", c.name, g, c.want)
		}
	}
}

// Turning failover on: the witness is booted first (its binary installed
// as the agents' is), the agents rebooted for their new cluster.json, each
// step saying what the restart does with failover on; the witness's
// reboot for a new binary says that it costs no failover.
func TestDecideRoutingWithTheWitness(t *testing.T) {
	agent := AgentFacts{Name: "db-agent", Container: "running", BinaryCurrent: true, ConfigCurrent: false, Binary: "/bin/us"}
	witness := AgentFacts{Name: "db-witness", Container: "absent", Binary: "/bin/us"}
	router := AgentFacts{Name: "db-router", Container: "running", BinaryCurrent: true, ConfigCurrent: true}
	steps := DecideRouting([]AgentFacts{witness, agent, router}, []RoutingKind{RoutingWitness, RoutingAgent, RoutingRouter}, true)
	var got []string
	for _, s := range steps {
		got = append(got, string(s.Kind)+"@"+s.Node)
	}
	if g := strings.Join(got, " "); g != "routing-binary@db-witness routing-boot@db-witness routing-reboot@db-agent" {
		t.Fatalf("steps %q", g)
	}
	if !strings.Contains(steps[1].Action, "boot failover's witness (kamal accessory boot db-witness)") {
		t.Errorf("witness boot: %+v", steps[1])
	}
	if !strings.Contains(steps[2].Effect, "fences its node") || !strings.Contains(steps[2].Action, "a changed cluster.json") {
		t.Errorf("an agent's reboot with failover on: %+v", steps[2])
	}
	// Failover off: the agent's effect says nothing of fencing.
	off := DecideRouting([]AgentFacts{agent}, []RoutingKind{RoutingAgent}, false)
	if strings.Contains(off[0].Effect, "fence") {
		t.Errorf("failover off: %+v", off[0])
	}
	// A new binary: the witness is rebooted with it, no failover.
	witness.Container, witness.BinaryCurrent, witness.ConfigCurrent = "running", false, true
	steps = DecideRouting([]AgentFacts{witness}, []RoutingKind{RoutingWitness}, true)
	if len(steps) != 2 || steps[1].Kind != StepRoutingReboot || !strings.Contains(steps[1].Action, "a new understudy witness binary") || !strings.Contains(steps[1].Effect, "no failover") {
		t.Errorf("witness with a new binary: %+v", steps)
	}
}
