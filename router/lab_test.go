package router_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/understudy-dev/understudy/internal/labtest"
	"github.com/understudy-dev/understudy/internal/pgxwriter"
	"github.com/understudy-dev/understudy/lab"
	"github.com/understudy-dev/understudy/live"
)

// appConn is the app's connection through the lab's router: one host,
// target_session_attrs=read-write kept.
func appConn(l *lab.Lab, port int) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=app password=app-secret dbname=postgres target_session_attrs=read-write connect_timeout=2", port)
}

func node(l *lab.Lab, name string) string {
	n, _ := l.Cluster.Node(name)
	return fmt.Sprintf("127.0.0.1:%d", n.Port)
}

// prepareApp makes the app's role and table on the primary.
func prepareApp(t *testing.T, l *lab.Lab, primary string) {
	labtest.Exec(t, l, primary, "CREATE ROLE app LOGIN PASSWORD 'app-secret'", pgxwriter.CreateSQL, "GRANT ALL ON "+pgxwriter.Table+" TO app")
}

// TestRouterFollowsSwitchovers: app writers that know one host (the
// router's) keep writing across a switchover and back, with every
// acknowledged row on the final primary and no writes taken by two nodes.
func TestRouterFollowsSwitchovers(t *testing.T) {
	l := labtest.Up(t, labtest.Options{Router: true})
	labtest.NodeAgents(t, l, nil)
	labtest.Router(t, l)
	prepareApp(t, l, "db")
	r := l.Router()
	ctx := context.Background()
	var ws []*pgxwriter.Writer
	for i := 0; i < 3; i++ {
		ws = append(ws, pgxwriter.Start(ctx, fmt.Sprintf("pgx-%d", i), appConn(l, r.Port), 50*time.Millisecond, 5*time.Second))
	}
	defer func() {
		for _, w := range ws {
			w.Stop()
		}
	}()
	waitAcks(t, ws, time.Now(), 15*time.Second)
	var changes []pgxwriter.Change
	for _, to := range []string{"db-replica", "db"} {
		from := time.Now()
		sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		_, err := live.Switchover(sctx, l.Target(), to, live.RoleOptions{})
		cancel()
		if err != nil {
			t.Fatalf("switchover to %s: %v", to, err)
		}
		changes = append(changes, pgxwriter.Change{From: from, To: time.Now()})
		waitAcks(t, ws, time.Now(), 15*time.Second) // every writer resumes by itself
		for _, w := range ws {
			t.Logf("switchover to %s: %s paused %d ms", to, w.Name, pgxwriter.LongestPause(w.Log(), from, time.Now()).Milliseconds())
		}
	}
	var logs [][]pgxwriter.Attempt
	for _, w := range ws {
		w.Stop()
		logs = append(logs, w.Log())
	}
	verify(t, l, "db", []string{"db", "db-replica", "db"}, changes, logs)
}

// verify holds the writers' logs to the rules: nothing acknowledged lost
// from the final primary, no acknowledgement outside its node's time as
// the primary, never two nodes taking writes in turns.
func verify(t *testing.T, l *lab.Lab, final string, primaries []string, changes []pgxwriter.Change, logs [][]pgxwriter.Attempt) {
	t.Helper()
	var nodes []string
	for _, p := range primaries {
		nodes = append(nodes, node(l, p))
	}
	acked := 0
	for _, lg := range logs {
		acked += len(pgxwriter.Acked(lg))
	}
	n, _ := l.Cluster.Node(final)
	lost, err := pgxwriter.Lost(context.Background(), fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", l.Dir+"/sock/"+final, n.Port), logs...)
	if err != nil {
		t.Fatal(err)
	}
	if len(lost) > 0 {
		t.Errorf("%d of %d acknowledged rows are missing from %s, e.g. %+v", len(lost), acked, final, lost[0])
	}
	if wrong := pgxwriter.WrongNode(nodes, changes, logs...); len(wrong) > 0 {
		t.Errorf("%d writes acknowledged by a node that was not the primary, e.g. %+v", len(wrong), wrong[0])
	}
	if bad, runs := pgxwriter.Interleaved(nodes, logs...); bad {
		t.Errorf("writes went to two nodes in turns: %+v", runs)
	}
	t.Logf("%d acknowledged rows checked on %s", acked, final)
}

// waitAcks waits until every writer has an acknowledgement that began after since.
func waitAcks(t *testing.T, ws []*pgxwriter.Writer, since time.Time, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for _, w := range ws {
		for {
			if _, ok := pgxwriter.FirstAckAfter(w.Log(), since); ok {
				break
			}
			if time.Now().After(deadline) {
				lg := w.Log()
				last := ""
				if len(lg) > 0 {
					last = lg[len(lg)-1].Err
				}
				t.Fatalf("writer %s has not written since %s (last error: %s)", w.Name, since.Format("15:04:05.000"), last)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestRouterRefusesTheReplacedPrimary: the standby promoted behind the old
// primary's back (a split brain) is the only node the router writes to,
// because the old primary's agent sees a primary on a newer timeline.
func TestRouterRefusesTheReplacedPrimary(t *testing.T) {
	l := labtest.Up(t, labtest.Options{Router: true})
	labtest.NodeAgents(t, l, nil)
	labtest.Router(t, l)
	prepareApp(t, l, "db")
	lsn := labtest.Query(t, l, "db", "SELECT pg_current_wal_lsn()::text")
	labtest.WaitFor(t, 10*time.Second, "db-replica to replay the app's table", func() bool {
		return labtest.Query(t, l, "db-replica", "SELECT (pg_last_wal_replay_lsn() >= $1::pg_lsn)::text", lsn) == "true"
	})
	labtest.Exec(t, l, "db-replica", "SELECT pg_promote(true, 60)")
	old := l.AgentURL("db")
	labtest.WaitFor(t, 10*time.Second, "db's agent to refuse /primary", func() bool { return code(t, old+"/primary") == 503 })
	body := get(t, old+"/primary")
	if !strings.Contains(body, "db-replica is a primary on a newer timeline (2 > 1)") {
		t.Errorf("db's /primary: %s", body)
	}
	if c := code(t, l.AgentURL("db-replica")+"/primary"); c != 200 {
		t.Errorf("db-replica's /primary: %d", c)
	}
	time.Sleep(300 * time.Millisecond) // a few checks
	w := pgxwriter.Start(context.Background(), "pgx", appConn(l, l.Router().Port), 20*time.Millisecond, 5*time.Second)
	time.Sleep(time.Second)
	w.Stop()
	acks := pgxwriter.Acked(w.Log())
	if len(acks) == 0 {
		t.Fatalf("no write went through: %+v", w.Log())
	}
	for _, a := range acks {
		if a.Node != node(l, "db-replica") {
			t.Fatalf("a write went to %s, not to the new primary db-replica (%s)", a.Node, node(l, "db-replica"))
		}
	}
}

// TestRouterReadsFallBackToThePrimary: the read-only listener reaches the
// standby, and the primary when no standby is within the limit.
func TestRouterReadsFallBackToThePrimary(t *testing.T) {
	l := labtest.Up(t, labtest.Options{Router: true})
	labtest.NodeAgents(t, l, nil)
	labtest.Router(t, l)
	prepareApp(t, l, "db")
	ro := strings.Replace(appConn(l, l.Router().ROPort), "target_session_attrs=read-write", "", 1)
	readsFrom := func() string {
		var who string
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := pgxConnect(ctx, ro)
		if err != nil {
			return "error: " + err.Error()
		}
		defer c.Close(ctx)
		c.QueryRow(ctx, "SELECT host(inet_server_addr()) || ':' || inet_server_port()::text").Scan(&who)
		return who
	}
	labtest.WaitFor(t, 10*time.Second, "reads to reach the standby", func() bool { return readsFrom() == node(l, "db-replica") })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := l.Stop(ctx, "db-replica"); err != nil {
		t.Fatal(err)
	}
	labtest.WaitFor(t, 10*time.Second, "reads to fall back to the primary", func() bool { return readsFrom() == node(l, "db") })
}

func code(t *testing.T, url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func get(t *testing.T, url string) string {
	resp, err := http.Get(url)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return b.String()
}

func pgxConnect(ctx context.Context, conn string) (*pgx.Conn, error) { return pgx.Connect(ctx, conn) }

// TestSwitchoverDrainsBeforeTheStop: with agents, a switchover's plan
// holds the drain and the announce; when the old primary is about to stop,
// its agent already answers /primary 503, and once the switchover returns
// the new one's answers 200 and the old one's 503.
func TestSwitchoverDrainsBeforeTheStop(t *testing.T) {
	l := labtest.Up(t, labtest.Options{Agents: true})
	labtest.NodeAgents(t, l, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := live.PlanSwitchover(ctx, l.Target(), "db-replica", live.RoleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, s := range p.Steps {
		kinds = append(kinds, string(s.Kind)+"@"+s.Node)
	}
	got := strings.Join(kinds, " ")
	if !strings.Contains(got, "checkpoint@db drain@db stop-primary@db promote@db-replica announce@db-replica") {
		t.Fatalf("plan: %s", got)
	}
	atStop := 0
	_, err = live.Switchover(ctx, l.Target(), "db-replica", live.RoleOptions{Hook: func(stage string) {
		if stage == "before-stop" {
			atStop = code(t, l.AgentURL("db")+"/primary")
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if atStop != 503 {
		t.Errorf("db's agent answered %d just before db stopped; want 503 (drained)", atStop)
	}
	if c := code(t, l.AgentURL("db-replica")+"/primary"); c != 200 {
		t.Errorf("db-replica's agent answers %d right after the switchover; want 200 (announced)", c)
	}
	labtest.WaitFor(t, 10*time.Second, "db, now a standby, to answer /primary 503 and /replica 200", func() bool {
		return code(t, l.AgentURL("db")+"/primary") == 503 && code(t, l.AgentURL("db")+"/replica") == 200
	})
}
