package failover_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/understudy-dev/understudy/failover"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/understudy-dev/understudy/lab"
)

// The etcd tests run three real members, each a process in its own network
// namespace on a switch of its own (lab.NetNS, 10.211.7.0/24), with TLS
// from a secret, the way the agents and the witness embed them. The test's
// clients dial from inside a namespace, as that server's agent would.

const memberEnv = "UNDERSTUDY_FAILOVER_TEST_MEMBER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(memberEnv); spec != "" {
		os.Exit(runTestMember(spec))
	}
	if dir := os.Getenv(watchdogEnv); dir != "" {
		os.Exit(runTestWatchdog(dir))
	}
	os.Exit(m.Run())
}

// runTestMember is the member process: the spec in the environment, the
// secret in a file, "ready <how it joined>" on stdout, and a clean stop on
// SIGTERM.
func runTestMember(specJSON string) int {
	var s failover.MemberSpec
	if err := json.Unmarshal([]byte(specJSON), &s); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	text, err := os.ReadFile(os.Getenv(memberEnv + "_SECRET"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	secret, err := failover.ParseSecret(string(text))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	m, err := failover.StartMember(sctx, s, secret, nil)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready", m.Joined)
	<-ctx.Done()
	m.Close()
	return 0
}

type trio struct {
	t      *testing.T
	ns     *lab.NetNS
	dir    string
	secret string
	specs  []failover.MemberSpec
	procs  []*exec.Cmd
}

var trioNames = []string{"db", "db-replica", "app"}

func newTrio(t *testing.T) *trio {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: this test creates network namespaces (run the tests as root, as CI does)")
	}
	for _, tool := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (iproute2, util-linux)", tool)
		}
	}
	b := make([]byte, 2)
	rand.Read(b)
	tr := &trio{t: t, ns: &lab.NetNS{ID: hex.EncodeToString(b), Nodes: 3}, dir: t.TempDir(), secret: failover.NewSecret()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t.Cleanup(func() {
		for i := range tr.procs {
			tr.stop(i, syscall.SIGKILL)
		}
		if err := tr.ns.Down(context.Background()); err != nil {
			t.Errorf("removing the namespaces: %v", err)
		}
	})
	if err := tr.ns.Up(ctx); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tr.dir, "secret"), []byte(tr.secret), 0o600); err != nil {
		t.Fatal(err)
	}
	var members []failover.MemberAddr
	for i, n := range trioNames {
		members = append(members, failover.MemberAddr{Name: n, IP: tr.ns.Addr(i)})
	}
	for _, n := range trioNames {
		tr.specs = append(tr.specs, failover.MemberSpec{Name: n, Members: members, DataDir: filepath.Join(tr.dir, n), Token: "test-" + tr.ns.ID,
			LogFile: filepath.Join(tr.dir, n+".log")})
	}
	tr.procs = make([]*exec.Cmd, 3)
	errs := make(chan error, 3)
	for i := range trioNames {
		go func() { _, err := tr.start(i); errs <- err }()
	}
	for range trioNames {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	return tr
}

// start runs member i in its namespace and waits for it to be ready.
func (tr *trio) start(i int) (string, error) {
	spec, _ := json.Marshal(tr.specs[i])
	cmd := exec.Command("nsenter", "--net="+tr.ns.Path(i), "--", os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), memberEnv+"="+string(spec), memberEnv+"_SECRET="+filepath.Join(tr.dir, "secret"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	tr.procs[i] = cmd
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		for sc.Scan() {
		}
	}()
	select {
	case l, ok := <-line:
		if !ok || !strings.HasPrefix(l, "ready") {
			cmd.Wait()
			return "", fmt.Errorf("member %s did not start: %s", trioNames[i], stderr.String())
		}
		return strings.TrimPrefix(l, "ready "), nil
	case <-time.After(60 * time.Second):
		return "", fmt.Errorf("member %s not ready in 60 s: %s", trioNames[i], stderr.String())
	}
}

// stop signals member i's process and waits for it.
func (tr *trio) stop(i int, sig syscall.Signal) {
	c := tr.procs[i]
	if c == nil {
		return
	}
	// nsenter execs, so the process is the member itself.
	c.Process.Signal(sig)
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.Process.Kill()
		<-done
	}
	tr.procs[i] = nil
}

// client is an etcd client dialling from member i's namespace, with a
// certificate from the trio's secret (or another's).
func (tr *trio) client(i int, secret string) *clientv3.Client {
	tr.t.Helper()
	sec, err := failover.ParseSecret(secret)
	if err != nil {
		tr.t.Fatal(err)
	}
	f, err := failover.WriteTLS(filepath.Join(tr.t.TempDir(), "tls"), sec, "test-client", []net.IP{net.ParseIP(tr.ns.Addr(i))}, time.Now())
	if err != nil {
		tr.t.Fatal(err)
	}
	path := tr.ns.Path(i)
	c, err := failover.NewClient(tr.specs[i].ClientURLs()[:1], f, func(ctx context.Context, addr string) (net.Conn, error) {
		return lab.DialIn(ctx, path, "tcp", addr)
	})
	if err != nil {
		tr.t.Fatal(err)
	}
	tr.t.Cleanup(func() { c.Close() })
	return c
}

func (tr *trio) store(i int) *failover.Store {
	return failover.NewStore(tr.client(i, tr.secret), tr.specs[i].Token, failover.Defaults())
}

func (tr *trio) cut(i int, cut bool) {
	tr.t.Helper()
	argv := tr.ns.CutCommand(i, !cut)
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		tr.t.Fatalf("%v: %v %s", argv, err, out)
	}
}

func rss(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "VmRSS:"))
		}
	}
	return "?"
}

// The lease's life on three real members: the primary's agent takes it
// and publishes its position, the standby cannot take it while held, the
// holder stops renewing (its server dies) and etcd frees it no earlier than
// TTL after the last renewal was sent, the standby takes it, the old
// holder's renewals then fail, and a planned handover frees it at once.
func TestEtcdLease(t *testing.T) {
	tr := newTrio(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	db, replica := tr.store(0), tr.store(1)
	pos := failover.Position{Node: "db", Timeline: 1, LSN: 0x3000000}
	h, err := db.Acquire(ctx, "db", 0, pos, time.Now)
	if err != nil {
		t.Fatalf("the primary's agent could not take the free lease: %v", err)
	}
	st, err := replica.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Holder != "db" || st.Position.LSN != pos.LSN || st.PositionRev == 0 {
		t.Fatalf("the standby reads %+v", st)
	}
	if _, err := replica.Acquire(ctx, "db-replica", st.PositionRev, failover.Position{Node: "db-replica"}, time.Now); !errors.Is(err, failover.ErrTaken) {
		t.Fatalf("the standby took a held lease: %v", err)
	}
	for range 3 {
		time.Sleep(time.Second)
		pos.LSN += 1000
		if h, err = db.Renew(ctx, h, &pos, time.Now); err != nil {
			t.Fatal(err)
		}
	}
	st, _ = replica.Read(ctx)
	if st.Position.LSN != pos.LSN {
		t.Fatalf("published %s, read %s", pos.LSN, st.Position.LSN)
	}
	// A basis read before the last publication is refused.
	stale := st.PositionRev
	h, _ = db.Renew(ctx, h, &pos, time.Now)
	last := h.Sent
	// The holder stops renewing.
	var freed time.Time
	for time.Since(last) < 15*time.Second {
		st, err = replica.Read(ctx)
		if err == nil && st.Holder == "" {
			freed = time.Now()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if freed.IsZero() {
		t.Fatal("the lease was not freed 15 s after the last renewal")
	}
	after := freed.Sub(last)
	t.Logf("freed %s after the last renewal was sent (TTL %s)", after.Round(time.Millisecond), failover.Defaults().TTL)
	if after < failover.Defaults().TTL {
		t.Fatalf("etcd freed the lease %s after the last renewal, before its TTL: the holder's fence deadline would not be safe", after)
	}
	if _, err := replica.Acquire(ctx, "db-replica", stale, failover.Position{Node: "db-replica", Timeline: 2}, time.Now); !errors.Is(err, failover.ErrTaken) {
		t.Fatalf("an acquire on a stale position went through: %v", err)
	}
	h2, err := replica.Acquire(ctx, "db-replica", st.PositionRev, failover.Position{Node: "db-replica", Timeline: 2, LSN: pos.LSN}, time.Now)
	if err != nil {
		t.Fatalf("the standby could not take the freed lease: %v", err)
	}
	if _, err := db.Renew(ctx, h, &pos, time.Now); !errors.Is(err, failover.ErrLost) {
		t.Fatalf("the old holder renewed an expired lease: %v", err)
	}
	// A planned handover back: free at once, the target recorded.
	if err := replica.Resign(ctx, h2, "db"); err != nil {
		t.Fatal(err)
	}
	st, _ = db.Read(ctx)
	if st.Holder != "" || st.Handover != "db" {
		t.Fatalf("after the handover: %+v", st)
	}
	if _, err := db.Acquire(ctx, "db", st.PositionRev, failover.Position{Node: "db", Timeline: 3}, time.Now); err != nil {
		t.Fatalf("the handover's target could not take the lease: %v", err)
	}
	st, _ = db.Read(ctx)
	if st.Holder != "db" || st.Handover != "" {
		t.Fatalf("after taking over: %+v", st)
	}
	// The switchover's handover, done by a third party: only while the
	// key names the old holder; then only the target may take the lease.
	if err := replica.HandOver(ctx, "db-replica", "db"); err == nil {
		t.Fatal("handed over a lease db-replica does not hold")
	}
	if err := replica.HandOver(ctx, "db", "db-replica"); err != nil {
		t.Fatal(err)
	}
	st, _ = db.Read(ctx)
	if st.Holder != "" || st.Handover != "db-replica" {
		t.Fatalf("after the switchover's handover: %+v", st)
	}
	if _, err := replica.Acquire(ctx, "db-replica", st.PositionRev, failover.Position{Node: "db-replica", Timeline: 4}, time.Now); err != nil {
		t.Fatalf("the switchover's target could not take the handed-over lease: %v", err)
	}
	for i := range trioNames {
		t.Logf("member %s RSS %s", trioNames[i], rss(tr.procs[i].Process.Pid))
	}
}

// Quorum: with one member cut off the lease still renews (no failover);
// with two, the holder's renewals and every quorum read fail within the
// timeout, and all works again once the links are back.
func TestEtcdQuorumLoss(t *testing.T) {
	tr := newTrio(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	db := tr.store(0)
	h, err := db.Acquire(ctx, "db", 0, failover.Position{Node: "db", Timeline: 1}, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	tr.cut(2, true) // the witness is gone (maybe etcd's leader: an election)
	// Renew as the runner does: every RenewEvery, and again on the next
	// round (100 ms) after a failure.
	var gap time.Duration
	for start := time.Now(); time.Since(start) < 8*time.Second; {
		prev := h.Sent
		if h, err = db.Renew(ctx, h, nil, time.Now); err != nil {
			t.Logf("a renewal failed: %v", err)
			time.Sleep(100 * time.Millisecond)
		} else {
			time.Sleep(failover.Defaults().RenewEvery)
		}
		gap = max(gap, h.Sent.Sub(prev))
	}
	if s := failover.Defaults(); gap >= s.TTL-s.FenceMargin {
		t.Fatalf("with one member down, %s passed between two renewals: the holder would have fenced", gap)
	}
	t.Logf("one member down: longest gap between renewals %s", gap.Round(time.Millisecond))
	tr.cut(1, true) // and the standby's server: db alone
	// A member that leads etcd keeps serving renewals until it notices it
	// lost the quorum (CheckQuorum, within two election timeouts); the
	// majority's new leader extends every lease by an election timeout when
	// it takes over, so those late renewals never outlive the lease there.
	cutAt := time.Now()
	var lastOK time.Time
	for time.Since(cutAt) < 7*time.Second {
		if _, err := db.Renew(ctx, h, nil, time.Now); err == nil {
			lastOK = time.Now()
		}
		time.Sleep(100 * time.Millisecond)
	}
	if d := lastOK.Sub(cutAt); d > 6*time.Second { // two election timeouts and a second
		t.Fatalf("a member without a quorum renewed the lease %s after it was cut off", d)
	}
	t.Logf("alone: last renewal accepted %s after the cut", max(0, lastOK.Sub(cutAt)).Round(time.Millisecond))
	if _, err := db.Read(ctx); err == nil {
		t.Fatal("a quorum read succeeded without a quorum")
	}
	tr.cut(1, false)
	tr.cut(2, false)
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := db.Read(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no quorum 20 s after the links came back: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A member that loses its data directory rejoins: it is removed and added
// back by the other two, then catches up with the keys.
func TestEtcdMemberLosesData(t *testing.T) {
	tr := newTrio(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	db := tr.store(0)
	if _, err := db.Acquire(ctx, "db", 0, failover.Position{Node: "db", Timeline: 1, LSN: 42}, time.Now); err != nil {
		t.Fatal(err)
	}
	tr.stop(1, syscall.SIGKILL)
	if err := os.RemoveAll(tr.specs[1].DataDir); err != nil {
		t.Fatal(err)
	}
	joined, err := tr.start(1)
	if err != nil {
		t.Fatal(err)
	}
	if joined != "rejoined" {
		t.Fatalf("the member with no data started as %q, not rejoined", joined)
	}
	// Its own member answers with the keys once it caught up.
	c := tr.client(1, tr.secret)
	deadline := time.Now().Add(20 * time.Second)
	for {
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		r, err := c.Status(cctx, tr.specs[1].ClientURL(tr.specs[1].Members[1]))
		ccancel()
		if err == nil && len(r.Errors) == 0 && r.Header.Revision > 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rejoined member is not healthy: %v %+v", err, r)
		}
		time.Sleep(200 * time.Millisecond)
	}
	list, err := c.MemberList(ctx)
	if err != nil || len(list.Members) != 3 {
		t.Fatalf("members after the rejoin: %v %v", list, err)
	}
	// And a restart on its data now needs nothing.
	tr.stop(1, syscall.SIGTERM)
	if joined, err := tr.start(1); err != nil || joined != "data" {
		t.Fatalf("restart on its data: %q %v", joined, err)
	}
}

// TLS: a client with a certificate from another secret is refused, a
// client without TLS is refused, and the member listens only on its
// private IP.
func TestEtcdTLS(t *testing.T) {
	tr := newTrio(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	other := failover.NewStore(tr.client(0, failover.NewSecret()), tr.specs[0].Token, failover.Defaults())
	if _, err := other.Read(ctx); err == nil {
		t.Fatal("a certificate from another secret was accepted")
	}
	// Plain HTTP to the client port: the TLS listener drops it.
	conn, err := lab.DialIn(ctx, tr.ns.Path(0), "tcp", net.JoinHostPort(tr.ns.Addr(0), "2379"))
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
	buf := make([]byte, 256)
	n, _ := conn.Read(buf)
	conn.Close()
	if strings.Contains(string(buf[:n]), `"health":"true"`) {
		t.Fatal("etcd answered plain HTTP")
	}
	if _, err := lab.DialIn(ctx, tr.ns.Path(0), "tcp", "127.0.0.1:2379"); err == nil {
		t.Fatal("the member listens on loopback too; it must listen on its private IP only")
	}
	if _, err := tr.store(0).Read(ctx); err != nil {
		t.Fatalf("the trio's own certificate was refused: %v", err)
	}
}
