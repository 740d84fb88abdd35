package live

import (
	"strings"
	"testing"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/internal/version"
	"github.com/understudy-dev/understudy/pgconf"
)

func TestCheckVersions(t *testing.T) {
	here := version.Build{Version: "1.2.0", Commit: "0123456789abcdef0123456789abcdef01234567", Go: "go1.26.8"}
	withAgent := func(v version.Build) *Status {
		return &Status{Understudy: here, Backup: &BackupStatus{Agent: &backup.AgentStatus{Understudy: v}}}
	}
	if got := CheckVersions(withAgent(version.Build{Version: "1.2.0", Commit: here.Commit, Go: "go1.26.9"})); len(got) != 0 {
		t.Errorf("the same build by another toolchain: %v", got)
	}
	if got := CheckVersions(&Status{Understudy: here, Backup: &BackupStatus{}}); len(got) != 0 {
		t.Errorf("no agent report (a finding of its own): %v", got)
	}
	got := CheckVersions(withAgent(version.Build{Version: "1.1.0", Commit: "fedcba9876543210fedcba9876543210fedcba98", Go: "go1.26.8"}))
	if len(got) != 1 || got[0].Code != CodeAgentVersion || got[0].Severity != Warning ||
		!strings.Contains(got[0].Problem, "runs understudy 1.1.0 (fedcba987654), this machine 1.2.0 (0123456789ab)") || !strings.Contains(got[0].Fix, "understudy apply") {
		t.Errorf("another version: %+v", got)
	}
	if got := CheckVersions(withAgent(version.Build{})); len(got) != 1 || !strings.Contains(got[0].Problem, "unknown") {
		t.Errorf("an agent from before versions were reported: %+v", got)
	}
	// Check includes it.
	st := withAgent(version.Build{Version: "1.1.0"})
	st.Backup.Bases = []backup.BaseInfo{}
	found := false
	for _, f := range Check(st, pgconf.Cluster{}, DefaultThresholds) {
		found = found || f.Code == CodeAgentVersion
	}
	if !found {
		t.Error("Check leaves out the version finding")
	}
}

// Each node agent's build is compared too; an agent that did not answer is
// left to the routing findings.
func TestCheckVersionsOfNodeAgents(t *testing.T) {
	here := version.Build{Version: "1.2.0", Commit: "0123456789abcdef0123456789abcdef01234567"}
	old := version.Build{Version: "1.1.0", Commit: "fedcba9876543210fedcba9876543210fedcba98"}
	st := &Status{Understudy: here, Agents: []AgentReading{
		{Node: "db", Understudy: here},
		{Node: "db-replica", Understudy: old},
		{Node: "db-3", Error: "connection refused"},
	}}
	got := CheckVersions(st)
	if len(got) != 1 || got[0].Node != "db-replica" || got[0].Code != CodeAgentVersion ||
		!strings.Contains(got[0].Problem, "node agent of db-replica runs understudy 1.1.0 (fedcba987654)") || !strings.Contains(got[0].Fix, "understudy apply") {
		t.Errorf("node agents: %+v", got)
	}
}
