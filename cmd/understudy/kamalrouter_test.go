package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/internal/dockertest"
	"github.com/understudy-dev/understudy/internal/pgxwriter"
)

var appWriterOnce struct {
	sync.Once
	dir string
	err error
}

// appWriterDir holds a static build of internal/pgxwriter/appwriter, the
// app the test runs in a container.
func appWriterDir(t testing.TB) string {
	t.Helper()
	appWriterOnce.Do(func() {
		dir, err := os.MkdirTemp("", "understudy-appwriter-")
		if err != nil {
			appWriterOnce.err = err
			return
		}
		os.Chmod(dir, 0o755)
		c := exec.Command("go", "build", "-o", filepath.Join(dir, "appwriter"), "github.com/understudy-dev/understudy/internal/pgxwriter/appwriter")
		c.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := c.CombinedOutput(); err != nil {
			appWriterOnce.err = fmt.Errorf("%v\n%s", err, out)
		}
		appWriterOnce.dir = dir
	})
	if appWriterOnce.err != nil {
		t.Fatalf("building the app writer: %v", appWriterOnce.err)
	}
	return appWriterOnce.dir
}

// writerLog reads every attempt the app container has printed so far.
func (w *kamalWorld) writerLog(t testing.TB) []pgxwriter.Attempt {
	t.Helper()
	out, err := exec.Command("docker", "-H", w.docker["app"].DockerHost(), "logs", "shop-writers").Output()
	if err != nil {
		t.Fatalf("docker logs shop-writers: %v", err)
	}
	var log []pgxwriter.Attempt
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var a pgxwriter.Attempt
		if json.Unmarshal(sc.Bytes(), &a) == nil && a.Client != "" {
			log = append(log, a)
		}
	}
	return log
}

// byClient splits a log by client.
func byClient(log []pgxwriter.Attempt) map[string][]pgxwriter.Attempt {
	m := map[string][]pgxwriter.Attempt{}
	for _, a := range log {
		m[a.Client] = append(m[a.Client], a)
	}
	return m
}

// waitWrites waits until every client has an acknowledged write that
// began after since: every writer resumed by itself.
func (w *kamalWorld) waitWrites(t testing.TB, clients int, since time.Time, limit time.Duration, what string) map[string]pgxwriter.Attempt {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		firsts := map[string]pgxwriter.Attempt{}
		for c, lg := range byClient(w.writerLog(t)) {
			if a, ok := pgxwriter.FirstAckAfter(lg, since); ok {
				firsts[c] = a
			}
		}
		if len(firsts) == clients {
			return firsts
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: only %d of %d writers wrote again within %s", what, len(firsts), clients, limit)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// containerAddr is a node container's address on its server's network, as
// PostgreSQL sees the connections the router makes to it.
func (w *kamalWorld) containerAddr(t testing.TB, node string) string {
	t.Helper()
	ip := w.docker[node].Docker(t, "container", "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "shop-"+node)
	return ip + ":5432"
}

// blackhole drops every packet in and out of a server's network namespace
// (a powered-off VM behind a cloud's router, a partition); the returned
// heal removes the rules, and the test's clean-up does too.
func (w *kamalWorld) blackhole(t testing.TB, server string) (heal func()) {
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
	for _, chain := range []string{"INPUT", "OUTPUT", "FORWARD"} {
		r := []string{chain, "-m", "comment", "--comment", "understudy-test-blackhole", "-j", "DROP"}
		if out, err := exec.Command("nsenter", append([]string{"--net=" + ns, "iptables", "-w", "-I"}, r...)...).CombinedOutput(); err != nil {
			t.Fatalf("iptables in %s's namespace: %v\n%s", server, err, out)
		}
		rules = append(rules, r)
	}
	return heal
}

// The router on real Docker: init writes the node agents and the router,
// apply boots them (the router on the app's own server), and an app in a
// container on that server's Kamal network, which knows one host (the
// router's name), keeps writing across a switchover, a switchover back,
// the primary's server black-holed and an emergency promote, and the old
// primary healed and rejoined: every writer resumes without a restart, no
// acknowledged row is missing, no node acknowledged a write outside its
// time as the primary, and writes never went to two nodes.
func TestKamalRouterFollowsEveryRoleChange(t *testing.T) {
	w := newKamalWorld(t, worldOptions{app: true})
	out, code := runCLI(t, "apply", "--app", w.app)
	if code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	for _, want := range []string{"booted db-agent", "booted db-replica-agent", "booted db-router", "the node agents' login understudy_monitor"} {
		if !strings.Contains(out, want) {
			t.Errorf("apply output lacks %q:\n%s", want, out)
		}
	}
	if again, code := runCLI(t, "apply", "--app", w.app); code != 0 || !strings.Contains(again, "nothing to do") {
		t.Errorf("apply again: exit %d\n%s", code, again)
	}
	routerOn := func(node string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
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
	routerOn("db")
	if out, code := runCLI(t, "check", "--app", w.app); code == 2 {
		t.Fatalf("check on a healthy setup: exit %d\n%s", code, out)
	}

	w.exec(t, "db", "CREATE ROLE app LOGIN PASSWORD 'app-writer-secret'", pgxwriter.CreateSQL, "GRANT ALL ON "+pgxwriter.Table+" TO app")
	const clients = 3
	app := w.docker["app"]
	app.Docker(t, "run", "-d", "--name", "shop-writers", "--network", "kamal", "-e", "PGPASSWORD=app-writer-secret",
		"-v", appWriterDir(t)+":/w:ro", dockertest.ImageTag, "/w/appwriter", "--clients", fmt.Sprint(clients),
		"--conn", "host=shop-db-router port=5432 user=app dbname=postgres target_session_attrs=read-write connect_timeout=2")
	t.Cleanup(func() { exec.Command("docker", "-H", app.DockerHost(), "rm", "-f", "shop-writers").Run() })
	w.waitWrites(t, clients, time.Time{}, 60*time.Second, "first writes through the router")
	addrs := map[string]string{"db": w.containerAddr(t, "db"), "db-replica": w.containerAddr(t, "db-replica")}
	primaries := []string{addrs["db"]}
	var changes []pgxwriter.Change
	// role runs a role command; a change of primary is recorded.
	role := func(change bool, args ...string) time.Time {
		t.Helper()
		from := time.Now()
		out, code := runCLI(t, append(args, "--app", w.app)...)
		if code != 0 {
			t.Fatalf("%s: exit %d\n%s", strings.Join(args, " "), code, out)
		}
		t.Logf("%s:\n%s", strings.Join(args, " "), out)
		if change {
			changes = append(changes, pgxwriter.Change{From: from, To: time.Now()})
		}
		return from
	}
	for _, to := range []string{"db-replica", "db"} {
		from := role(true, "switchover", to)
		primaries = append(primaries, addrs[to])
		w.waitWrites(t, clients, time.Now(), 30*time.Second, "after the switchover to "+to)
		for c, lg := range byClient(w.writerLog(t)) {
			t.Logf("switchover to %s: %s paused %d ms", to, c, pgxwriter.LongestPause(lg, from, time.Now()).Milliseconds())
		}
		routerOn(to)
	}

	// db's server vanishes: every packet dropped. Then the emergency.
	heal := w.blackhole(t, "db")
	time.Sleep(3 * time.Second)
	role(true, "promote", "db-replica")
	returned := time.Now()
	primaries = append(primaries, addrs["db-replica"])
	for c, a := range w.waitWrites(t, clients, returned, 30*time.Second, "after the promote") {
		t.Logf("promote: %s's first write on db-replica %d ms after promote returned (%s)", c, a.End.Sub(returned).Milliseconds(), a.Node)
	}
	routerOn("db-replica")

	// db's server is back: its agent sees the newer primary and refuses
	// /primary, so the router keeps writing to db-replica; then rejoin.
	heal()
	time.Sleep(3 * time.Second)
	out, _ = runCLI(t, "status", "--app", w.app)
	if !strings.Contains(out, w.addr["app"]+": writes to db-replica;") {
		t.Errorf("after the heal, the router does not write to db-replica alone:\n%s", out)
	}
	role(false, "rejoin", "db", "--fence")
	w.waitWrites(t, clients, time.Now(), 30*time.Second, "after the rejoin")
	app.Docker(t, "stop", "-t", "10", "shop-writers")

	log := w.writerLog(t)
	logs := [][]pgxwriter.Attempt{}
	for _, lg := range byClient(log) {
		logs = append(logs, lg)
	}
	// The rejoined db may have come back with a new address: both count as db.
	addrs["db"+"#2"] = w.containerAddr(t, "db")
	for i := range logs {
		for j := range logs[i] {
			if logs[i][j].Node == addrs["db#2"] && addrs["db#2"] != addrs["db"] {
				logs[i][j].Node = addrs["db"]
			}
		}
	}
	acked := len(pgxwriter.Acked(log))
	lost, err := pgxwriter.Lost(context.Background(), fmt.Sprintf("host=%s port=5432 user=%s password=%s dbname=postgres sslmode=disable", w.addr["db-replica"], dbUser, dbPassword), logs...)
	if err != nil {
		t.Fatal(err)
	}
	if len(lost) > 0 {
		t.Errorf("%d of %d acknowledged rows are missing from db-replica, e.g. %+v", len(lost), acked, lost[0])
	}
	if wrong := pgxwriter.WrongNode(primaries, changes, logs...); len(wrong) > 0 {
		t.Errorf("%d writes acknowledged by a node that was not the primary, e.g. %+v", len(wrong), wrong[0])
	}
	if bad, runs := pgxwriter.Interleaved(primaries, logs...); bad {
		t.Errorf("writes went to two nodes in turns: %+v", runs)
	}
	t.Logf("%d acknowledged rows checked on db-replica; %d attempts in all", acked, len(log))
}
