package setup

import (
	"reflect"
	"strings"
	"testing"

	"github.com/understudy-dev/understudy/kamal"
	"github.com/understudy-dev/understudy/pgconf"
)

func withFailover(o Options, fo FailoverOptions) Options {
	o.Failover = &fo
	return o
}

var witness = FailoverOptions{WitnessHost: "192.0.2.1", WitnessIP: "10.0.0.1"}

// secretValues returns an environment where every name has a value that
// must never appear in a file init writes.
func secretValues(name string) (string, bool) { return "SeCrEt-" + name + "-VaLuE", true }

// init --failover writes the model (token, witness, three members), the
// agents' failover flags, secrets and volumes, the witness accessory and
// the FAILOVER_SECRET reference; a second init, with or without the flags,
// changes nothing; no secret value lands in a file; LoadDeployed reads it
// all back.
func TestFailoverIsAddedOnceAndReadBack(t *testing.T) {
	src := app("postgres:16", "10.0.0.2:5432:5432", "postgres")
	o := withFailover(replica, witness)
	o.Env = secretValues
	p, err := Build(src, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range p.Changes {
		if strings.Contains(c.New, "SeCrEt-") {
			t.Errorf("%s holds a secret's value:\n%s", c.Path, c.New)
		}
	}
	write(src, p)
	for _, again := range []Options{o, replica} {
		if q, err := Build(src, again); err != nil || len(q.Changes) != 0 {
			t.Fatalf("a second init (failover %v): %v, %d changes", again.Failover != nil, err, len(q.Changes))
		}
	}
	if p.WitnessHost != "192.0.2.1" {
		t.Errorf("witness host %q", p.WitnessHost)
	}

	// The model.
	c, err := pgconf.UnmarshalCluster([]byte(src["config/understudy/cluster.json"]))
	if err != nil {
		t.Fatal(err)
	}
	want := &pgconf.Failover{Token: "app-db", Witness: "db-witness", Members: []pgconf.FailoverMember{
		{Name: "db", Addr: "10.0.0.2"}, {Name: "db-replica", Addr: "10.0.0.3"}, {Name: "db-witness", Addr: "10.0.0.1"}}}
	if !reflect.DeepEqual(c.Failover, want) {
		t.Errorf("cluster.json's failover: %+v, want %+v", c.Failover, want)
	}
	if !strings.Contains(src["config/understudy/boot.sh"], "standby.signal") {
		t.Error("boot.sh does not boot a node read-only with failover on")
	}

	// The agents.
	cfg, err := kamal.Load(src, "config/deploy.yml", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateKamal(cfg); err != nil {
		t.Fatal(err)
	}
	for _, node := range []string{"db", "db-replica"} {
		a := cfg.Accessory(AgentName(node))
		cmd, _ := a.Str("cmd")
		if want := agentCmd(node, false) + " --failover --failover-data /var/lib/understudy-etcd --pgdata /var/lib/postgresql/data"; cmd != want {
			t.Errorf("%s's cmd %q, want %q", a.Name, cmd, want)
		}
		var secrets []string
		for _, s := range a.Env().Secret {
			secrets = append(secrets, s.Name+"="+s.Secret)
		}
		if got := strings.Join(secrets, " "); got != "MONITOR_PASSWORD=MONITOR_PASSWORD FAILOVER_SECRET=FAILOVER_SECRET POSTGRES_PASSWORD=POSTGRES_PASSWORD" {
			t.Errorf("%s's secrets: %s", a.Name, got)
		}
		mounts := map[string]string{}
		for _, m := range a.Mounts() {
			mounts[m.Kind+" "+m.Remote] = m.Local
		}
		if got := mounts["directories /var/lib/postgresql/data"]; got != "../app-"+node+"/data" {
			t.Errorf("%s mounts %q at the node's PGDATA, want its node's data directory; mounts %v", a.Name, got, mounts)
		}
		if got := mounts["volumes /var/lib/understudy-etcd"]; got != "app-"+node+"-agent-etcd" {
			t.Errorf("%s's member volume %q", a.Name, got)
		}
		if u, _ := a.Str("options", "user"); u != "root" {
			t.Errorf("%s runs as %q: a new named volume belongs to root", a.Name, u)
		}
	}

	// The witness: the nodes' image on the app host, host network (its
	// member binds the private IP itself), no port published.
	w := cfg.Accessory("db-witness")
	if w == nil {
		t.Fatalf("no witness:\n%s", src["config/deploy.yml"])
	}
	for k, want := range map[string]string{"image": "postgres:16", "host": "192.0.2.1", "network": "host", "cmd": WitnessCmd} {
		if got, _ := w.Str(k); got != want {
			t.Errorf("witness %s = %q, want %q", k, got, want)
		}
	}
	if w.Field("port") != nil {
		t.Error("the witness publishes a port")
	}
	if s := w.Env().Secret; len(s) != 1 || s[0].Secret != "FAILOVER_SECRET" {
		t.Errorf("the witness's secrets: %+v", s)
	}
	if !strings.Contains(src["config/deploy.yml"], "      - app-db-witness-etcd:/var/lib/understudy-etcd\n") ||
		!strings.Contains(src["config/deploy.yml"], "      - config/understudy/cluster.json:/understudy/cluster.json\n") {
		t.Errorf("the witness's volume or cluster.json:\n%s", src["config/deploy.yml"])
	}
	if !strings.Contains(src[".kamal/secrets"], "\nFAILOVER_SECRET=$FAILOVER_SECRET\n") {
		t.Errorf("secrets:\n%s", src[".kamal/secrets"])
	}
	if !strings.Contains(strings.Join(p.Notes, "\n"), "`understudy failover secret`") {
		t.Errorf("init does not say how to make FAILOVER_SECRET:\n%s", strings.Join(p.Notes, "\n"))
	}

	// Read back.
	d, err := LoadDeployed(src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(d.Cluster.Failover, want) {
		t.Errorf("read back: %+v", d.Cluster.Failover)
	}
	if d.Witness == nil || d.Witness.Name != "db-witness" || strings.Join(d.Witness.Hosts, ",") != "192.0.2.1" || d.Witness.Config != src["config/understudy/cluster.json"] {
		t.Errorf("witness read back: %+v", d.Witness)
	}
	if len(d.Agents) != 2 || d.Router == nil {
		t.Errorf("agents %+v, router %+v", d.Agents, d.Router)
	}
}

// --synchronous is recorded in the model; init without the flags keeps it.
func TestFailoverSynchronous(t *testing.T) {
	src := app("postgres:16", "10.0.0.2:5432:5432", "postgres")
	fo := witness
	fo.Synchronous = true
	p, err := Build(src, withFailover(replica, fo))
	if err != nil {
		t.Fatal(err)
	}
	write(src, p)
	c, _ := pgconf.UnmarshalCluster([]byte(src["config/understudy/cluster.json"]))
	if c.Failover == nil || !c.Failover.Synchronous {
		t.Fatalf("--synchronous not in the model: %+v", c.Failover)
	}
	if !strings.Contains(strings.Join(p.Notes, "\n"), "ANY 1") {
		t.Error("init does not say what --synchronous costs")
	}
	if q, err := Build(src, replica); err != nil || len(q.Changes) != 0 {
		t.Fatalf("init without flags: %v, %d changes", err, len(q.Changes))
	}
	// Turned off by naming failover again without it.
	q, err := Build(src, withFailover(replica, witness))
	if err != nil {
		t.Fatal(err)
	}
	write(src, q)
	c, _ = pgconf.UnmarshalCluster([]byte(src["config/understudy/cluster.json"]))
	if c.Failover.Synchronous {
		t.Error("--failover without --synchronous kept synchronous mode")
	}
}

// Failover added to a setup that has run without it: deploy.yml changes
// only where failover needs it (the agents' cmd and user, added lines, the
// witness); every other line is kept, in order; the token stays what the
// first --failover init wrote.
func TestFailoverAddedLaterKeepsTheRest(t *testing.T) {
	src := app("postgres:16", "10.0.0.2:5432:5432", "postgres")
	p, err := Build(src, withBackup(replica, s3Flags))
	if err != nil {
		t.Fatal(err)
	}
	write(src, p)
	before := src["config/deploy.yml"]
	q, err := Build(src, withFailover(replica, witness))
	if err != nil {
		t.Fatal(err)
	}
	write(src, q)
	after := strings.Split(src["config/deploy.yml"], "\n")
	i := 0
	for _, l := range strings.Split(before, "\n") {
		if strings.Contains(l, "understudy agent --cluster") || strings.Contains(l, "user: postgres") {
			continue // the agents' cmd and user change
		}
		for i < len(after) && after[i] != l {
			i++
		}
		if i == len(after) {
			t.Fatalf("line %q of the earlier deploy.yml is gone or moved:\n%s", l, src["config/deploy.yml"])
		}
		i++
	}
	cfg, _ := kamal.Load(src, "config/deploy.yml", "", nil)
	if cmd, _ := cfg.Accessory("db-replica-agent").Str("cmd"); !strings.Contains(cmd, "--backup-report") || !strings.Contains(cmd, "--failover") {
		t.Errorf("db-replica-agent's cmd: %s", cmd)
	}
	if r, err := Build(src, replica); err != nil || len(r.Changes) != 0 {
		t.Fatalf("init again: %v, %d changes", err, len(r.Changes))
	}
	// A token written before stays, whatever the names say now.
	src["config/understudy/cluster.json"] = strings.Replace(src["config/understudy/cluster.json"], `"token": "app-db"`, `"token": "older-token"`, 1)
	r, err := Build(src, withFailover(replica, witness))
	if err != nil || len(r.Changes) != 0 {
		t.Fatalf("init --failover with an older token: %v, %d changes", err, len(r.Changes))
	}
}

// The witness host defaults to its own address when that is private; a
// host name needs --witness-ip.
func TestFailoverWitnessIPFromHost(t *testing.T) {
	src := app("postgres:16", "10.0.0.2:5432:5432", "postgres")
	p, err := Build(src, withFailover(replica, FailoverOptions{WitnessHost: "10.0.0.7"}))
	if err != nil {
		t.Fatal(err)
	}
	if m := p.Cluster.Failover.Members[2]; m.Addr != "10.0.0.7" {
		t.Errorf("witness member %+v", m)
	}
}

func TestFailoverRefusals(t *testing.T) {
	ok := app("postgres:16", "10.0.0.2:5432:5432", "postgres")
	taken := app("postgres:16", "10.0.0.2:5432:5432", "postgres")
	taken["config/deploy.yml"] += "  db-witness:\n    image: quay.io/coreos/etcd:v3.5\n    host: 192.0.2.1\n"
	public := app("postgres:16", "203.0.113.2:5432:5432", "postgres")
	noPassword := app("postgres:16", "10.0.0.2:5432:5432", "postgres")
	noPassword["config/deploy.yml"] = strings.Replace(noPassword["config/deploy.yml"], "    env:\n      secret:\n        - POSTGRES_PASSWORD\n", "", 1)
	cases := []struct {
		name  string
		src   mapSource
		fo    FailoverOptions
		where string
		want  []string
	}{
		{"no witness host", ok, FailoverOptions{}, "--witness-host", []string{"needs the witness's server"}},
		{"witness on the primary's server", ok, FailoverOptions{WitnessHost: "192.0.2.2", WitnessIP: "10.0.0.9"}, "--witness-host", []string{"database server", "third vote"}},
		{"witness on the standby's server", ok, FailoverOptions{WitnessHost: "192.0.2.3", WitnessIP: "10.0.0.9"}, "--witness-host", []string{"database server"}},
		{"witness by name, no ip", ok, FailoverOptions{WitnessHost: "app1.example.com"}, "--witness-ip", []string{"not a private IP", "--witness-ip"}},
		{"public witness ip", ok, FailoverOptions{WitnessHost: "app1.example.com", WitnessIP: "198.51.100.4"}, "--witness-ip", []string{"not a private IP"}},
		{"loopback witness ip", ok, FailoverOptions{WitnessHost: "app1.example.com", WitnessIP: "127.0.0.1"}, "--witness-ip", []string{"not a private IP"}},
		{"witness ip is a node's", ok, FailoverOptions{WitnessHost: "192.0.2.1", WitnessIP: "10.0.0.3"}, "--witness-ip", []string{"db-replica's address"}},
		{"bad witness host", ok, FailoverOptions{WitnessHost: "app;rm -rf", WitnessIP: "10.0.0.1"}, "--witness-host", []string{"not a server name"}},
		{"name taken", taken, witness, "config/deploy.yml:22", []string{"was not made by understudy"}},
		{"node on a public address", public, witness, "config/deploy.yml:15", []string{"not a private IP"}},
		{"no POSTGRES_PASSWORD", noPassword, witness, "config/deploy.yml:12", []string{"POSTGRES_PASSWORD", "superuser"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(tc.src, withFailover(replica, tc.fo))
			r, ok := err.(*Refusal)
			if !ok {
				t.Fatalf("not a refusal: %v", err)
			}
			if r.Where != tc.where || r.Fix == "" {
				t.Errorf("where %q (want %q), fix %q", r.Where, tc.where, r.Fix)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.Error(), w) {
					t.Errorf("%q lacks %q", r.Error(), w)
				}
			}
		})
	}
}

// deploy.yml and cluster.json that disagree about failover are refused by
// the live commands, with the fix.
func TestFailoverReadBackRefusesDisagreement(t *testing.T) {
	src := app("postgres:16", "10.0.0.2:5432:5432", "postgres")
	p, err := Build(src, withFailover(replica, witness))
	if err != nil {
		t.Fatal(err)
	}
	write(src, p)
	good := src["config/deploy.yml"]
	i := strings.Index(good, "  db-witness:\n")
	src["config/deploy.yml"] = good[:i]
	if _, err := LoadDeployed(src, Options{}); err == nil || !strings.Contains(err.Error(), "db-witness, which is not in config/deploy.yml") {
		t.Errorf("witness gone: %v", err)
	}
	src["config/deploy.yml"] = strings.Replace(good, " --failover --failover-data /var/lib/understudy-etcd --pgdata /var/lib/postgresql/data\n", "\n", 1)
	if _, err := LoadDeployed(src, Options{}); err == nil || !strings.Contains(err.Error(), "runs without --failover") {
		t.Errorf("agent without --failover: %v", err)
	}
}

// What Kamal runs for the witness and a failover agent (its own commands,
// as kamal.AccessoryCommands reproduces them): the host network, no port
// published, the member's named volume, the node's data directory at its
// path, root.
func TestFailoverDockerRun(t *testing.T) {
	src := app("postgres:16", "10.0.0.2:5432:5432", "postgres")
	p, err := Build(src, withFailover(replica, witness))
	if err != nil {
		t.Fatal(err)
	}
	write(src, p)
	cfg, err := kamal.Load(src, "config/deploy.yml", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]string{
		"db-witness": {"--network host", "--volume app-db-witness-etcd:/var/lib/understudy-etcd", "--volume $PWD/app-db-witness/bin:/understudy/bin:ro", "postgres:16 /understudy/bin/understudy witness --cluster /understudy/cluster.json --data /var/lib/understudy-etcd"},
		"db-agent":   {"--network host", "--volume app-db-agent-etcd:/var/lib/understudy-etcd", "--volume $PWD/app-db-agent/../app-db/data:/var/lib/postgresql/data", `--user "root"`, "--failover --failover-data /var/lib/understudy-etcd --pgdata /var/lib/postgresql/data"},
	} {
		ac, err := cfg.Commands(name)
		if err != nil {
			t.Fatal(err)
		}
		run := ac.Run("192.0.2.1")
		for _, w := range want {
			if !strings.Contains(run, w) {
				t.Errorf("%s: %q lacks %q", name, run, w)
			}
		}
		if strings.Contains(run, "--publish") {
			t.Errorf("%s publishes a port: %s", name, run)
		}
	}
}

// The agent mounts the node's data volume as the node has it: a named
// volume verbatim; on postgres:18 the whole /var/lib/postgresql, with
// --pgdata the cluster inside it.
func TestFailoverAgentMountsTheNodesVolume(t *testing.T) {
	for _, tc := range []struct {
		image, mount, pgdata string
		kind, local, remote  string
	}{
		{"postgres:16", "    volumes:\n      - pgdata:/var/lib/postgresql/data\n", "/var/lib/postgresql/data", "volumes", "pgdata", "/var/lib/postgresql/data"},
		{"postgres:18", "    directories:\n      - data:/var/lib/postgresql\n", "/var/lib/postgresql/18/docker", "directories", "../app-db/data", "/var/lib/postgresql"},
		{"postgres:17", "    directories:\n      - /srv/pg:/var/lib/postgresql/data\n", "/var/lib/postgresql/data", "directories", "/srv/pg", "/var/lib/postgresql/data"},
	} {
		src := app(tc.image, "10.0.0.2:5432:5432", "postgres")
		src["config/deploy.yml"] = strings.Replace(src["config/deploy.yml"], "    directories:\n      - data:/var/lib/postgresql/data\n", tc.mount, 1)
		p, err := Build(src, withFailover(replica, witness))
		if err != nil {
			t.Fatalf("%s: %v", tc.image, err)
		}
		write(src, p)
		cfg, _ := kamal.Load(src, "config/deploy.yml", "", nil)
		a := cfg.Accessory("db-agent")
		if cmd, _ := a.Str("cmd"); !strings.HasSuffix(cmd, " --pgdata "+tc.pgdata) {
			t.Errorf("%s: cmd %s", tc.image, cmd)
		}
		found := false
		for _, m := range a.Mounts() {
			found = found || (m.Kind == tc.kind && m.Local == tc.local && m.Remote == tc.remote)
		}
		if !found {
			t.Errorf("%s: db-agent does not mount %s %s:%s:\n%s", tc.image, tc.kind, tc.local, tc.remote, src["config/deploy.yml"])
		}
		if q, err := Build(src, replica); err != nil || len(q.Changes) != 0 {
			t.Errorf("%s: init again: %v, %d changes", tc.image, err, len(q.Changes))
		}
	}
}
