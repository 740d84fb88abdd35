package setup

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/understudy-dev/understudy/kamal"
	"github.com/understudy-dev/understudy/pgconf"
)

// write applies a plan's changes to the source.
func write(src mapSource, p *Plan) {
	for _, c := range p.Changes {
		src[c.Path] = c.New
	}
}

// A new setup gets a node agent beside each node and a router on the
// app's hosts; a second init changes nothing; the live commands read
// them back; haproxy.cfg is what HAProxy accepts.
func TestAgentsAndRouterAreAddedOnceAndReadBack(t *testing.T) {
	src := app("postgres:16", "10.0.0.2:5432:5432", "postgres")
	p, err := Build(src, replica)
	if err != nil {
		t.Fatal(err)
	}
	write(src, p)
	if again, err := Build(src, replica); err != nil || len(again.Changes) != 0 {
		t.Fatalf("a second init: %v, %d changes", err, len(again.Changes))
	}
	cfg, err := kamal.Load(src, "config/deploy.yml", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateKamal(cfg); err != nil {
		t.Fatal(err)
	}
	for node, host := range map[string]string{"db": "192.0.2.2", "db-replica": replica.ReplicaHost} {
		a := cfg.Accessory(AgentName(node))
		if a == nil {
			t.Fatalf("no agent for %s:\n%s", node, src["config/deploy.yml"])
		}
		for k, want := range map[string]string{"image": "postgres:16", "host": host, "network": "host", "cmd": agentCmd(node, false), "options/user": "postgres"} {
			if got, _ := a.Str(strings.Split(k, "/")...); got != want {
				t.Errorf("%s %s = %q, want %q", a.Name, k, got, want)
			}
		}
		if a.Field("port") != nil {
			t.Errorf("%s publishes a port: it listens on the node's private address only", a.Name)
		}
		if s := a.Env().Secret; len(s) != 1 || s[0].Secret != "MONITOR_PASSWORD" {
			t.Errorf("%s's secrets: %+v", a.Name, s)
		}
	}
	r := cfg.Accessory("db-router")
	if r == nil {
		t.Fatal("no router")
	}
	if img, _ := r.Str("image"); img != DefaultRouterImage {
		t.Errorf("router image %q", img)
	}
	if port, _ := r.Str("port"); port != "127.0.0.1:8405:8405" {
		t.Errorf("the router publishes %q; only its metrics, on the host's loopback", port)
	}
	if p.Router == nil || p.Router.Host != "app-db-router" || strings.Join(p.Router.Roles, ",") != "web" {
		t.Errorf("router plan %+v", p.Router)
	}
	if !strings.Contains(src[".kamal/secrets"], "MONITOR_PASSWORD=$MONITOR_PASSWORD\n") {
		t.Errorf("secrets:\n%s", src[".kamal/secrets"])
	}
	d, err := LoadDeployed(src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Agents) != 2 || d.Agents[0].Node != "db" || d.Agents[1].Hosts[0] != replica.ReplicaHost || d.Agents[0].Config != src["config/understudy/cluster.json"] {
		t.Errorf("agents read back: %+v", d.Agents)
	}
	if d.Router == nil || d.Router.Name != "db-router" || strings.Join(d.Router.Hosts, ",") != "192.0.2.1" || d.Router.Config != src["config/understudy/haproxy.cfg"] {
		t.Errorf("router read back: %+v", d.Router)
	}
	if d.Cluster.MonitorUser != "understudy_monitor" {
		t.Errorf("monitoring user %q", d.Cluster.MonitorUser)
	}
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("haproxy is not installed (./scripts/setup-debian): haproxy.cfg not validated")
	}
	f := filepath.Join(t.TempDir(), "haproxy.cfg")
	os.WriteFile(f, []byte(src["config/understudy/haproxy.cfg"]), 0o644)
	if out, err := exec.Command(haproxy, "-c", "-f", f).CombinedOutput(); err != nil {
		t.Errorf("haproxy -c: %v\n%s", err, out)
	}
}

// The router is on by default only for a new setup; --router adds it to
// an existing one, --no-router keeps it out, and a router in place is
// never silently dropped.
func TestRouterChoice(t *testing.T) {
	existing := func() mapSource {
		src := app("postgres:16", "10.0.0.2:5432:5432", "postgres")
		p, err := Build(src, Options{ReplicaHost: replica.ReplicaHost, ReplicaIP: replica.ReplicaIP, Router: RouterOff})
		if err != nil {
			t.Fatal(err)
		}
		write(src, p)
		return src
	}
	src := existing()
	if strings.Contains(src["config/deploy.yml"], "db-router") || src["config/understudy/haproxy.cfg"] != "" {
		t.Fatal("--no-router added a router")
	}
	if !strings.Contains(src["config/deploy.yml"], "db-agent:") {
		t.Fatal("--no-router left out the agents")
	}
	if p, err := Build(src, replica); err != nil || len(p.Changes) != 0 {
		t.Fatalf("init again on a setup without a router: %v, %d changes (the default adds none to an existing setup)", err, len(p.Changes))
	}
	o := replica
	o.Router, o.RouterImage = RouterOn, "registry.example/haproxy:3.0"
	p, err := Build(src, o)
	if err != nil {
		t.Fatal(err)
	}
	write(src, p)
	if !strings.Contains(src["config/deploy.yml"], "  db-router:\n    image: registry.example/haproxy:3.0\n") {
		t.Fatalf("--router on an existing setup:\n%s", src["config/deploy.yml"])
	}
	if p, err := Build(src, replica); err != nil || len(p.Changes) != 0 {
		t.Fatalf("init again keeps the router: %v, %d changes", err, len(p.Changes))
	}
	o.Router = RouterOff
	if _, err := Build(src, o); err == nil || !strings.Contains(err.Error(), "kamal accessory remove db-router") {
		t.Errorf("--no-router with a router in place: %v", err)
	}
}

// The agent on the backup accessory's server reads its report; the other
// does not.
func TestAgentBesideTheBackupReadsItsReport(t *testing.T) {
	src := app("postgres:16", "10.0.0.2:5432:5432", "postgres")
	p, err := Build(src, withBackup(replica, s3Flags))
	if err != nil {
		t.Fatal(err)
	}
	write(src, p)
	cfg, _ := kamal.Load(src, "config/deploy.yml", "", nil)
	near, far := cfg.Accessory("db-replica-agent"), cfg.Accessory("db-agent")
	if cmd, _ := near.Str("cmd"); !strings.HasSuffix(cmd, "--backup-report "+AgentBackupReportDir+"/agent-status.json") {
		t.Errorf("db-replica-agent's cmd: %s", cmd)
	}
	if !strings.Contains(src["config/deploy.yml"], "      - ../app-db-backup/state:"+AgentBackupReportDir+":ro\n") {
		t.Errorf("db-replica-agent does not mount the backup's state:\n%s", src["config/deploy.yml"])
	}
	if cmd, _ := far.Str("cmd"); strings.Contains(cmd, "backup-report") {
		t.Errorf("db-agent reads a report that is on the other server: %s", cmd)
	}
	if again, _ := Build(src, replica); len(again.Changes) != 0 {
		t.Errorf("init again (no --backup) changes %s", again.Changes[0].Path)
	}
}

func TestAgentAndRouterNamesTaken(t *testing.T) {
	for _, extra := range []string{"  db-agent:\n    image: someone/agent\n    host: 192.0.2.2\n", "  db-router:\n    image: haproxy:2.8\n    host: 192.0.2.1\n"} {
		src := app("postgres:16", "10.0.0.2:5432:5432", "postgres")
		src["config/deploy.yml"] += extra
		_, err := Build(src, replica)
		r, ok := err.(*Refusal)
		if !ok || !strings.Contains(r.Problem, "was not made by understudy") || r.Fix == "" {
			t.Errorf("%q: %v", strings.Fields(extra)[0], err)
		}
	}
}

// docs/connecting.md carries the same table connect prints.
func TestConnectingDocHasTheTable(t *testing.T) {
	b, err := os.ReadFile("../docs/connecting.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), ConnectTable()) {
		t.Errorf("docs/connecting.md does not carry setup.ConnectTable() as it is now:\n%s", ConnectTable())
	}
}

func TestConnectAdvice(t *testing.T) {
	in := ConnectInput{Nodes: []pgconf.Node{{Name: "db", Addr: "10.0.1.2", Port: 5432}, {Name: "db-replica", Addr: "10.0.1.3", Port: 5432}}, User: "app", DB: "shop"}
	for stack, want := range map[Stack][]string{
		StackRails:      {"Unset DATABASE_URL", "host: 10.0.1.2,10.0.1.3", `port: "5432"`, "target_session_attrs: read-write", "tcp_user_timeout: 5000", "needs the router"},
		StackDjango:     {`"HOST": "10.0.1.2,10.0.1.3"`, "dj-database-url rejects"},
		StackLaravel:    {"DB_HOST=10.0.1.2,10.0.1.3", "PGTARGETSESSIONATTRS=read-write", "PDO::ATTR_TIMEOUT => 2", "Never DB_URL"},
		StackNode:       {"no multi-host support", "understudy init --router"},
		StackPostgresJS: {"target_session_attrs=primary", "@10.0.1.2:5432,10.0.1.3:5432/shop"},
		StackGo:         {"target_session_attrs=read-write&connect_timeout=2", "context deadline"},
		StackPython:     {"tcp_user_timeout=5000"},
		StackPHP:        {"pgsql:host=10.0.1.2,10.0.1.3;port=5432;dbname=shop;target_session_attrs=read-write", "PDO::ATTR_TIMEOUT => 2"},
	} {
		got := ConnectAdvice(stack, in)
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("%s lacks %q:\n%s", stack, w, got)
			}
		}
	}
	in.Router = &RouterEndpoint{Host: "shop-db-router", Port: 5432, ROPort: 5433}
	for _, st := range Stacks {
		got := ConnectAdvice(st, in)
		if !strings.Contains(got, "shop-db-router") || strings.Contains(got, "10.0.1.2") {
			t.Errorf("%s with the router:\n%s", st, got)
		}
	}
	if _, err := ParseStack("cobol"); err == nil || !strings.Contains(err.Error(), "rails") {
		t.Errorf("ParseStack(cobol): %v", err)
	}
}
