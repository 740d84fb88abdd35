// Package faults_test is the failover fault suite: a lab of two real
// PostgreSQL servers in network namespaces, a third namespace as the app
// host (the witness), one "agent" process per server that embeds its etcd
// member, runs the failover loop and its watchdog (as the node agent will),
// and an app writer keeping a commit ledger. Each test injects one fault
// and asserts on the ledger: never two nodes acknowledging writes in
// overlapping intervals, the loss bounded, no failover where none must
// happen. The suite takes minutes, so it runs only with
// UNDERSTUDY_FAULTS=1 (scripts/test-failover-faults).
package faults_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/understudy-dev/understudy/failover"
	"github.com/understudy-dev/understudy/internal/labtest"
	"github.com/understudy-dev/understudy/lab"
	"github.com/understudy-dev/understudy/live"
	"github.com/understudy-dev/understudy/pgops"
)

const (
	agentEnv    = "UNDERSTUDY_FAULTS_AGENT"
	watchdogEnv = "UNDERSTUDY_FAULTS_WATCHDOG"
	burnEnv     = "UNDERSTUDY_FAULTS_BURN"
)

func TestMain(m *testing.M) {
	if cfg := os.Getenv(agentEnv); cfg != "" {
		os.Exit(runAgent(cfg))
	}
	if os.Getenv(burnEnv) != "" {
		for { // a CPU burner for the soak
		}
	}
	if dir := os.Getenv(watchdogEnv); dir != "" {
		if err := failover.RunWatchdog(context.Background(), os.Stdin, failover.ProcessFencer{DataDir: dir}, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// agentConfig is what one agent process runs with.
type agentConfig struct {
	Spec       failover.MemberSpec `json:"spec"`
	SecretFile string              `json:"secret_file"`
	LabDir     string              `json:"lab_dir"`
	Node       string              `json:"node"` // "" for the witness: a member only
	Standbys   []string            `json:"standbys"`
	Settings   failover.Settings   `json:"settings"`
	// ClientDelay slows the agent's etcd connection by this much each
	// way (the soak's slow link: tc netem is not in every kernel).
	ClientDelay time.Duration `json:"client_delay"`
}

// runAgent is the agent process: its etcd member, then (on a database
// server) the watchdog process and the failover loop, until SIGTERM.
func runAgent(js string) int {
	var c agentConfig
	if err := json.Unmarshal([]byte(js), &c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	text, _ := os.ReadFile(c.SecretFile)
	secret, err := failover.ParseSecret(string(text))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	m, err := failover.StartMember(sctx, c.Spec, secret, nil)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer m.Close()
	fmt.Println("ready", m.Joined)
	if c.Node == "" {
		<-ctx.Done()
		return 0
	}
	l, err := lab.Open(c.LabDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	tlsf := failover.TLSFiles{CA: filepath.Join(c.Spec.DataDir, "tls", "ca.crt"), Cert: filepath.Join(c.Spec.DataDir, "tls", "member.crt"), Key: filepath.Join(c.Spec.DataDir, "tls", "member.key")}
	var dial failover.Dialer
	if c.ClientDelay > 0 {
		dial = func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			return newSlowConn(conn, c.ClientDelay), nil
		}
	}
	cli, err := failover.NewClient(c.Spec.ClientURLs()[:1], tlsf, dial)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cli.Close()
	wd := &failover.WatchdogProc{Argv: []string{os.Args[0], "-test.run=^$"},
		Env: append(slicesWithout(os.Environ(), agentEnv), watchdogEnv+"="+l.DataDir(c.Node)), Log: os.Stderr}
	wd.Write([]byte(failover.WatchdogLine(time.Time{}, time.Now(), 0)))
	fmt.Println("watchdog", wd.Pid())
	store := failover.NewStore(cli, c.Spec.Token, c.Settings)
	store.Dial = func(eps []string) (*clientv3.Client, error) { return failover.NewClient(eps, tlsf, dial) }
	r := &failover.Runner{
		Node: c.Node, Standbys: c.Standbys, Settings: c.Settings, Spec: c.Spec,
		Store:  store,
		Fencer: failover.ProcessFencer{DataDir: l.DataDir(c.Node)},
		PG: &failover.SQLPG{
			Connect: func(ctx context.Context) (*pgx.Conn, error) { return l.Conn(ctx, c.Node) },
			DataDir: l.DataDir(c.Node),
			Slots:   slotsBut(l, c.Node),
			Restart: func(ctx context.Context) error { return l.Start(ctx, c.Node) },
			DoRejoin: func(ctx context.Context, holder string) error {
				_, err := live.Rejoin(ctx, l.Target(), c.Node, live.RoleOptions{Out: os.Stderr})
				return err
			},
		},
		Watchdog: wd,
		Log:      os.Stderr,
		StateDir: c.Spec.DataDir,
	}
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		for range t.C {
			rep := r.Report()
			b, _ := json.Marshal(rep)
			os.WriteFile(filepath.Join(c.Spec.DataDir, "report.json.tmp"), b, 0o644)
			os.Rename(filepath.Join(c.Spec.DataDir, "report.json.tmp"), filepath.Join(c.Spec.DataDir, "report.json"))
		}
	}()
	r.Run(ctx)
	wd.Close() // a clean stop: the watchdog fences at the last deadline only if still armed
	return 0
}

func slotsBut(l *lab.Lab, node string) []string {
	var out []string
	for _, n := range l.Cluster.Nodes {
		if n.Name != node {
			out = append(out, n.Slot())
		}
	}
	return out
}

// slowConn adds d of latency each way without limiting throughput (what
// tc netem's delay does): every chunk read from the network is delivered
// d after it arrived, and every chunk written leaves d after it was
// written, in order, while later chunks keep flowing behind it.
type slowConn struct {
	net.Conn
	d      time.Duration
	in     chan chunk
	out    chan chunk
	buf    []byte
	rerr   error
	closed chan struct{}
	once   sync.Once
}

type chunk struct {
	at  time.Time
	b   []byte
	err error
}

func newSlowConn(c net.Conn, d time.Duration) *slowConn {
	s := &slowConn{Conn: c, d: d, in: make(chan chunk, 1024), out: make(chan chunk, 1024), closed: make(chan struct{})}
	go func() {
		for {
			b := make([]byte, 32<<10)
			n, err := c.Read(b)
			s.in <- chunk{at: time.Now().Add(d), b: b[:n], err: err}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		for {
			select {
			case ch := <-s.out:
				time.Sleep(time.Until(ch.at))
				if _, err := c.Write(ch.b); err != nil {
					return
				}
			case <-s.closed:
				return
			}
		}
	}()
	return s
}

func (s *slowConn) Read(p []byte) (int, error) {
	for len(s.buf) == 0 {
		if s.rerr != nil {
			return 0, s.rerr
		}
		ch := <-s.in
		time.Sleep(time.Until(ch.at))
		s.buf, s.rerr = ch.b, ch.err
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

func (s *slowConn) Write(p []byte) (int, error) {
	select {
	case s.out <- chunk{at: time.Now().Add(s.d), b: append([]byte(nil), p...)}:
		return len(p), nil
	case <-s.closed:
		return 0, net.ErrClosed
	}
}

func (s *slowConn) Close() error {
	s.once.Do(func() { close(s.closed) })
	return s.Conn.Close()
}

func slicesWithout(env []string, key string) []string {
	var out []string
	for _, e := range env {
		if !strings.HasPrefix(e, key+"=") {
			out = append(out, e)
		}
	}
	return out
}

// cluster is the suite's world.
type cluster struct {
	t       testing.TB
	l       *lab.Lab
	dir     string
	secret  string
	members []failover.MemberAddr
	agents  map[string]*agentProc
	mu      sync.Mutex
	set     failover.Settings
	// clientDelay: agents whose etcd connection is slowed (the soak).
	clientDelay map[string]time.Duration
}

type agentProc struct {
	cmd      *exec.Cmd
	watchdog int
	log      string
}

var names = []string{"db", "db-replica", "app"}

func enabled(t testing.TB) {
	if os.Getenv("UNDERSTUDY_FAULTS") == "" {
		t.Skip("the failover fault suite takes minutes: run it with UNDERSTUDY_FAULTS=1 (scripts/test-failover-faults)")
	}
}

func newCluster(t testing.TB, mod func(*failover.Settings)) *cluster {
	return newClusterDelay(t, mod, nil)
}

func newClusterDelay(t testing.TB, mod func(*failover.Settings), delay map[string]time.Duration) *cluster {
	enabled(t)
	l := labtest.Up(t, labtest.Options{NetNS: true})
	c := &cluster{t: t, l: l, dir: t.TempDir(), secret: failover.NewSecret(), agents: map[string]*agentProc{}, set: failover.Defaults(), clientDelay: map[string]time.Duration{}}
	if mod != nil {
		mod(&c.set)
	}
	for k, v := range delay {
		c.clientDelay[k] = v
	}
	os.Chmod(c.dir, 0o755)
	os.WriteFile(filepath.Join(c.dir, "secret"), []byte(c.secret), 0o600)
	c.members = []failover.MemberAddr{{Name: "db", IP: l.NetNS.Addr(0)}, {Name: "db-replica", IP: l.NetNS.Addr(1)}, {Name: "app", IP: l.NetNS.OutsiderAddr()}}
	t.Cleanup(func() {
		for n := range c.agents {
			c.stopAgent(n, syscall.SIGKILL)
		}
		if t.Failed() {
			for _, n := range names {
				b, _ := os.ReadFile(filepath.Join(c.dir, n+".agent.log"))
				t.Logf("--- %s agent log (tail):\n%s", n, tail(string(b), 40))
			}
		}
	})
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, n := range names {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = c.startAgent(n) }()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	c.waitHolder("db", 30*time.Second)
	return c
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (c *cluster) nsPath(name string) string {
	if name == "app" {
		return c.l.NodeNetNS("")
	}
	return c.l.NodeNetNS(name)
}

func (c *cluster) spec(name string) failover.MemberSpec {
	s := failover.MemberSpec{Name: name, Members: c.members, DataDir: filepath.Join(c.dir, "etcd-"+name), Token: "faults", LogFile: filepath.Join(c.dir, name+".etcd.log")}
	if name != "app" { // as failover.SpecFor gives the database servers' members
		s.ElectionMs = failover.DatabaseMemberElectionMs
	}
	return s
}

// startAgent starts the agent of a server (the witness's: its member only).
func (c *cluster) startAgent(name string) error {
	cfg := agentConfig{Spec: c.spec(name), SecretFile: filepath.Join(c.dir, "secret"), LabDir: c.l.Dir, Settings: c.set, ClientDelay: c.clientDelay[name]}
	if name != "app" {
		cfg.Node = name
		for _, n := range []string{"db", "db-replica"} {
			if n != name {
				cfg.Standbys = append(cfg.Standbys, n)
			}
		}
	}
	js, _ := json.Marshal(cfg)
	cmd := exec.Command("nsenter", "--net="+c.nsPath(name), "--", os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), agentEnv+"="+string(js))
	logPath := filepath.Join(c.dir, name+".agent.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd.Stderr = logf
	out, _ := cmd.StdoutPipe()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	a := &agentProc{cmd: cmd, log: logPath}
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		logf.Close()
	}()
	timeout := time.After(60 * time.Second)
	for want := 1 + map[bool]int{true: 1}[name != "app"]; want > 0; want-- {
		select {
		case l, ok := <-lines:
			if !ok {
				cmd.Wait()
				b, _ := os.ReadFile(logPath)
				return fmt.Errorf("agent %s ended: %s", name, tail(string(b), 20))
			}
			if p, found := strings.CutPrefix(l, "watchdog "); found {
				a.watchdog, _ = strconv.Atoi(p)
			}
		case <-timeout:
			return fmt.Errorf("agent %s not ready in 60 s", name)
		}
	}
	go func() {
		for range lines {
		}
	}()
	c.mu.Lock()
	c.agents[name] = a
	c.mu.Unlock()
	return nil
}

// stopAgent signals an agent's process group (the agent and its watchdog).
func (c *cluster) stopAgent(name string, sig syscall.Signal) {
	c.mu.Lock()
	a := c.agents[name]
	delete(c.agents, name)
	c.mu.Unlock()
	if a == nil {
		return
	}
	syscall.Kill(-a.cmd.Process.Pid, sig)
	done := make(chan struct{})
	go func() { a.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// signalAgent sends a signal to the agent process alone (SIGSTOP/SIGCONT).
func (c *cluster) signalAgent(name string, sig syscall.Signal) {
	c.mu.Lock()
	a := c.agents[name]
	c.mu.Unlock()
	if a != nil {
		a.cmd.Process.Signal(sig)
	}
}

func (c *cluster) report(name string) failover.Report {
	var r failover.Report
	b, _ := os.ReadFile(filepath.Join(c.dir, "etcd-"+name, "report.json"))
	json.Unmarshal(b, &r)
	return r
}

func (c *cluster) waitHolder(name string, timeout time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	labtest.WaitFor(c.t, timeout, name+" to hold the lease", func() bool {
		r := c.report(name)
		return r.Holds && time.Since(r.At) < time.Second
	})
	return time.Since(start)
}

// pgPIDs is a node's postmaster and its children.
func (c *cluster) pgPIDs(node string) []int {
	b, err := os.ReadFile(filepath.Join(c.l.DataDir(node), "postmaster.pid"))
	if err != nil {
		return nil
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(line)
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return nil
	}
	pids := []int{pid}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
		s := string(st)
		if i := strings.LastIndexByte(s, ')'); i > 0 {
			if f := strings.Fields(s[i+1:]); len(f) > 1 && f[1] == strconv.Itoa(pid) {
				pids = append(pids, p)
			}
		}
	}
	return pids
}

func (c *cluster) signalPG(node string, sig syscall.Signal) {
	for _, p := range c.pgPIDs(node) {
		syscall.Kill(p, sig)
	}
}

// killServer is a server's death: every process of it (agent, member,
// watchdog, PostgreSQL) SIGKILLed and its link down.
func (c *cluster) killServer(node string) {
	i := map[string]int{"db": 0, "db-replica": 1}[node]
	cut(c.t, c.l, c.l.NetNS.CutCommand(i, false))
	c.stopAgent(node, syscall.SIGKILL)
	c.signalPG(node, syscall.SIGKILL)
}

func cut(t testing.TB, l *lab.Lab, argv []string) {
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v %s", argv, err, out)
	}
}

// bootReadOnly starts a node the way a server with failover on boots it:
// read-only (standby.signal), so only its agent, holding the lease, makes
// it writable.
func (c *cluster) bootReadOnly(node string) {
	c.t.Helper()
	os.WriteFile(filepath.Join(c.l.DataDir(node), "standby.signal"), nil, 0o600)
	uid, gid := pgUID(c.l.DataDir(node))
	os.Chown(filepath.Join(c.l.DataDir(node), "standby.signal"), uid, gid)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.l.Start(ctx, node); err != nil {
		c.t.Fatal(err)
	}
}

func pgUID(dir string) (int, int) {
	st, err := os.Stat(dir)
	if err != nil {
		return 0, 0
	}
	s := st.Sys().(*syscall.Stat_t)
	return int(s.Uid), int(s.Gid)
}

// iptables runs in a node's namespace (rules go with the namespace).
func (c *cluster) iptables(name string, args ...string) {
	c.t.Helper()
	argv := append([]string{"nsenter", "--net=" + c.nsPath(name), "--", "iptables"}, args...)
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		c.t.Fatalf("%v: %v %s", argv, err, out)
	}
}

// --- the app writer and its ledger ---

type ack struct {
	id         int64
	lsn        pgops.LSN // WAL insert position after the row
	node       string
	start, end time.Time
}

type writer struct {
	mu     sync.Mutex
	acks   []ack
	fails  int
	stop   context.CancelFunc
	done   chan struct{}
	nodeOf map[string]string // port → node
}

// startWriter inserts a row every 20 ms through the lab's app connection
// string (every node, target_session_attrs=read-write, over the nodes'
// sockets, as an app on the same server would), recording each
// acknowledged commit with the node that took it.
func (c *cluster) startWriter() *writer {
	c.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &writer{stop: cancel, done: make(chan struct{}), nodeOf: map[string]string{}}
	for _, n := range c.l.Cluster.Nodes {
		w.nodeOf[strconv.Itoa(n.Port)] = n.Name
	}
	labtest.Exec(c.t, c.l, "db", `CREATE TABLE IF NOT EXISTS faults_ledger (id bigint PRIMARY KEY, node text, at timestamptz DEFAULT clock_timestamp())`)
	conn := c.l.AppConnString() + " connect_timeout=1"
	go func() {
		defer close(w.done)
		var pc *pgx.Conn
		var id int64
		for ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
			if pc == nil || pc.IsClosed() {
				cctx, cc := context.WithTimeout(ctx, 2*time.Second)
				var err error
				pc, err = pgx.Connect(cctx, conn)
				cc()
				if err != nil {
					pc = nil
					w.mu.Lock()
					w.fails++
					w.mu.Unlock()
					continue
				}
			}
			id++
			start := time.Now()
			qctx, qc := context.WithTimeout(ctx, 2*time.Second)
			var port, lsn string
			err := pc.QueryRow(qctx, `INSERT INTO faults_ledger (id, node) VALUES ($1, current_setting('port')) RETURNING current_setting('port'), pg_current_wal_insert_lsn()::text`, id).Scan(&port, &lsn)
			qc()
			if err != nil {
				pc.Close(context.Background())
				pc = nil
				w.mu.Lock()
				w.fails++
				w.mu.Unlock()
				continue
			}
			w.mu.Lock()
			l, _ := pgops.ParseLSN(lsn)
			w.acks = append(w.acks, ack{id: id, lsn: l, node: w.nodeOf[port], start: start, end: time.Now()})
			w.mu.Unlock()
		}
		if pc != nil {
			pc.Close(context.Background())
		}
	}()
	return w
}

func (w *writer) finish() []ack {
	w.stop()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]ack(nil), w.acks...)
}

func (w *writer) finishedSoFar() []ack {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]ack(nil), w.acks...)
}

func (w *writer) firstAckBy(node string, after time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range w.acks {
		if a.node == node && a.end.After(after) {
			return a.end, true
		}
	}
	return time.Time{}, false
}

// checkLedger asserts on the acknowledged commits: the nodes that took
// them took turns (acks sorted by time change node at most `switches`
// times, and no ack of one node overlaps an ack of another: never two
// writable nodes), and every acknowledged row is on the final primary,
// except (async) rows acknowledged in a fault's window: from one renewal
// before the fault to the old primary's fence point (TTL-FenceMargin
// after its last renewal), the writes etcd never heard of. faults nil: no
// loss allowed at all.
func (c *cluster) checkLedger(acks []ack, final string, switches int, faults []time.Time) (lost int) {
	c.t.Helper()
	sort.Slice(acks, func(i, j int) bool { return acks[i].end.Before(acks[j].end) })
	changes := 0
	for i := 1; i < len(acks); i++ {
		if acks[i].node != acks[i-1].node {
			changes++
			if acks[i].start.Before(acks[i-1].end) {
				c.t.Errorf("overlapping acknowledgements: %s took id %d (%s-%s) while %s took id %d (%s-%s)",
					acks[i-1].node, acks[i-1].id, acks[i-1].start.Format("05.000"), acks[i-1].end.Format("05.000"),
					acks[i].node, acks[i].id, acks[i].start.Format("05.000"), acks[i].end.Format("05.000"))
			}
		}
	}
	if changes > switches {
		c.t.Errorf("the writing node changed %d times, expected at most %d: two nodes took writes in turn", changes, switches)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pc, err := c.l.Conn(ctx, final)
	if err != nil {
		c.t.Fatal(err)
	}
	defer pc.Close(ctx)
	have := map[int64]bool{}
	rows, err := pc.Query(ctx, `SELECT id FROM faults_ledger`)
	if err != nil {
		c.t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		rows.Scan(&id)
		have[id] = true
	}
	window := c.set.TTL - c.set.FenceMargin
	type span struct {
		n      int
		lo, hi pgops.LSN
	}
	per := make([]span, len(faults))
	for _, a := range acks {
		if have[a.id] {
			continue
		}
		lost++
		in := -1
		for i, f := range faults {
			if a.end.After(f.Add(-c.set.RenewEvery-time.Second)) && a.end.Before(f.Add(window+time.Second)) {
				in = i
			}
		}
		if in < 0 {
			c.t.Errorf("acknowledged commit %d (by %s at %s) is lost, outside any fault's window", a.id, a.node, a.end.Format("15:04:05.000"))
			continue
		}
		p := &per[in]
		if p.n == 0 || a.lsn < p.lo {
			p.lo = a.lsn
		}
		p.hi = max(p.hi, a.lsn)
		p.n++
	}
	var parts []string
	for i, p := range per {
		if p.n > 0 {
			parts = append(parts, fmt.Sprintf("fault %d: %d lost over %d bytes of WAL", i+1, p.n, uint64(p.hi-p.lo)))
		}
	}
	c.t.Logf("ledger: %d acknowledged commits, %d node changes, %d lost %v", len(acks), changes, lost, parts)
	return lost
}

func failoverFacts(c *cluster, node string) (pgops.FailoverFacts, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	pc, err := c.l.Conn(ctx, node)
	if err != nil {
		return pgops.FailoverFacts{}, err
	}
	defer pc.Close(ctx)
	return pgops.ReadFailoverFacts(ctx, pc)
}
