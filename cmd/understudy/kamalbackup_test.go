package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/internal/labtest"
	"github.com/understudy-dev/understudy/internal/netutil"
	"github.com/understudy-dev/understudy/internal/releasetest"
	"github.com/understudy-dev/understudy/internal/version"
	"github.com/understudy-dev/understudy/pgops"
	"github.com/understudy-dev/understudy/setup"
)

// runRelease runs an installed release's understudy, as a user runs it.
func runRelease(t testing.TB, exe string, args ...string) (string, int) {
	t.Helper()
	c := exec.Command(exe, args...)
	// An installed release finds its Linux builds beside itself; the
	// development variable the Kamal world sets for in-process runs (the
	// node agents need a build too) is not part of that.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "UNDERSTUDY_AGENT_BINARY=") {
			c.Env = append(c.Env, kv)
		}
	}
	out, err := c.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("running %s: %v", exe, err)
	return "", -1
}

// Backups on the production path: `init --backup` on an app that already
// replicates, apply (of an installed release, with no --agent-binary) puts
// the release's Linux build for the server's machine on the standby's
// server and boots the backup accessory (the nodes' image, unmodified, on
// the host network), the agent streams from the standby into an S3-compatible server (versitygw
// on the operator's side of the switch), and a restore drill on this
// machine proves the data. Real Docker, real SSH, the Kamal stand-in.
func TestKamalBackupAccessory(t *testing.T) {
	w := newKamalWorld(t, worldOptions{})
	if out, code := runCLI(t, "apply", "--app", w.app); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	w.exec(t, "db", "CREATE TABLE orders (id int PRIMARY KEY)", "INSERT INTO orders SELECT generate_series(1, 1000)")
	ports, err := netutil.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	s3 := labtest.StartS3(t, fmt.Sprintf("%s:%d", w.netns.HostAddr(), ports[0]), "shop-backups")
	key, err := backup.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	// The values live in the environment kamal runs from; .kamal/secrets
	// gets references only.
	t.Setenv("BACKUP_S3_ACCESS_KEY_ID", s3.AccessKey)
	t.Setenv("BACKUP_S3_SECRET_ACCESS_KEY", s3.SecretKey)
	t.Setenv("BACKUP_ENCRYPTION_KEY", key.String())
	r := w.addr["db-replica"]
	out, code := runCLI(t, "init", "--app", w.app, "--replica-host", r, "--replica-ip", r,
		"--backup", "--backup-endpoint", s3.Endpoint, "--backup-bucket", s3.Bucket, "--backup-path-style", "--backup-keep", "2",
		"--backup-drill-every", "1m", "--backup-drill-check", "SELECT count(*) FROM orders")
	if code != 0 {
		t.Fatalf("init --backup: exit %d\n%s", code, out)
	}
	secrets, _ := os.ReadFile(filepath.Join(w.app, ".kamal", "secrets"))
	for _, ref := range []string{"BACKUP_S3_ACCESS_KEY_ID=$BACKUP_S3_ACCESS_KEY_ID", "BACKUP_S3_SECRET_ACCESS_KEY=$BACKUP_S3_SECRET_ACCESS_KEY", "BACKUP_ENCRYPTION_KEY=$BACKUP_ENCRYPTION_KEY"} {
		if !strings.Contains(string(secrets), ref+"\n") {
			t.Errorf(".kamal/secrets lacks the reference %s:\n%s", ref, secrets)
		}
	}
	values := []string{s3.SecretKey, key.String(), "repl-password-for-kamal-test"}
	noSecretIn := func(what, text string) {
		t.Helper()
		for _, v := range values {
			if strings.Contains(text, v) {
				t.Errorf("a secret value is in %s", what)
			}
		}
	}
	filepath.Walk(w.app, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			b, _ := os.ReadFile(p)
			noSecretIn(p, string(b))
		}
		return nil
	})

	// From here on, understudy is a release installed as docs/install.md
	// says (its archive unpacked), not this test binary.
	rel := releasetest.Get(t)
	us := func(args ...string) (string, int) { return runRelease(t, rel.Exe, args...) }
	out, code = us("apply", "--app", w.app, "--dry-run")
	if code != 0 || !strings.Contains(out, "db-backup: put the understudy binary ("+rel.Exe+")") || !strings.Contains(out, "db-backup: boot it") {
		t.Fatalf("apply --dry-run: exit %d\n%s", code, out)
	}
	if s := w.containerState(t, "db-replica", "shop-db-backup"); s != "absent" {
		t.Fatalf("--dry-run left the backup container %s", s)
	}
	out, code = us("apply", "--app", w.app)
	if code != 0 || !strings.Contains(out, "booted db-backup") {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	// A second apply finds the binary and the container in place.
	if out, code = us("apply", "--app", w.app); code != 0 || !strings.Contains(out, "nothing to do") {
		t.Errorf("second apply: exit %d\n%s", code, out)
	}
	if s := w.containerState(t, "db-replica", "shop-db-backup"); s != "running" {
		t.Fatalf("the backup accessory is %s\n%s", s, w.docker["db-replica"].Docker(t, "logs", "shop-db-backup"))
	}
	// What runs in the accessory is the release's build.
	want := "understudy " + releasetest.Version + ", commit " + rel.Result.Commit + ", "
	if got := w.docker["db-replica"].Docker(t, "exec", "shop-db-backup", setup.BackupBinary, "version"); !strings.HasPrefix(got, want) {
		t.Errorf("the accessory's understudy says %q, want %q…", got, want)
	}
	logs := func() string {
		o, _ := exec.Command("docker", "-H", w.docker["db-replica"].DockerHost(), "logs", "shop-db-backup").CombinedOutput()
		return string(o)
	}

	// The first base backup, taken by the agent from the standby.
	var list struct {
		Bases []backup.BaseInfo `json:"base_backups"`
	}
	deadline := time.Now().Add(3 * time.Minute)
	for len(list.Bases) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no base backup after 3 minutes; the agent's log:\n%s", logs())
		}
		time.Sleep(time.Second)
		if out, code := runCLI(t, "backups", "--app", w.app, "--json"); code == 0 {
			json.Unmarshal([]byte(out), &list)
		}
	}
	if b := list.Bases[0]; b.Source != "db-replica" || !b.FromStandby {
		t.Errorf("the base backup came from %s (standby %v), not the standby db-replica", b.Source, b.FromStandby)
	}
	if got := w.query(t, "db", "SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = 'understudy_backup'"); got != "0" {
		t.Errorf("the primary holds the backup slot")
	}
	if got := w.query(t, "db-replica", "SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = 'understudy_backup'"); got != "1" {
		t.Errorf("the standby has no backup slot")
	}

	// Data written after the base backup reaches a restore through the WAL.
	w.exec(t, "db", "INSERT INTO orders SELECT generate_series(1001, 1500)")
	out, code = runCLI(t, "restore", "drill", "--app", w.app, "--check", "SELECT count(*) FROM orders", "--json")
	if code != 0 {
		t.Fatalf("restore drill: exit %d\n%s\nagent:\n%s", code, out, logs())
	}
	var rec backup.DrillRecord
	if i := strings.Index(out, "{"); i < 0 || json.NewDecoder(strings.NewReader(out[i:])).Decode(&rec) != nil {
		t.Fatalf("drill output holds no record:\n%s", out)
	}
	if !rec.OK || rec.CheckResult != "1500" {
		t.Errorf("drill: ok %v, check %q (want 1500)\n%s", rec.OK, rec.CheckResult, out)
	}
	// The accessory runs drills on its own schedule (here every minute),
	// restoring with the image's own PostgreSQL, as the postgres user.
	deadline = time.Now().Add(3 * time.Minute)
	for !strings.Contains(logs(), `passed`) || !strings.Contains(logs(), `check "SELECT count(*) FROM orders" → `) {
		if time.Now().After(deadline) {
			t.Fatalf("the accessory ran no passing drill in 3 minutes:\n%s", logs())
		}
		time.Sleep(2 * time.Second)
	}
	out, code = us("check", "--app", w.app)
	if code != 0 {
		t.Errorf("check after a passing drill: exit %d\n%s", code, out)
	}
	out, code = us("status", "--app", w.app)
	if !strings.Contains(out, "backups") || !strings.Contains(out, s3.Bucket) {
		t.Errorf("status has no backup section:\n%s", out)
	}
	// status --json carries this machine's build and the agent's.
	var st struct {
		Understudy version.Build `json:"understudy"`
		Backup     struct {
			Agent struct {
				Understudy version.Build `json:"understudy"`
			} `json:"agent"`
		} `json:"backup"`
	}
	out, _ = us("status", "--app", w.app, "--json")
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Understudy.Version != releasetest.Version || st.Understudy.Commit != rel.Result.Commit ||
		st.Backup.Agent.Understudy != st.Understudy {
		t.Errorf("status --json: %v, understudy %+v, the agent's %+v\n%s", err, st.Understudy, st.Backup.Agent.Understudy, out)
	}
	// An understudy of another build here (this test binary, a dev build)
	// is told that the agent runs another.
	out, code = runCLI(t, "check", "--app", w.app)
	if code != 1 || !strings.Contains(out, "the backup agent runs understudy "+releasetest.Version) {
		t.Errorf("check from another build: exit %d\n%s", code, out)
	}

	// A restore on this machine needs the locale the image gave the
	// cluster (en_US.utf8, as the official image sets it): where it is
	// missing, the restore says so and leaves the directory empty.
	scratch, err := os.MkdirTemp("", "understudy-kamal-restore-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(scratch)
	os.Chmod(scratch, 0o755) // PostgreSQL runs as postgres
	into := filepath.Join(scratch, "restored")
	out, code = runCLI(t, "restore", "--app", w.app, "--to", "latest", "--into", into)
	if locales, _ := exec.Command("locale", "-a").Output(); strings.Contains(string(locales), "en_US.utf8") {
		if code != 0 {
			t.Errorf("restore here (en_US.utf8 installed): exit %d\n%s", code, out)
		}
		stop := exec.Command(filepath.Join(w.pgBin, "pg_ctl"), "-D", into, "stop", "-m", "fast")
		if cred, _ := backup.PostgresCred(); cred != nil {
			stop.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		stop.Run()
	} else {
		entries, _ := os.ReadDir(into)
		if code == 0 || !strings.Contains(out, "en_US.utf8") || !strings.Contains(out, "restore drill") || len(entries) != 0 {
			t.Errorf("restore here without the image's locale: exit %d, %d entries left\n%s", code, len(entries), out)
		}
	}

	// A base backup on demand runs in the accessory, with its progress here.
	out, code = runCLI(t, "backup", "--app", w.app)
	if code != 0 || !strings.Contains(out, "✓ base backup") || !strings.Contains(out, "from db-replica") {
		t.Errorf("backup: exit %d\n%s", code, out)
	}

	// After a switchover the agent follows the new standby (db, on the
	// other server: its logins now come across the private network), and
	// the primary keeps no slot for it.
	if out, code := runCLI(t, "switchover", "db-replica", "--app", w.app); code != 0 {
		t.Fatalf("switchover: exit %d\n%s", code, out)
	}
	deadline = time.Now().Add(2 * time.Minute)
	for !strings.Contains(logs(), "streaming WAL from db (standby, timeline 2)") {
		if time.Now().After(deadline) {
			// What every goroutine of the agent is doing: Go's runtime
			// prints them all to stderr on SIGQUIT (runtime docs, "GOTRACEBACK").
			exec.Command("docker", "-H", w.docker["db-replica"].DockerHost(), "kill", "--signal", "QUIT", "shop-db-backup").Run()
			time.Sleep(2 * time.Second)
			t.Fatalf("the agent did not move to the new standby db:\n%s", logs())
		}
		time.Sleep(time.Second)
	}
	w.exec(t, "db-replica", "INSERT INTO orders SELECT generate_series(1501, 1700)")
	out, code = runCLI(t, "restore", "drill", "--app", w.app, "--check", "SELECT count(*) FROM orders", "--json")
	if code != 0 || !strings.Contains(out, `"check_result": "1700"`) {
		t.Errorf("drill after the switchover: exit %d\n%s", code, out)
	}
	if got := w.query(t, "db-replica", "SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = 'understudy_backup'"); got != "0" {
		t.Errorf("the new primary db-replica still holds the backup slot")
	}

	// Disaster: a bad migration drops the table, then both servers lose
	// the cluster. The backups bring the second before the drop back into
	// db (on the server without the backup accessory: understudy copies
	// itself there), which starts as the primary; db-replica rejoins it.
	store, err := backup.OpenS3(backup.S3Config{Endpoint: s3.Endpoint, Bucket: s3.Bucket, Prefix: "shop", PathStyle: true}, s3.AccessKey, s3.SecretKey)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // a second after the last commit, as a user names it
	T := time.Now()
	time.Sleep(100 * time.Millisecond)
	w.exec(t, "db-replica", "DROP TABLE orders")
	dropped, _ := pgops.ParseLSN(w.query(t, "db-replica", "SELECT pg_current_wal_lsn()::text"))
	deadline = time.Now().Add(time.Minute)
	for {
		st, err := backup.ReadAgentStatus(context.Background(), store)
		if err == nil && st.ArchivedLSN >= dropped {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the archive did not reach the drop (%s): %+v %v", dropped, st, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	out, code = us("restore", "--app", w.app, "--to", T.UTC().Format(time.RFC3339Nano), "--into", "db")
	if code == 0 || !strings.Contains(out, "db is running") {
		t.Errorf("restore into the running db: exit %d\n%s", code, out)
	}
	w.docker["db"].Docker(t, "container", "rm", "-f", "shop-db")
	out, code = us("restore", "--app", w.app, "--to", T.UTC().Format(time.RFC3339Nano), "--into", "db")
	if code == 0 || !strings.Contains(out, "second primary") {
		t.Errorf("restore into db while db-replica is the primary: exit %d\n%s", code, out)
	}
	w.docker["db-replica"].Docker(t, "container", "stop", "shop-db-replica")
	out, code = us("restore", "--app", w.app, "--to", T.UTC().Format(time.RFC3339Nano), "--into", "db")
	if code == 0 || !strings.Contains(out, "not empty") {
		t.Errorf("restore into db over its old data: exit %d\n%s", code, out)
	}
	if err := os.RemoveAll(filepath.Join(w.docker["db"].Home, "shop-db", "data")); err != nil {
		t.Fatal(err)
	}
	out, code = us("restore", "--app", w.app, "--to", T.UTC().Format(time.RFC3339Nano), "--into", "db")
	if code != 0 || !strings.Contains(out, "db runs the restored data as the primary") {
		t.Fatalf("restore --into db: exit %d\n%s", code, out)
	}
	if got := w.query(t, "db", "SELECT count(*)::text FROM orders"); got != "1700" {
		t.Errorf("the restored db has %s orders, want the 1700 there were before the drop", got)
	}
	if out, code = runCLI(t, "rejoin", "db-replica", "--app", w.app); code != 0 {
		t.Fatalf("rejoin db-replica after the restore: exit %d\n%s", code, out)
	}
	if got := w.query(t, "db-replica", "SELECT count(*)::text FROM orders"); got != "1700" {
		t.Errorf("the rejoined db-replica has %s orders, want 1700", got)
	}

	// No secret in the container's command line, its log, or its config file.
	noSecretIn("the backup container's command", w.docker["db-replica"].Docker(t, "container", "inspect", "--format", "{{json .Args}} {{json .Config.Cmd}}", "shop-db-backup"))
	noSecretIn("the agent's log", logs())
	noSecretIn("pg_stat_activity on db-replica", w.query(t, "db-replica", "SELECT coalesce(string_agg(query, ' '), '') FROM pg_stat_activity"))
}

// containerState is a named container's state on a node's server.
func (w *kamalWorld) containerState(t testing.TB, node, name string) string {
	t.Helper()
	out, err := exec.Command("docker", "-H", w.docker[node].DockerHost(), "container", "inspect", "--format", "{{.State.Status}}", name).CombinedOutput()
	if err != nil {
		return "absent"
	}
	return strings.TrimSpace(string(out))
}
