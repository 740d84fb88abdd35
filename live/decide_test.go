package live

import (
	"strings"
	"testing"

	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/pgops"
)

// The apply decision on constructed readings: no server, no root.

var decideCluster = pgconf.Cluster{InitialPrimary: "db", ReplUser: "replicator", WALCap: "1GB", Major: 15,
	Nodes: []pgconf.Node{{Name: "db", Addr: "10.211.7.10", Port: 5432}, {Name: "db-replica", Addr: "10.211.7.11", Port: 5432}}}

var allowAll = []pgops.HBARule{{Line: 1, Type: "host", Databases: []string{"replication"}, Users: []string{"replicator"}, Address: "10.211.7.0", Netmask: "255.255.255.0", Method: "scram-sha-256"}}

// healthy is a reading of a cluster that matches the plan.
func healthy() *ApplyFacts {
	ok := pgops.RoleState{Exists: true, Login: true, Replication: true, PasswordMatches: true}
	return &ApplyFacts{
		Status: &Status{Primary: "db", Nodes: []NodeStatus{
			{Name: "db", Reachable: true, Role: RolePrimary,
				Slots:       []pgops.Slot{{Name: "understudy_db_replica", Active: true}},
				Replication: []pgops.Replication{{Name: "db-replica", State: "streaming"}}},
			{Name: "db-replica", Reachable: true, Role: RoleStandby},
		}},
		Nodes: map[string]NodeReading{"db": {}, "db-replica": {}},
		Role:  &ok, HBA: allowAll, DBBytes: 30 << 20,
	}
}

func kinds(steps []Step) string {
	var k []string
	for _, s := range steps {
		c := ""
		if s.Consent {
			c = "!"
		}
		if s.Primary != (s.Node == "db" && s.Consent) {
			c += "(primary flag wrong)"
		}
		k = append(k, string(s.Kind)+"@"+s.Node+c)
	}
	return strings.Join(k, " ")
}

func TestDecideApply(t *testing.T) {
	down := func() *ApplyFacts {
		return &ApplyFacts{Status: &Status{Nodes: []NodeStatus{{Name: "db", Role: RoleDown}, {Name: "db-replica", Role: RoleDown}}}, Nodes: map[string]NodeReading{}}
	}
	gap := func(name, context, src string) SettingGap {
		s := pgconf.Setting{Name: name, Value: "on", Why: "because"}
		return SettingGap{Setting: s, Live: pgops.LiveSetting{Name: name, Setting: "off", Context: context, SourceFile: src}}
	}
	cases := []struct {
		name string
		f    func() *ApplyFacts
		want string // step kinds, "error: ..." for a refusal
	}{
		{"fresh", down, "start-primary@db check-settings@db ensure-role@db rewind-grants@db check-hba@db ensure-slot@db start-standby@db-replica"},
		{"healthy", healthy, ""},
		{"slot missing", func() *ApplyFacts { f := healthy(); f.Status.Nodes[0].Slots = nil; return f }, "ensure-slot@db"},
		{"role password changed", func() *ApplyFacts {
			f := healthy()
			f.Role = &pgops.RoleState{Exists: true, Login: true, Replication: true}
			return f
		}, "ensure-role@db"},
		{"grants missing", func() *ApplyFacts { f := healthy(); f.GrantsMissing = true; return f }, "rewind-grants@db"},
		{"restart needed on the standby", func() *ApplyFacts {
			f := healthy()
			f.Nodes["db-replica"] = NodeReading{Gaps: []SettingGap{gap("wal_log_hints", "postmaster", "")}}
			return f
		}, "restart@db-replica!"},
		{"reloadable and restart gaps, ALTER SYSTEM override", func() *ApplyFacts {
			f := healthy()
			f.Nodes["db"] = NodeReading{Gaps: []SettingGap{gap("max_slot_wal_keep_size", "sighup", "/data/postgresql.auto.conf"), gap("wal_log_hints", "postmaster", "")}}
			f.Nodes["db-replica"] = NodeReading{Gaps: []SettingGap{gap("wal_log_hints", "postmaster", "")}}
			return f
		}, "reload@db restart@db-replica! restart@db! check-hba@db"},
		{"primary runs without the settings file", func() *ApplyFacts {
			f := healthy()
			f.Nodes["db"] = NodeReading{NotOurConfig: "config_file a → b"}
			return f
		}, "restart@db! check-hba@db"},
		{"primary as the image runs it: hba checked after its reboot", func() *ApplyFacts {
			f := healthy()
			f.Nodes["db"] = NodeReading{NotOurConfig: "config_file a → b"}
			f.HBA = nil
			return f
		}, "restart@db! check-hba@db"},
		{"standby stopped", func() *ApplyFacts {
			f := healthy()
			f.Status.Nodes[1] = NodeStatus{Name: "db-replica", Role: RoleDown}
			f.Status.Nodes[0].Replication = nil
			delete(f.Nodes, "db-replica")
			return f
		}, "start-standby@db-replica"},
		{"standby up, not streaming", func() *ApplyFacts { f := healthy(); f.Status.Nodes[0].Replication = nil; return f }, "await-standby@db-replica"},
		{"hba refuses the standby", func() *ApplyFacts { f := healthy(); f.HBA = nil; return f }, "error: does not let db-replica"},
		{"two writable nodes", func() *ApplyFacts {
			f := healthy()
			f.Status.Primary = ""
			f.Status.Nodes[1].Role = RolePrimary
			return f
		}, "error: more than one node accepts writes"},
		{"a fresh standby of another major: refused before the primary starts", func() *ApplyFacts {
			f := down()
			f.Status.Nodes[0].Image = &NodeImage{Ref: "postgres:15", Major: 15}
			f.Status.Nodes[1].Image = &NodeImage{Ref: "postgres:18", Major: 18}
			return f
		}, "error: refused, nothing was cloned or started:\ndb-replica runs the image postgres:18 (PostgreSQL 18), but db runs the image postgres:15 (PostgreSQL 15)"},
		{"a node running another major than its image", func() *ApplyFacts {
			f := healthy()
			f.Status.Nodes[0].Image = &NodeImage{Ref: "postgres:15", Major: 15}
			f.Status.Nodes[1].Image = &NodeImage{Ref: "postgres:15", Major: 15}
			f.Status.Nodes[1].Facts = &pgops.Facts{Settings: map[string]string{"server_version_num": "170012"}}
			return f
		}, "error: refused, nothing was cloned or started:\ndb-replica runs PostgreSQL 17, but it is started from the image postgres:15"},
		{"images of the same major, tags that do not say it", func() *ApplyFacts {
			f := healthy()
			f.Status.Nodes[0].Image = &NodeImage{Ref: "postgres:15.8", Major: 15}
			f.Status.Nodes[1].Image = &NodeImage{Ref: "registry.example/pg:latest"}
			return f
		}, ""},
		{"only a standby answers", func() *ApplyFacts {
			f := healthy()
			f.Status.Primary = ""
			f.Status.Nodes[0] = NodeStatus{Name: "db", Role: RoleDown}
			return f
		}, "error: apply will not invent a primary"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			steps, err := DecideApply(c.f(), decideCluster)
			got := kinds(steps)
			if err != nil {
				got = "error: " + err.Error()
			}
			if strings.HasPrefix(c.want, "error: ") {
				if !strings.Contains(got, strings.TrimPrefix(c.want, "error: ")) {
					t.Fatalf("got %q, want %s", got, c.want)
				}
				return
			}
			if got != c.want {
				t.Fatalf("steps %q, want %q", got, c.want)
			}
			for _, s := range steps {
				if s.Action == "" || s.Effect == "" {
					t.Errorf("step %s has no text for the plan", s.Kind)
				}
			}
		})
	}
}

// A node whose server holds an older boot script (failover turned on: the
// new one starts read-only) gets it put in place first, without a restart;
// a node that restarts anyway gets it with its reboot; none is stale,
// nothing to do.
func TestDecideApplyRefreshesBootScript(t *testing.T) {
	c := decideCluster
	c.Failover = &pgconf.Failover{}
	f := healthy()
	f.StaleBoot = map[string]bool{"db": true, "db-replica": true}
	steps, err := DecideApply(f, c)
	if err != nil {
		t.Fatal(err)
	}
	if k := kinds(steps); k != "refresh-boot@db refresh-boot@db-replica" {
		t.Errorf("steps: %s", k)
	}
	for _, s := range steps {
		if s.Effect != "none" || !strings.Contains(s.Action, "without restarting") || !strings.Contains(s.Action, "read-only") {
			t.Errorf("the refresh says too little: %+v", s)
		}
	}
	f.Nodes["db-replica"] = NodeReading{NotOurConfig: "config_file x → y"}
	steps, _ = DecideApply(f, c)
	if k := kinds(steps); k != "refresh-boot@db restart@db-replica!" {
		t.Errorf("with db-replica rebooting: %s", k)
	}
	if steps, _ := DecideApply(healthy(), c); len(steps) != 0 {
		t.Errorf("nothing stale: %s", kinds(steps))
	}
}
