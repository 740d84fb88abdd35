package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/internal/dockertest"
	"github.com/understudy-dev/understudy/internal/labtest"
	"github.com/understudy-dev/understudy/live"
)

// The live commands against a lab, as a user runs them: status (text and
// JSON), check's exit status, apply's "nothing to do", verify's proof.
func TestLiveCommandsOnLab(t *testing.T) {
	l := labtest.Up(t, labtest.Options{})
	out, code := runCLI(t, "status", "--lab", l.Dir, "--json")
	if code != 0 {
		t.Fatalf("status --json exit %d: %s", code, out)
	}
	var st live.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, out)
	}
	if st.Primary != "db" || len(st.Nodes) != 2 || st.Nodes[1].Role != "standby" || st.Nodes[1].LagBytes == nil || len(st.Nodes[0].Slots) != 1 {
		t.Errorf("status --json: %s", out)
	}
	out, code = runCLI(t, "status", "--lab", l.Dir)
	if code != 0 || !strings.Contains(out, "db-replica  standby") || !strings.Contains(out, "understudy_db_replica  yes") {
		t.Errorf("status exit %d:\n%s", code, out)
	}
	out, code = runCLI(t, "check", "--lab", l.Dir)
	if code != 0 || !strings.Contains(out, "all checks passed") {
		t.Errorf("check on a healthy lab: exit %d\n%s", code, out)
	}
	out, code = runCLI(t, "apply", "--lab", l.Dir)
	if code != 0 || !strings.Contains(out, "nothing to do") {
		t.Errorf("apply on a healthy lab: exit %d\n%s", code, out)
	}
	out, code = runCLI(t, "verify", "--lab", l.Dir)
	if code != 0 || !strings.Contains(out, "was readable on db-replica after") || !strings.Contains(out, "refuses writes") {
		t.Errorf("verify: exit %d\n%s", code, out)
	}

	labtest.Exec(t, l, "db", "SELECT pg_create_physical_replication_slot('old_guide_slot', true)")
	out, code = runCLI(t, "check", "--lab", l.Dir)
	if code != 1 || !strings.Contains(out, "slot-abandoned") || !strings.Contains(out, "pg_drop_replication_slot('old_guide_slot')") {
		t.Errorf("check with a warning: exit %d (want 1)\n%s", code, out)
	}
	if err := l.Stop(context.Background(), "db-replica"); err != nil {
		t.Fatal(err)
	}
	out, code = runCLI(t, "check", "--lab", l.Dir, "--json")
	var fs []live.Finding
	if err := json.Unmarshal([]byte(out), &fs); err != nil {
		t.Fatalf("check --json: %v\n%s", err, out)
	}
	if code != 2 || !strings.Contains(out, `"severity": "critical"`) || !strings.Contains(out, `"code": "unreachable"`) {
		t.Errorf("check with the standby down: exit %d (want 2)\n%s", code, out)
	}
}

func TestLiveCommandsWithoutTarget(t *testing.T) {
	t.Setenv("UNDERSTUDY_LAB", t.TempDir())
	out, code := runCLI(t, "status")
	if code != 1 || !strings.Contains(out, "--lab DIR") {
		t.Errorf("status with no target: exit %d: %s", code, out)
	}
	out, code = runCLI(t, "check", "--lab", t.TempDir())
	if code != 2 || !strings.Contains(out, "is not a lab") {
		t.Errorf("check on a non-lab: exit %d: %s", code, out)
	}
}

// switchover, promote and rejoin from the command line.
func TestRoleCommandsOnLab(t *testing.T) {
	l := labtest.Up(t, labtest.Options{})
	out, code := runCLI(t, "switchover", "--lab", l.Dir)
	if code != 1 || !strings.Contains(out, "name the node") {
		t.Errorf("switchover without a node: exit %d: %s", code, out)
	}
	out, code = runCLI(t, "switchover", "db-replica", "--lab", l.Dir)
	if code != 0 || !strings.Contains(out, "without pg_rewind") || !strings.Contains(out, "through understudy's router (one host, the router's) follows by itself") {
		t.Fatalf("switchover: exit %d:\n%s", code, out)
	}
	out, code = runCLI(t, "promote", "--lab", l.Dir, "db")
	if code != 1 || !strings.Contains(out, "two primaries") {
		t.Errorf("promote with a live primary: exit %d:\n%s", code, out)
	}
	// --dry-run shows the promote's steps and changes nothing.
	out, code = runCLI(t, "promote", "--lab", l.Dir, "--fence", "--dry-run", "db")
	if code != 0 || !strings.Contains(out, "db-replica: stop it if it runs, and mark it a standby of db") || !strings.Contains(out, "db: promote it") {
		t.Errorf("promote --dry-run: exit %d:\n%s", code, out)
	}
	if got := labtest.Query(t, l, "db-replica", "SELECT pg_is_in_recovery()::text"); got != "false" {
		t.Fatalf("promote --dry-run changed db-replica: in recovery %s", got)
	}
	out, code = runCLI(t, "promote", "--lab", l.Dir, "--fence", "db")
	if code != 0 || !strings.Contains(out, "fenced db-replica") || !strings.Contains(out, "understudy rejoin db-replica") {
		t.Fatalf("promote --fence: exit %d:\n%s", code, out)
	}
	out, code = runCLI(t, "rejoin", "--lab", l.Dir, "--dry-run", "db-replica")
	if code != 0 || !strings.Contains(out, "db-replica: read its control file, then re-point it at db") || !strings.Contains(out, "db-replica: start it") {
		t.Errorf("rejoin --dry-run: exit %d:\n%s", code, out)
	}
	if run, err := l.Running(context.Background(), "db-replica"); err != nil || run {
		t.Fatalf("rejoin --dry-run started db-replica (%v)", err)
	}
	out, code = runCLI(t, "rejoin", "--lab", l.Dir, "db-replica")
	if code != 0 || !strings.Contains(out, "db-replica: re-point") {
		t.Fatalf("rejoin: exit %d:\n%s", code, out)
	}
	out, code = runCLI(t, "check", "--lab", l.Dir)
	if code != 0 {
		t.Errorf("check after the role changes: exit %d:\n%s", code, out)
	}
}

// Issue 18: a node whose running major is not its programs' (here the lab
// reopened with another major's programs under it, as a changed image is
// on Kamal) is reported by check, and apply refuses before starting,
// restarting or cloning anything.
func TestCheckReportsARunningMajorThatIsNotItsImages(t *testing.T) {
	l := labtest.Up(t, labtest.Options{})
	other := 17
	if l.BinMajor == 17 {
		other = 18
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: another major's programs come from its test image (debootstrap)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	bin, err := dockertest.PGBinDir(ctx, other, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("UNDERSTUDY_PG_BINDIR", bin)
	out, code := runCLI(t, "check", "--lab", l.Dir)
	t.Logf("check:\n%s", out)
	if code != 2 || !strings.Contains(out, "running-major") || !strings.Contains(out, fmt.Sprintf("db runs PostgreSQL %d, but it is started from the programs in %s, which is PostgreSQL %d", l.BinMajor, bin, other)) {
		t.Errorf("check with PostgreSQL %d's programs under a %d lab: exit %d\n%s", other, l.BinMajor, code, out)
	}
	pids := func() string {
		b1, _ := os.ReadFile(filepath.Join(l.DataDir("db"), "postmaster.pid"))
		b2, _ := os.ReadFile(filepath.Join(l.DataDir("db-replica"), "postmaster.pid"))
		return string(b1) + string(b2)
	}
	before := pids()
	out, code = runCLI(t, "apply", "--lab", l.Dir, "--yes")
	t.Logf("apply:\n%s", out)
	if code == 0 || !strings.Contains(out, "nothing was cloned or started") || !strings.Contains(out, fmt.Sprintf("PostgreSQL %d", other)) {
		t.Errorf("apply: exit %d\n%s", code, out)
	}
	if pids() != before {
		t.Error("apply restarted a server")
	}
}
