package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/understudy-dev/understudy/internal/version"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/understudy-dev/understudy/agent"
	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/failover"
	"github.com/understudy-dev/understudy/internal/pgtest"
	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/pgops"
)

const monitorPassword = "m0nitor-S3CRET-do-not-leak"

// server is one real PostgreSQL for the agent to watch: password logins
// over TCP (so the monitoring role's password is really checked), trust on
// the socket for the test's own superuser session.
type server struct {
	e    *pgtest.Env
	dir  string
	port int
}

func startServer(t *testing.T) *server {
	t.Helper()
	e := pgtest.New(t)
	s := &server{e: e, dir: e.Dir("data"), port: pgtest.FreePort(t)}
	e.InitDB(s.dir)
	hba := "local all all trust\nhost all " + pgconf.DefaultMonitorUser + " 127.0.0.1/32 scram-sha-256\n"
	if err := os.WriteFile(filepath.Join(s.dir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chown(filepath.Join(s.dir, "pg_hba.conf"), e.UID(), e.GID())
	e.Start(s.dir, fmt.Sprintf("-c port=%d -c listen_addresses=127.0.0.1 -c unix_socket_directories=%s", s.port, s.dir))
	c := s.super(t)
	defer c.Close(context.Background())
	if err := pgops.EnsureMonitorRole(context.Background(), c, pgconf.DefaultMonitorUser, monitorPassword); err != nil {
		t.Fatal(err)
	}
	return s
}

// super is a superuser session over the socket.
func (s *server) super(t *testing.T) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", s.dir, s.port))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (s *server) source() agent.PGSource {
	return agent.PGSource{Host: "127.0.0.1", Port: s.port, User: pgconf.DefaultMonitorUser, Password: monitorPassword}
}

// runAgent runs an agent on a free loopback port until the test ends.
func runAgent(t *testing.T, cfg agent.Config) (base string, a *agent.Agent) {
	t.Helper()
	l, err := agent.Listen(fmt.Sprintf("127.0.0.1:%d", pgtest.FreePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	a = agent.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("agent: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("the agent did not stop within 10 s of its context ending")
		}
	})
	return "http://" + l.Addr().String(), a
}

type reply struct {
	code int
	body string
}

func get(t *testing.T, method, url string) reply {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, string(b)}
}

func waitCode(t *testing.T, url string, code int, within time.Duration) reply {
	t.Helper()
	deadline := time.Now().Add(within)
	var r reply
	for time.Now().Before(deadline) {
		if r = get(t, "GET", url); r.code == code {
			return r
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("GET %s: %d %s; wanted %d within %s", url, r.code, r.body, code, within)
	return r
}

// TestAgentEndpoints runs an agent against a real primary: the checks, a
// drain by a superuser session's advisory lock (and not by anyone else's),
// a fence note, bad input, and no secret anywhere.
func TestAgentEndpoints(t *testing.T) {
	s := startServer(t)
	base, _ := runAgent(t, agent.Config{Node: "db", PG: s.source(), Deadline: time.Second,
		Peers: []agent.Peer{{Name: "db-replica", Addr: "127.0.0.1:1"}}})
	r := waitCode(t, base+"/primary", 200, 5*time.Second)
	var body map[string]any
	if err := json.Unmarshal([]byte(r.body), &body); err != nil {
		t.Fatalf("/primary body is not JSON: %v\n%s", err, r.body)
	}
	for _, k := range []string{"role", "timeline", "write_lsn", "fenced", "draining", "reason"} {
		if _, ok := body[k]; !ok {
			t.Errorf("/primary's body has no %q: %s", k, r.body)
		}
	}
	if body["role"] != "primary" || body["timeline"] != float64(1) {
		t.Errorf("/primary body: %s", r.body)
	}
	for path, code := range map[string]int{"/health": 200, "/replica": 503, "/replica?lag=16MB": 503, "/status": 200, "/metrics": 200} {
		if got := get(t, "GET", base+path); got.code != code {
			t.Errorf("GET %s: %d, want %d: %s", path, got.code, code, got.body)
		}
	}
	// The agent's build, for check's agent-version finding.
	want := version.Info()
	for _, path := range []string{"/health", "/status"} {
		var v struct {
			Understudy version.Build `json:"understudy"`
		}
		if err := json.Unmarshal([]byte(get(t, "GET", base+path).body), &v); err != nil || !v.Understudy.Same(want) || v.Understudy.IsZero() {
			t.Errorf("GET %s: understudy %+v (%v), want this build %+v", path, v.Understudy, err, want)
		}
	}
	if got := get(t, "HEAD", base+"/primary"); got.code != 200 {
		t.Errorf("HEAD /primary: %d", got.code)
	}

	// Bad input.
	if got := get(t, "GET", base+"/nope"); got.code != 404 || !strings.Contains(got.body, "/primary") {
		t.Errorf("GET /nope: %d %s, want 404 naming the endpoints", got.code, got.body)
	}
	for _, q := range []string{"lag=abc", "lag=", "lag=-1", "lag=1MB&lag=2MB"} {
		if got := get(t, "GET", base+"/replica?"+q); got.code != 400 || !strings.Contains(got.body, "lag=") {
			t.Errorf("GET /replica?%s: %d %s, want 400 with a message about lag=", q, got.code, got.body)
		}
	}
	for _, m := range []string{"POST", "PUT", "DELETE"} {
		if got := get(t, m, base+"/primary"); got.code != 405 {
			t.Errorf("%s /primary: %d, want 405", m, got.code)
		}
	}

	// A drain: the lock held by a superuser session makes /primary 503
	// (at once with ?fresh); by a role that is no superuser, nothing.
	ctx := context.Background()
	su := s.super(t)
	defer su.Close(ctx)
	if _, err := su.Exec(ctx, "CREATE ROLE plain LOGIN"); err != nil {
		t.Fatal(err)
	}
	plain, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=plain dbname=postgres", s.dir, s.port))
	if err != nil {
		t.Fatal(err)
	}
	if err := pgops.HoldDrainLock(ctx, plain); err != nil {
		t.Fatal(err)
	}
	if got := get(t, "GET", base+"/primary?fresh"); got.code != 200 {
		t.Errorf("/primary with the drain key held by a plain role: %d %s, want 200", got.code, got.body)
	}
	if err := pgops.ReleaseDrainLock(ctx, plain); err != nil {
		t.Fatal(err)
	}
	plain.Close(ctx)
	if err := pgops.HoldDrainLock(ctx, su); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got := get(t, "GET", base+"/primary?fresh")
	if got.code != 503 || !strings.Contains(got.body, "draining") {
		t.Errorf("/primary?fresh while a superuser session drains: %d %s, want 503 saying draining", got.code, got.body)
	}
	t.Logf("drain seen by /primary?fresh in %d ms", time.Since(start).Milliseconds())
	if err := pgops.ReleaseDrainLock(ctx, su); err != nil {
		t.Fatal(err)
	}
	if got := get(t, "GET", base+"/primary?fresh"); got.code != 200 {
		t.Errorf("/primary after the drain: %d %s", got.code, got.body)
	}
	// The lock ends with its session, whatever becomes of the process.
	if err := pgops.HoldDrainLock(ctx, su); err != nil {
		t.Fatal(err)
	}
	waitCode(t, base+"/primary", 503, 2*time.Second)
	su.Close(ctx)
	waitCode(t, base+"/primary", 200, 2*time.Second)

	// A fence note in PGDATA.
	note := filepath.Join(s.dir, pgops.FenceNote)
	if err := os.WriteFile(note, []byte("fenced by a test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The note is read on the slower loop (every DetailEvery, 2 s).
	if got := waitCode(t, base+"/primary", 503, 5*time.Second); !strings.Contains(got.body, "fenced") {
		t.Errorf("/primary with a fence note: %d %s", got.code, got.body)
	}
	os.Remove(note)
	waitCode(t, base+"/primary", 200, 5*time.Second)

	// No secret in any answer, in any state (the server down included).
	s.e.Stop(s.dir)
	r = waitCode(t, base+"/primary", 503, 3*time.Second)
	if !strings.Contains(r.body, "not answering") {
		t.Errorf("/primary with the server stopped: %s", r.body)
	}
	for _, path := range []string{"/primary", "/replica", "/health", "/status", "/metrics", "/nope"} {
		if b := get(t, "GET", base+path).body; strings.Contains(b, monitorPassword) {
			t.Errorf("GET %s shows the monitoring password", path)
		}
	}
}

// TestAgentWrongPassword: a refused login is reported, without the
// password, and /primary is 503.
func TestAgentWrongPassword(t *testing.T) {
	s := startServer(t)
	src := s.source()
	src.Password = "wrong-" + monitorPassword
	base, _ := runAgent(t, agent.Config{Node: "db", PG: src})
	r := waitCode(t, base+"/primary", 503, 3*time.Second)
	time.Sleep(300 * time.Millisecond)
	r = get(t, "GET", base+"/status")
	if !strings.Contains(r.body, "password authentication failed") {
		t.Errorf("/status does not say the login was refused: %s", r.body)
	}
	if strings.Contains(r.body, monitorPassword) {
		t.Errorf("/status shows the password")
	}
}

// TestAgentListensOnlyWhereTold: the agent binds the address given, and
// refuses an address with no host.
func TestAgentListensOnlyWhereTold(t *testing.T) {
	port := pgtest.FreePort(t)
	l, err := agent.Listen(fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.2:%d", port), time.Second); err == nil {
		c.Close()
		t.Errorf("the agent bound to 127.0.0.1:%d also answers on 127.0.0.2", port)
	}
	for _, bad := range []string{fmt.Sprintf(":%d", port), "8008", "0.0.0.0"} {
		if l, err := agent.Listen(bad); err == nil {
			l.Close()
			t.Errorf("Listen(%q) succeeded; want a refusal naming the fix", bad)
		}
	}
}

// TestAgentHungPostgres stops (SIGSTOP) every process of a real server:
// the agent answers 503 within its deadline (plus one interval), and
// every check during the hang is answered at once, never waiting on
// PostgreSQL.
func TestAgentHungPostgres(t *testing.T) {
	s := startServer(t)
	const deadline, interval = 500 * time.Millisecond, 100 * time.Millisecond
	base, _ := runAgent(t, agent.Config{Node: "db", PG: s.source(), Deadline: deadline, Interval: interval})
	waitCode(t, base+"/primary", 200, 5*time.Second)
	pids := serverPIDs(t, s.dir)
	defer func() {
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGCONT)
		}
	}()
	stopped := time.Now()
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGSTOP)
	}
	var slowest time.Duration
	for {
		t0 := time.Now()
		r := get(t, "GET", base+"/primary")
		slowest = max(slowest, time.Since(t0))
		if r.code == 503 {
			took := time.Since(stopped)
			t.Logf("503 %d ms after SIGSTOP (deadline %s, interval %s); slowest check %d ms: %s", took.Milliseconds(), deadline, interval, slowest.Milliseconds(), strings.Join(strings.Fields(r.body), " "))
			if took > deadline+interval+250*time.Millisecond {
				t.Errorf("503 came %s after the server hung; want within the deadline %s plus one interval", took, deadline)
			}
			if !strings.Contains(r.body, "no answer within 500ms") {
				t.Errorf("the reason does not say the server did not answer in time: %s", r.body)
			}
			break
		}
		if time.Since(stopped) > 5*time.Second {
			t.Fatalf("still %d 5 s after the server hung: %s", r.code, r.body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if slowest > 200*time.Millisecond {
		t.Errorf("a check took %s while the server hung: checks must not wait on PostgreSQL", slowest)
	}
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGCONT)
	}
	waitCode(t, base+"/primary", 200, 5*time.Second)
}

// serverPIDs is the postmaster of dir and its children.
func serverPIDs(t *testing.T, dir string) []int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pm, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	pids := []int{pm}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pm) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestMetricsPromtool lints the agent's real /metrics with promtool.
func TestMetricsPromtool(t *testing.T) {
	promtool := requirePromtool(t)
	s := startServer(t)
	base, _ := runAgent(t, agent.Config{Node: "db", PG: s.source(), DetailEvery: 100 * time.Millisecond})
	waitCode(t, base+"/primary", 200, 5*time.Second)
	time.Sleep(300 * time.Millisecond)
	m := get(t, "GET", base+"/metrics").body
	for _, want := range []string{"pg_up 1", "pg_replication_is_replica 0", `understudy_role{node="db",role="primary"} 1`, `understudy_check_ok{node="db",check="primary"} 1`, "understudy_timeline"} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics has no %q:\n%s", want, m)
		}
	}
	lint(t, promtool, m)
}

func requirePromtool(t *testing.T) string {
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (Debian's prometheus package; ./scripts/setup-debian installs it)")
	}
	return p
}

func lint(t *testing.T, promtool, metrics string) {
	t.Helper()
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(metrics)
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("promtool check metrics: %v\n%s\n--- metrics:\n%s", err, out, metrics)
	}
}

// TestRenderMetricsEveryFamily lints a rendering with every family present:
// a primary with a walsender and slots, peers, and a backup report.
func TestRenderMetricsEveryFamily(t *testing.T) {
	promtool := requirePromtool(t)
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	v := agent.NodeView{Node: "db", At: now.Add(-40 * time.Millisecond), Took: 2 * time.Millisecond, Role: agent.RolePrimary, SystemID: "7", Timeline: 3, WriteLSN: 0x5000000, ValidFor: 2 * time.Second}
	safe := int64(900 << 20)
	in := agent.MetricsInput{Now: now, View: v, Answer: agent.Answer(v, nil, agent.LeaseState{}, now),
		Details: agent.Details{At: now, TimelineStarted: now.Add(-time.Hour),
			Replication: []pgops.Replication{{Name: "db-replica", ClientAddr: "10.0.1.3", State: "streaming", LagBytes: 4096}},
			Slots:       []pgops.Slot{{Name: "understudy_db_replica", Active: true, WALStatus: "reserved", RetainedBytes: 1 << 20, SafeWALBytes: &safe}, {Name: "understudy_backup", WALStatus: "lost"}}},
		Peers: []agent.PeerView{{Node: "db-replica", Fetched: now, View: &agent.NodeView{Node: "db-replica", Role: agent.RoleStandby}}, {Node: "db-3", Error: "no answer"}},
		Backup: &backup.AgentStatus{Updated: now.Add(-time.Second), Receiving: true, LastArchived: "000000030000000000000005", LastArchivedAt: now.Add(-30 * time.Second),
			CaughtUpAt: now.Add(-time.Second), LastBase: "20261201T090000.000Z", SpoolBytes: 123}}
	m := agent.RenderMetrics(in)
	for _, want := range []string{
		`pg_stat_replication_pg_wal_lsn_diff{application_name="db-replica",client_addr="10.0.1.3",state="streaming"} 4096`,
		`pg_replication_slot_wal_status{slot_name="understudy_backup",slot_type="physical",wal_status="lost"} 1`,
		`pg_replication_slot_safe_wal_size_bytes{slot_name="understudy_db_replica",slot_type="physical"} 9.437184e+08`,
		`understudy_peer_up{node="db",peer="db-3"} 0`,
		`understudy_wal_archive_age_seconds{node="db"} 30`,
		`understudy_wal_archive_last_segment_info{node="db",segment="000000030000000000000005"} 1`,
		`understudy_backup_last_base_timestamp_seconds{node="db"} 1.7961156e+09`,
		`understudy_last_switchover_timestamp_seconds{node="db"} 1.7961156e+09`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("no %q in:\n%s", want, m)
		}
	}
	lint(t, promtool, m)
	// A standby, and a node that is down, render as valid text too.
	sv := agent.NodeView{Node: "db-replica", At: now, Role: agent.RoleStandby, Timeline: 3, ReceiveLSN: 0x5000000, ReplayLSN: 0x4000000, Receiver: "streaming", LagSeconds: 0.25, ValidFor: time.Second}
	lint(t, promtool, agent.RenderMetrics(agent.MetricsInput{Now: now, View: sv, Answer: agent.Answer(sv, nil, agent.LeaseState{}, now), BackupErr: "no report"}))
	dv := agent.NodeView{Node: "db", At: now, Role: agent.RoleDown, Error: "refused", ValidFor: time.Second}
	lint(t, promtool, agent.RenderMetrics(agent.MetricsInput{Now: now, View: dv, Answer: agent.Answer(dv, nil, agent.LeaseState{}, now)}))
}

// leaseSource stands in for the failover loop (*failover.Runner) at the
// agent's interface: the holder it reports is set by the test, its report
// and metrics are failover's own renderings of a report.
type leaseSource struct {
	mu     sync.Mutex
	holder string
	rep    failover.Report
}

func (l *leaseSource) set(h string) { l.mu.Lock(); l.holder = h; l.mu.Unlock() }
func (l *leaseSource) Holder(time.Time) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.holder
}
func (l *leaseSource) ReportJSON() json.RawMessage { b, _ := json.Marshal(l.rep); return b }
func (l *leaseSource) MetricsText() string         { return failover.RenderMetrics(l.rep) }

// TestAgentFollowsTheLease: with a failover loop, a running, unfenced
// primary answers /primary 200 only while its loop says it holds the
// lease, asked at each check; /status carries the loop's report and
// /metrics its metrics, linted by promtool with the agent's own.
func TestAgentFollowsTheLease(t *testing.T) {
	s := startServer(t)
	src := &leaseSource{rep: failover.Report{Node: "db", Holder: "db", Holds: true, Quorum: true,
		Members:  []failover.MemberHealth{{Name: "db", Healthy: true}, {Name: "db-replica", Healthy: false, Error: "down"}, {Name: "app", Healthy: true, Leader: true}},
		Position: failover.Position{Node: "db", Timeline: 1, LSN: 0x3000060}}}
	base, _ := runAgent(t, agent.Config{Node: "db", PG: s.source(), Failover: src, DetailEvery: 100 * time.Millisecond})
	src.set("db")
	waitCode(t, base+"/primary", 200, 5*time.Second)
	// No new observation needed: the lease is asked at each check.
	src.set("")
	if r := get(t, "GET", base+"/primary"); r.code != 503 || !strings.Contains(r.body, "the failover lease is held by no node") {
		t.Errorf("/primary without the lease: %d %s", r.code, r.body)
	}
	src.set("db-replica")
	if r := get(t, "GET", base+"/primary"); r.code != 503 || !strings.Contains(r.body, "held by db-replica") {
		t.Errorf("/primary with the lease elsewhere: %d %s", r.code, r.body)
	}
	var st agent.Status
	if err := json.Unmarshal([]byte(get(t, "GET", base+"/status").body), &st); err != nil {
		t.Fatal(err)
	}
	var rep failover.Report
	if err := json.Unmarshal(st.Failover, &rep); err != nil || !st.Lease.Failover || st.Lease.Holder != "db-replica" || rep.Position.LSN != 0x3000060 || len(rep.Members) != 3 {
		t.Errorf("/status: lease %+v, failover report %s (%v)", st.Lease, st.Failover, err)
	}
	m := get(t, "GET", base+"/metrics").body
	for _, want := range []string{`understudy_failover_lease_held{node="db"} 1`, `understudy_failover_member_up{member="db-replica"} 0`, `understudy_check_ok{node="db",check="primary"} 0`} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics has no %q", want)
		}
	}
	if p, err := exec.LookPath("promtool"); err == nil {
		lint(t, p, m)
	}
}

// Without a failover loop nothing of it shows.
func TestAgentWithoutFailover(t *testing.T) {
	s := startServer(t)
	base, _ := runAgent(t, agent.Config{Node: "db", PG: s.source()})
	waitCode(t, base+"/primary", 200, 5*time.Second)
	body := get(t, "GET", base+"/status").body
	if strings.Contains(body, `"failover": {`) || strings.Contains(get(t, "GET", base+"/metrics").body, "understudy_failover_") {
		t.Errorf("failover shows without a failover loop: %s", body)
	}
}
