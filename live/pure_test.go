package live_test

import (
	"testing"

	"github.com/understudy-dev/understudy/internal/labtest"
	"github.com/understudy-dev/understudy/live"
	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/pgops"
)

func TestSameSettingAcrossUnits(t *testing.T) {
	cases := []struct {
		want, setting, unit string
		same                bool
	}{
		{"'10GB'", "10240", "MB", true},
		{"'1GB'", "1024", "MB", true},
		{"'1GB'", "1023", "MB", false},
		{"'10s'", "10000", "ms", true},
		{"'2s'", "2", "s", true},
		{"'2s'", "3", "s", false},
		{"5", "5", "s", true},
		{"on", "on", "", true},
		{"on", "off", "", false},
		{"-1", "-1", "MB", true},
		{"replica", "replica", "", true},
		{"replica", "logical", "", false},
		{"'16MB'", "2048", "8kB", true},
		{"'latest'", "latest", "", true},
	}
	for _, c := range cases {
		if got := pgconf.SameSetting(c.want, c.setting, c.unit); got != c.same {
			t.Errorf("SameSetting(%q, %q, %q) = %v", c.want, c.setting, c.unit, got)
		}
	}
}

func TestHBADecidesFirstMatch(t *testing.T) {
	rules := []pgops.HBARule{
		{Line: 1, Type: "local", Databases: []string{"all"}, Users: []string{"all"}, Method: "trust"},
		{Line: 2, Type: "host", Databases: []string{"all"}, Users: []string{"all"}, Address: "10.211.7.0", Netmask: "255.255.255.0", Method: "scram-sha-256"},
		{Line: 3, Type: "host", Databases: []string{"replication"}, Users: []string{"replicator"}, Address: "10.211.7.11", Netmask: "255.255.255.255", Method: "scram-sha-256"},
		{Line: 4, Type: "host", Databases: []string{"replication"}, Users: []string{"all"}, Address: "10.211.7.0", Netmask: "255.255.255.0", Method: "reject"},
		{Line: 5, Type: "hostssl", Databases: []string{"replication"}, Users: []string{"all"}, Address: "all", Method: "scram-sha-256"},
		{Line: 6, Type: "host", Databases: []string{"replication"}, Users: []string{"all"}, Address: "", Error: "invalid IP mask", Method: "trust"},
	}
	cases := []struct {
		db, user, ip string
		allowed      bool
		line         int
	}{
		{"replication", "replicator", "10.211.7.11", true, 3},
		{"replication", "replicator", "10.211.7.12", false, 4}, // "all" on line 2 does not cover replication
		{"replication", "replicator", "10.211.8.1", false, 0},  // hostssl only; errors never match
		{"postgres", "replicator", "10.211.7.12", true, 2},
	}
	for _, c := range cases {
		v := live.HBADecides(rules, c.db, c.user, c.ip)
		if v.Allowed != c.allowed || v.Line != c.line {
			t.Errorf("%s/%s from %s: got %+v, want allowed=%v line %d", c.db, c.user, c.ip, v, c.allowed, c.line)
		}
	}
}

// TLS cannot be provoked in the lab (it would need public addresses, which
// the tests must not use), so this finding is tested on a constructed
// reading: a public link without TLS warns, a private one does not.
func TestCheckTLSOffOnPublicLinkOnly(t *testing.T) {
	mk := func(paddr, saddr string, ssl bool) *live.Status {
		settings := map[string]string{"max_slot_wal_keep_size": "1024", "wal_log_hints": "on"}
		f := func(rec bool) *pgops.Facts {
			return &pgops.Facts{SystemIdentifier: "1", InRecovery: rec, Timeline: 1, DataChecksums: true, Settings: settings,
				Receiver: &pgops.Receiver{Status: "streaming"}}
		}
		return &live.Status{Primary: "db", WALCap: "1GB", Nodes: []live.NodeStatus{
			{Name: "db", Addr: paddr, Reachable: true, Role: "primary", Facts: f(false),
				Replication: []pgops.Replication{{Name: "db-replica", State: "streaming", SSL: ssl}},
				Slots:       []pgops.Slot{{Name: "understudy_db_replica", Active: true, WALStatus: "reserved"}}},
			{Name: "db-replica", Addr: saddr, Reachable: true, Role: "standby", Facts: f(true)},
		}}
	}
	c := pgconf.Cluster{Nodes: []pgconf.Node{{Name: "db"}, {Name: "db-replica"}}, WALCap: "1GB", ReplUser: "replicator"}
	if fs := live.Check(mk("203.0.113.5", "203.0.113.6", false), c, live.DefaultThresholds); !labtest.Has(fs, "tls-off", live.Warning, "db-replica") {
		t.Errorf("public link without TLS: %s", live.FindingsText(fs))
	}
	if fs := live.Check(mk("203.0.113.5", "203.0.113.6", true), c, live.DefaultThresholds); len(fs) != 0 {
		t.Errorf("public link with TLS: %s", live.FindingsText(fs))
	}
	if fs := live.Check(mk("10.0.1.2", "10.0.1.3", false), c, live.DefaultThresholds); len(fs) != 0 {
		t.Errorf("private link: %s", live.FindingsText(fs))
	}
	// And the other half of the rewind rule: no checksums, no wal_log_hints.
	st := mk("10.0.1.2", "10.0.1.3", false)
	st.Nodes[0].Facts.DataChecksums = false
	st.Nodes[0].Facts.Settings = map[string]string{"max_slot_wal_keep_size": "1024", "wal_log_hints": "off"}
	if fs := live.Check(st, c, live.DefaultThresholds); !labtest.Has(fs, "rewind-impossible", live.Warning, "db") {
		t.Errorf("no checksums, no hints: %s", live.FindingsText(fs))
	}
}
