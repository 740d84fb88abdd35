package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/internal/apptest"
)

// blackhole drops every packet in and out of a server's network namespace
// (a powered-off VM behind a cloud's router, a partition); the returned
// heal removes the rules, and the test's clean-up does too.
func (w *kamalWorld) blackhole(t testing.TB, server string) (heal func()) {
	t.Helper()
	return w.dropPackets(t, server, "understudy-test-blackhole", [][]string{{"INPUT"}, {"OUTPUT"}, {"FORWARD"}})
}

// The router on real Docker: init writes the node agents and the router,
// apply boots them (the router on the app's own server), and the app
// writers (ActiveRecord + ruby-pg, node-postgres, psycopg2, pgx, each in a
// container of the app image on that server's Kamal network), which know
// one host (the router's name), keep writing across a switchover, a
// switchover back, the primary's server black-holed and an emergency
// promote, and the old primary healed and rejoined: every writer resumes
// without a restart, no acknowledged row is missing, no node acknowledged
// a write outside its time as the primary, and no two nodes acknowledged
// writes at once.
func TestKamalRouterFollowsEveryRoleChange(t *testing.T) {
	w := newKamalWorld(t, worldOptions{app: true})
	ctx := context.Background()
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
	w.routerOn(t, "db")
	if out, code := runCLI(t, "check", "--app", w.app); code == 2 {
		t.Fatalf("check on a healthy setup: exit %d\n%s", code, out)
	}

	h, s := w.startWriters(t, apptest.Core...)
	role := func(name, newPrimary string, args ...string) string {
		t.Helper()
		return w.roleChange(t, h, nil, name, newPrimary, args...)
	}
	role("switchover to db-replica", "db-replica", "switchover", "db-replica")
	w.routerOn(t, "db-replica")
	role("switchover back to db", "db", "switchover", "db")
	w.routerOn(t, "db")

	// db's server vanishes: every packet dropped. Then the emergency.
	holed := time.Now()
	heal := w.blackhole(t, "db")
	time.Sleep(3 * time.Second)
	promoteOut := role("db's server black-holed, promote db-replica", "db-replica", "promote", "db-replica")
	w.routerOn(t, "db-replica")

	// db's server is back: its agent sees the newer primary and refuses
	// /primary, so the router keeps writing to db-replica; then rejoin.
	heal()
	time.Sleep(3 * time.Second)
	if out, _ := runCLI(t, "status", "--app", w.app); !strings.Contains(out, w.addr["app"]+": writes to db-replica;") {
		t.Errorf("after the heal, the router does not write to db-replica alone:\n%s", out)
	}
	role("rejoin db", "", "rejoin", "db", "--fence")

	rep := w.finalReport(t, ctx, h, s, "db-replica")
	// Replication is asynchronous: a commit db acknowledged in the instant
	// its server vanished may never have reached db-replica, and the
	// emergency promote says so. Only such a loss is allowed: acknowledged
	// by db, ending within a second of the black hole.
	lost, taken := lostInTheWindow(t, rep.Lost, "db", holed.Add(-time.Second), holed.Add(time.Second))
	if len(taken) > 0 && !strings.Contains(promoteOut, "would be lost") {
		t.Errorf("a commit was lost, but the promote did not warn about it:\n%s", promoteOut)
	}
	rep.Lost = lost
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	for _, wr := range rep.Writers {
		for _, p := range wr.Pauses {
			if strings.Contains(p.Event, "promote") {
				t.Logf("%s: first write on db-replica %d ms after promote returned", wr.Name, p.NewPrimaryAckAfter.Milliseconds())
			}
		}
	}
}
