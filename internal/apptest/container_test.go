package apptest_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/understudy-dev/understudy/internal/apptest"
	"github.com/understudy-dev/understudy/internal/dockertest"
	"github.com/understudy-dev/understudy/lab"
)

// TestAppImageWriters runs every writer as a container of
// understudy-app:test (built from Debian's packages) on a private dockerd,
// on a "kamal" network with one postgres container named db, reached by
// that name as an app reaches the router: each writer writes, its log
// parses, every acknowledged row is there and names db. Then db is frozen
// (docker pause) with writes in flight: each writer is still running 2 s
// after SIGTERM, is killed, and is reported as hung.
func TestAppImageWriters(t *testing.T) {
	dockertest.Skip(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	major, err := dockertest.TestMajor()
	if err != nil {
		t.Fatal(err)
	}
	img, _ := dockertest.ImageFor(major)
	pgTar, err := dockertest.ImageTar(ctx, img, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	appTar, err := apptest.ImageTar(ctx, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("app image ready in %.1f s: %s", time.Since(start).Seconds(), appTar)

	b := make([]byte, 2)
	rand.Read(b)
	ns := &lab.NetNS{ID: hex.EncodeToString(b), Nodes: 1}
	if err := ns.Up(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Down(context.Background()) })
	s := dockertest.StartServer(t, "app", ns.Path(0), 0, pgTar)
	start = time.Now()
	s.Docker(t, "load", "-q", "-i", appTar)
	t.Logf("docker load of the app image: %.1f s", time.Since(start).Seconds())
	s.Docker(t, "network", "create", "kamal")

	// db: the postgres image as a Kamal accessory runs it, with the
	// cluster_name understudy's boot script gives a node.
	superPW := "super-" + hex.EncodeToString(b)
	t.Setenv("POSTGRES_PASSWORD", superPW)
	addr := ns.Addr(0)
	s.Docker(t, "run", "-d", "--name", "db", "--network", "kamal", "-e", "POSTGRES_PASSWORD", "-p", addr+":5432:5432",
		img.Tag, "postgres", "-c", "cluster_name=db")
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=5432 user=postgres dbname=postgres sslmode=disable connect_timeout=5", addr))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Password = superPW
	cfg.DialFunc = func(ctx context.Context, network, a string) (net.Conn, error) {
		return lab.DialIn(ctx, ns.Path(0), network, a) // the server's namespace: the host is not on its network
	}
	var admin *pgx.Conn
	for deadline := time.Now().Add(90 * time.Second); ; {
		if admin, err = pgx.ConnectConfig(ctx, cfg); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("db did not accept connections within 90 s: %v\n%s", err, s.Docker(t, "logs", "db"))
		}
		time.Sleep(300 * time.Millisecond)
	}
	defer admin.Close(ctx)
	settings := apptest.AppSettings(apptest.Endpoint{Host: "db", Port: 5432})
	if err := apptest.Prepare(ctx, admin, settings); err != nil {
		t.Fatal(err)
	}

	h := apptest.New(t, &apptest.ContainerRunner{DockerHost: s.DockerHost(), Network: "kamal", Dir: t.TempDir()})
	var ws []apptest.Writer
	for _, c := range apptest.All {
		ws = append(ws, apptest.Writer{Client: c, Settings: settings})
	}
	begun := time.Now()
	if err := h.Start(ctx, ws...); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitAcknowledged(ctx, 20, begun, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d writers in containers: 20 writes each acknowledged %.1f s after start", len(ws), time.Since(begun).Seconds())

	// Freeze db with writes in flight: no writer can end its write.
	end := h.Begin("db frozen", "")
	s.Docker(t, "pause", "db")
	time.Sleep(500 * time.Millisecond)
	end()
	stopStart := time.Now()
	results := h.Stop(ctx)
	stopTook := time.Since(stopStart)
	s.Docker(t, "unpause", "db")
	rows, err := apptest.ReadRows(ctx, admin, settings)
	if err != nil {
		t.Fatal(err)
	}
	rep := h.Verify(ctx, "db", rows)
	t.Logf("%s", rep)
	if rep.Acknowledged < 20*len(ws) || !rep.RowsChecked || len(rep.Lost) > 0 || len(rep.WrongNode) > 0 || len(rep.Mismatched) > 0 || len(rep.Duplicated) > 0 {
		t.Errorf("the writes before the freeze: %d acknowledged, lost %d, wrong node %d, mismatched %d, duplicated %d",
			rep.Acknowledged, len(rep.Lost), len(rep.WrongNode), len(rep.Mismatched), len(rep.Duplicated))
	}
	for _, w := range rep.Writers {
		if w.OK < 20 || len(w.LogProblems) > 0 || w.ExitedEarly {
			t.Errorf("%s: %d acknowledged, log problems %q, exited early %v (%s)", w.Name, w.OK, w.LogProblems, w.ExitedEarly, w.Stderr)
		}
		if !w.Hung {
			t.Errorf("%s was not reported hung, though db was frozen under its write: %s", w.Name, w.Exit)
		}
	}
	// Every problem is one of the two the freeze causes: a hang, no resumption.
	for _, p := range rep.Problems() {
		if !strings.Contains(p, " hung: ") && !strings.Contains(p, "did not resume after \"db frozen\"") {
			t.Errorf("unexpected problem: %s", p)
		}
	}
	if len(results) != len(ws) || stopTook > apptest.StopGrace+20*time.Second {
		t.Errorf("stopping %d writers at once took %s", len(results), stopTook)
	}
	for _, w := range results {
		atts, _ := apptest.ParseLog(w.Name, w.Log)
		for _, a := range atts {
			if a.OK && a.Node != "db" {
				t.Errorf("%s: acknowledged by %q, want db (cluster_name)", w.Name, a.Node)
				break
			}
		}
	}
}
