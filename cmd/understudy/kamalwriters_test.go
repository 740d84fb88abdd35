package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/internal/apptest"
)

// What the real-Docker tests with app writers share: packets dropped on a
// server, the writers through the router, role changes as the writers'
// events, the router's view, the loss a cut-off primary may cause.

// dropPackets inserts a DROP rule per match (a chain and its conditions)
// into a server's namespace; heal removes them, as the test's clean-up
// does.
func (w *kamalWorld) dropPackets(t testing.TB, server, comment string, matches [][]string) (heal func()) {
	t.Helper()
	ns := ""
	for i, n := range []string{"db", "db-replica", "app"} {
		if n == server {
			ns = w.netns.Path(i)
		}
	}
	var rules [][]string
	heal = func() {
		for _, r := range rules {
			exec.Command("nsenter", append([]string{"--net=" + ns, "iptables", "-w", "-D"}, r...)...).Run()
		}
		rules = nil
	}
	t.Cleanup(heal)
	for _, m := range matches {
		r := append(append([]string(nil), m...), "-m", "comment", "--comment", comment, "-j", "DROP")
		if out, err := exec.Command("nsenter", append([]string{"--net=" + ns, "iptables", "-w", "-I"}, r...)...).CombinedOutput(); err != nil {
			t.Fatalf("iptables in %s's namespace: %v\n%s", server, err, out)
		}
		rules = append(rules, r)
	}
	return heal
}

// startWriters starts app writers of the given clients in containers of
// the app image on the app server's Kamal network, connecting to the
// router by its container name, and waits until each has 5 writes
// acknowledged.
func (w *kamalWorld) startWriters(t testing.TB, clients ...apptest.Client) (*apptest.Harness, apptest.Settings) {
	t.Helper()
	ctx := context.Background()
	tar, err := apptest.ImageTar(ctx, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	app := w.docker["app"]
	app.Load(t, tar)
	s := apptest.AppSettings(apptest.Endpoint{Host: "shop-db-router", Port: 5432})
	admin := w.conn(t, "db")
	err = apptest.Prepare(ctx, admin, s)
	admin.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h := apptest.New(t, &apptest.ContainerRunner{DockerHost: app.DockerHost(), Network: "kamal", Dir: t.TempDir()})
	var ws []apptest.Writer
	for _, c := range clients {
		ws = append(ws, apptest.Writer{Client: c, Settings: s})
	}
	begun := time.Now()
	if err := h.Start(ctx, ws...); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitAcknowledged(ctx, 5, begun, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	return h, s
}

// roleChange runs a command as an event of the writers (newPrimary: the
// primary once it is over, "" for none), fails the test (after onFail)
// when it fails, and waits until every writer has 3 more writes
// acknowledged, without a restart.
func (w *kamalWorld) roleChange(t testing.TB, h *apptest.Harness, onFail func(), name, newPrimary string, args ...string) string {
	t.Helper()
	end := h.Begin(name, newPrimary)
	out, code := runCLI(t, append(args, "--app", w.app)...)
	end()
	if code != 0 {
		if onFail != nil {
			onFail()
		}
		t.Fatalf("%s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	t.Logf("%s:\n%s", strings.Join(args, " "), out)
	if err := h.WaitAcknowledged(context.Background(), 3, time.Now(), time.Minute); err != nil {
		t.Fatalf("after %s: %v", name, err) // every writer resumes by itself
	}
	return out
}

// routerOn waits until status shows the router on the app server writing
// to node.
func (w *kamalWorld) routerOn(t testing.TB, node string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, _ := runCLI(t, "status", "--app", w.app)
		if strings.Contains(out, w.addr["app"]+": writes to "+node+";") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status does not show the router writing to %s:\n%s", node, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// lostInTheWindow takes from lost the writes node acknowledged within
// (from, to) (asynchronous replication: a primary cut off may have
// acknowledged commits its standby never received) and returns the rest.
func lostInTheWindow(t testing.TB, lost []apptest.Attempt, node string, from, to time.Time) (rest, taken []apptest.Attempt) {
	t.Helper()
	for _, a := range lost {
		if a.Node == node && a.EndTime().After(from) && a.EndTime().Before(to) {
			t.Logf("lost as %s went (asynchronous replication): %s #%d acknowledged by %s at %s", node, a.Client, a.Seq, node, a.EndTime().Format("15:04:05.000"))
			taken = append(taken, a)
			continue
		}
		rest = append(rest, a)
	}
	return rest, taken
}

// finalReport stops the writers and checks their ledger against the rows
// on node, the primary at the end (the writers began on db).
func (w *kamalWorld) finalReport(t testing.TB, ctx context.Context, h *apptest.Harness, s apptest.Settings, node string) apptest.Report {
	t.Helper()
	final := w.conn(t, node)
	defer final.Close(ctx)
	h.Stop(ctx)
	rows, err := apptest.ReadRows(ctx, final, s)
	if err != nil {
		t.Fatal(err)
	}
	rep := h.Verify(ctx, "db", rows)
	t.Log(rep)
	return rep
}
