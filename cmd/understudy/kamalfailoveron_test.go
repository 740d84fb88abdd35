package main

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/internal/apptest"
	"github.com/understudy-dev/understudy/internal/dockertest"
)

// Automatic failover turned on over a running Kamal setup, as users will
// do it: a primary and its standby with their node agents and the router
// (init and apply without failover), a pgx app writer keeping its ledger
// through the router; then `init --failover --witness-host <app server>`
// on the running app (a second init changes nothing), and apply while the
// writer writes. apply boots the witness and restarts the agents with
// --failover; db's agent takes the lease while db keeps running, and the
// writes resume on db through the router after a pause (measured, logged).
// Nothing acknowledged is lost, never two nodes acknowledge at once, the
// standby still streams, check finds nothing critical; and failover is
// really on: db's link cut, db-replica takes the writes with nobody
// running promote.
func TestKamalFailoverTurnedOn(t *testing.T) {
	w := newKamalWorld(t, worldOptions{app: true})
	ctx := context.Background()
	if out, code := runCLI(t, "apply", "--app", w.app); code != 0 {
		t.Fatalf("apply without failover: exit %d\n%s", code, out)
	}
	w.routerOn(t, "db")
	h, s := w.startWriters(t, apptest.PGX)

	// init --failover on the running app, as a user runs it: without the
	// standby's flags (init finds the standby where the first init put
	// it); it adds failover and changes nothing else; a second run changes
	// nothing at all.
	before := appFiles(t, w.app)
	later := append([]string{"init", "--app", w.app, "--router-image", dockertest.RouterImageTag}, w.failoverFlags(t)...)
	out, code := runCLI(t, later...)
	if code != 0 {
		t.Fatalf("init --failover on the running app: exit %d\n%s", code, out)
	}
	t.Logf("init --failover:\n%s", out)
	after := appFiles(t, w.app)
	for path, was := range before {
		now, ok := after[path]
		switch {
		case !ok:
			t.Errorf("init --failover removed %s", path)
		case was == now:
		case path == ".kamal/secrets" || path == "config/deploy.yml":
			// Every line kept but two of each node agent's: its cmd gains
			// the failover flags, and it runs as root (docs/failover.md).
			for _, l := range strings.Split(was, "\n") {
				if !strings.Contains(now, l) && !strings.Contains(l, "understudy agent") && strings.TrimSpace(l) != "user: postgres" {
					t.Errorf("init --failover dropped a line of %s: %q", path, l)
				}
			}
			t.Logf("%s after init --failover:\n%s", path, now)
		case strings.HasPrefix(path, "config/understudy/"):
		default:
			t.Errorf("init --failover changed %s, which is not understudy's", path)
		}
	}
	if !strings.Contains(after[".kamal/secrets"], "FAILOVER_SECRET=") || !strings.Contains(after["config/deploy.yml"], "db-witness:") ||
		!strings.Contains(after["config/understudy/cluster.json"], `"failover"`) {
		t.Errorf("init --failover did not add the secret's reference, the witness and failover's model")
	}
	for path := range after {
		if _, ok := before[path]; !ok && !strings.HasPrefix(path, "config/understudy/") {
			t.Errorf("init --failover wrote %s, outside config/understudy", path)
		}
	}
	if out, code := runCLI(t, append(w.initArgs(), w.failoverFlags(t)...)...); code != 0 {
		t.Fatalf("init --failover again, with the first init's flags: exit %d\n%s", code, out)
	}
	if again := appFiles(t, w.app); !mapsEqual(again, after) {
		t.Errorf("a second init --failover changed files: %v", changedFiles(after, again))
	}

	dry, code := runCLI(t, "apply", "--dry-run", "--app", w.app)
	t.Logf("apply --dry-run:\n%s", dry)
	if code != 0 {
		t.Fatalf("apply --dry-run: exit %d", code)
	}
	if !strings.Contains(dry, "writes through the router pause from this restart until the new agent holds the lease") {
		t.Errorf("the plan does not say that writes pause, and why")
	}

	// apply while the writer writes: db stays the primary throughout.
	on := w.roleChange(t, h, func() { w.dumpAgents(t) }, "apply: failover turned on", "db", "apply", "--yes")
	for _, want := range []string{"booted db-witness", "rebooted db-agent", "rebooted db-replica-agent"} {
		if !strings.Contains(on, want) {
			t.Errorf("apply lacks %q", want)
		}
	}
	if strings.Index(on, "booted db-witness") > strings.Index(on, "rebooted db-agent") {
		t.Errorf("apply restarted db's agent before booting the witness")
	}
	// Both servers hold the new boot script (a node's next start is
	// read-only), though neither node restarted.
	for _, n := range nodes {
		b, err := os.ReadFile(filepath.Join(w.docker[n].Home, "shop-"+n, "understudy", "boot.sh"))
		if err != nil || !strings.Contains(string(b), "\nREAD_ONLY=yes\n") {
			t.Errorf("%s's server does not hold the read-only boot script after apply: %v", n, err)
		}
	}
	if strings.Contains(on, "restarted db") {
		t.Errorf("apply restarted a node's PostgreSQL")
	}
	st := w.leaseWith(t, "status", "db", 2*time.Minute)
	t.Logf("status after apply:\n%s", st)
	w.leaseWith(t, "failover status", "db", 30*time.Second)
	w.routerOn(t, "db")
	if again, code := runCLI(t, "apply", "--app", w.app); code != 0 || !strings.Contains(again, "nothing to do") {
		t.Errorf("apply again: exit %d\n%s", code, again)
	}
	if got := w.query(t, "db", "SELECT coalesce(string_agg(state, ','), 'none') FROM pg_stat_replication WHERE application_name = 'db-replica'"); got != "streaming" {
		t.Errorf("db-replica does not stream from db after apply: %s", got)
	}
	if ro := w.query(t, "db-replica", "SELECT pg_is_in_recovery()::text"); ro != "true" {
		t.Errorf("db-replica is not a standby after apply (pg_is_in_recovery %s)", ro)
	}
	if out, code := runCLI(t, "check", "--app", w.app); code == 2 {
		t.Errorf("check after failover was turned on: exit %d\n%s", code, out)
	}

	// Failover is really on: db cut off, db-replica takes the writes.
	holed, _ := w.cutOverToReplica(t, h)
	if out, code := runCLI(t, "failover", "status", "--app", w.app); code != 0 || !strings.Contains(out, "lease: held by db-replica") {
		t.Errorf("failover status with db's server cut off: exit %d\n%s", code, out)
	}
	w.awaitReadOnly(t, "db", 30*time.Second)

	rep := w.finalReport(t, ctx, h, s, "db-replica")
	lost, _ := lostInTheWindow(t, rep.Lost, "db", holed.Add(-2*time.Second), holed.Add(time.Second))
	rep.Lost = lost
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	for _, wr := range rep.Writers {
		for _, p := range wr.Pauses {
			switch {
			case strings.Contains(p.Event, "turned on"):
				t.Logf("%s: longest pause between two acknowledged writes while apply turned failover on: %s (%d failed attempts; first: %s)", wr.Name, p.Gap.Round(time.Millisecond), p.Failed, p.Error)
				if p.Gap > 2*time.Minute || !p.Resumed {
					t.Errorf("%s: writes paused %s while failover was turned on (resumed: %v)", wr.Name, p.Gap, p.Resumed)
				}
			case strings.Contains(p.Event, "cut off") && !p.NewPrimaryAck.IsZero():
				t.Logf("%s: first write on db-replica %s after db's server was cut off", wr.Name, p.NewPrimaryAck.Sub(holed).Round(time.Millisecond))
			}
		}
	}
}

// appFiles reads every file of the app directory (path relative to it →
// contents), to tell what a command changed.
func appFiles(t testing.TB, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		files[filepath.ToSlash(rel)] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func mapsEqual(a, b map[string]string) bool { return len(changedFiles(a, b)) == 0 }

func changedFiles(a, b map[string]string) []string {
	var out []string
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			out = append(out, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}
