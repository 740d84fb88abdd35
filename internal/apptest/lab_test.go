package apptest_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/internal/apptest"
	"github.com/understudy-dev/understudy/lab"
)

// TestLabWritersFollowSwitchovers runs the real app writers as processes
// against `understudy lab up`, each with the settings its stack takes for
// a host list (no router), across `understudy switchover db-replica` and
// back: every writer resumes by itself after each, no acknowledged row is
// missing from the final primary, and no write was acknowledged by a node
// that was not the primary then. node-postgres is not among them: it takes
// one host only, so it needs the router (issue 17).
func TestLabWritersFollowSwitchovers(t *testing.T) {
	if _, err := lab.BinDir(); err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	root, err := os.MkdirTemp("", "understudy-apptest-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(root, 0o755) // the servers run as postgres when root
	t.Cleanup(func() { os.RemoveAll(root) })

	host, err := apptest.PrepareHost(ctx, filepath.Join(root, "host"), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	var clients []apptest.Client
	for _, c := range []apptest.Client{apptest.ActiveRecord, apptest.Psycopg2, apptest.PGX} {
		if why := host.Missing(c); why != "" {
			t.Skip(why)
		}
		clients = append(clients, c)
	}
	for _, c := range []apptest.Client{apptest.Psycopg3, apptest.PostgresJS, apptest.PDO} {
		if why := host.Missing(c); why != "" {
			t.Logf("not run (optional): %s", why)
			continue
		}
		clients = append(clients, c)
	}

	bin := filepath.Join(root, "understudy")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/understudy-dev/understudy/cmd/understudy").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := filepath.Join(root, "lab")
	cli := func(args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("understudy %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	cli("lab", "up", "--dir", dir)
	t.Cleanup(func() {
		if out, err := exec.Command(bin, "lab", "down", "--dir", dir).CombinedOutput(); err != nil {
			t.Errorf("lab down: %v\n%s", err, out)
		}
	})
	l, err := lab.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var eps []apptest.Endpoint
	for _, n := range l.Cluster.Nodes {
		eps = append(eps, apptest.Endpoint{Host: n.Addr, Port: n.Port})
	}
	settings := apptest.AppSettings(eps...)
	admin, err := l.Conn(ctx, "db")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if err := apptest.Prepare(ctx, admin, settings); err != nil {
		t.Fatal(err)
	}

	h := apptest.New(t, &apptest.ProcessRunner{Host: host, Dir: filepath.Join(root, "writers")})
	var ws []apptest.Writer
	for _, c := range clients {
		ws = append(ws, apptest.Writer{Client: c, Settings: settings})
	}
	begun := time.Now()
	if err := h.Start(ctx, ws...); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitAcknowledged(ctx, 5, begun, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d writers up in %.1f s: %v", len(ws), time.Since(begun).Seconds(), clients)
	for _, to := range []string{"db-replica", "db"} {
		end := h.Begin("switchover to "+to, to)
		cli("switchover", "--lab", dir, to)
		end()
		if err := h.WaitAcknowledged(ctx, 5, time.Now(), 60*time.Second); err != nil {
			t.Fatalf("after the switchover to %s: %v", to, err)
		}
	}
	h.Stop(ctx)
	rows, err := apptest.ReadRows(ctx, admin, settings)
	if err != nil {
		t.Fatal(err)
	}
	rep := h.Verify(ctx, "db", rows)
	t.Logf("%s", rep)
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	// The nodes are named by cluster_name, which the boot script sets: each
	// writer saw both, by name.
	for _, w := range h.Stop(ctx) {
		atts, _ := apptest.ParseLog(w.Name, w.Log)
		seen := map[string]bool{}
		for _, a := range atts {
			if a.OK {
				seen[a.Node] = true
			}
		}
		if len(seen) != 2 || !seen["db"] || !seen["db-replica"] {
			t.Errorf("%s: writes acknowledged by %v, want db and db-replica", w.Name, seen)
		}
	}
}
