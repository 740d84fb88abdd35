package live

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/pgops"
)

// A reading of a healthy cluster of the given nodes, the first the primary,
// built by hand: what the switchover decision sees.
func healthyStatus(names ...string) (*Status, pgconf.Cluster) {
	c := pgconf.Cluster{InitialPrimary: names[0], ReplUser: "replicator", WALCap: "1GB", Major: 15}
	settings := map[string]string{"wal_level": "replica", "hot_standby": "on", "wal_log_hints": "on", "max_slot_wal_keep_size": "1024", "max_connections": "100"}
	st := &Status{Primary: names[0]}
	for i, n := range names {
		node := pgconf.Node{Name: n, Addr: "10.211.7." + string(rune('0'+i+1)), Port: 5432}
		c.Nodes = append(c.Nodes, node)
		ns := NodeStatus{Name: n, Addr: node.Addr, Port: 5432, Reachable: true, Role: RoleStandby, HBA: map[string]HBAVerdict{},
			Facts: &pgops.Facts{SystemIdentifier: "7", Timeline: 1, InRecovery: true, DataChecksums: true, Settings: settings}}
		if i == 0 {
			ns.Role, ns.Facts.InRecovery = RolePrimary, false
		}
		st.Nodes = append(st.Nodes, ns)
	}
	for _, n := range c.Nodes[1:] {
		st.Nodes[0].Replication = append(st.Nodes[0].Replication, pgops.Replication{Name: n.Name, State: "streaming"})
		st.Nodes[0].Slots = append(st.Nodes[0].Slots, pgops.Slot{Name: n.Slot(), Active: true, WALStatus: "reserved"})
	}
	return st, c
}

func TestDecideSwitchover(t *testing.T) {
	st, c := healthyStatus("db", "db-replica", "db-3")
	p, err := DecideSwitchover(st, c, "db-replica", RoleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"prepare db", "candidate-slots db-replica [understudy_db understudy_db_3]", "fast-retry db-replica", "checkpoint db",
		"stop-primary db", "promote db-replica", "follow db", "repoint db-3", "await-stream db", "await-stream db-3"}
	if got := stepKinds(p.Steps); strings.Join(got, "; ") != strings.Join(want, "; ") || p.Old != "db" {
		t.Errorf("plan from %s:\n got %q\nwant %q", p.Old, got, want)
	}
	if s := p.Steps[4]; !strings.Contains(s.Effect, "writes pause") {
		t.Errorf("the stop's effect: %q", s.Effect)
	}
	// With the backup agent's slot on the candidate, the slot moves with
	// the standby role: made on the old primary before the stop, dropped
	// on the new primary at the end.
	st, c = healthyStatus("db", "db-replica")
	st.Nodes[1].Slots = []pgops.Slot{{Name: BackupSlot, Active: true}}
	p, err = DecideSwitchover(st, c, "db-replica", RoleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want = []string{"prepare db", "candidate-slots db-replica [understudy_db]", "backup-slot-ahead db understudy_backup", "fast-retry db-replica", "checkpoint db",
		"stop-primary db", "promote db-replica", "follow db", "await-stream db", "backup-slot-move db-replica understudy_backup"}
	if got := stepKinds(p.Steps); strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("plan with the backup slot on the candidate:\n got %q\nwant %q", got, want)
	}
	// The backup slot on the old primary (the agent had no standby) needs
	// no step: that node is the standby after the swap.
	st, c = healthyStatus("db", "db-replica")
	st.Nodes[0].Slots = append(st.Nodes[0].Slots, pgops.Slot{Name: BackupSlot, Active: true})
	if p, err = DecideSwitchover(st, c, "db-replica", RoleOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, s := range p.Steps {
		if s.Slot == BackupSlot {
			t.Errorf("a backup slot step although the slot is on the old primary: %+v", s)
		}
	}
	refusals := []struct {
		name string
		edit func(*Status)
		to   string
		want string
	}{
		{"candidate is the primary", func(*Status) {}, "db", "already the primary"},
		{"no such node", func(*Status) {}, "nope", "no node"},
		{"candidate not streaming", func(s *Status) { s.Nodes[0].Replication[0].State = "catchup" }, "db-replica", "not streaming"},
		{"candidate too far behind", func(s *Status) { s.Nodes[0].Replication[0].LagBytes = 64 << 20 }, "db-replica", "behind"},
		{"candidate down", func(s *Status) { s.Nodes[1].Role, s.Nodes[1].Reachable = RoleDown, false }, "db-replica", "not a running standby"},
		{"no single primary", func(s *Status) { s.Primary = "" }, "db-replica", "no single writable primary"},
		{"another cluster", func(s *Status) { s.Nodes[1].Facts.SystemIdentifier = "8" }, "db-replica", "other-cluster"},
		{"candidate's pg_hba shuts a node out", func(s *Status) {
			s.Nodes[1].HBA["db"] = HBAVerdict{Allowed: false}
		}, "db-replica", "could not follow it"},
	}
	for _, r := range refusals {
		st, c := healthyStatus("db", "db-replica", "db-3")
		r.edit(st)
		_, err := DecideSwitchover(st, c, r.to, RoleOptions{})
		if err == nil || !strings.Contains(err.Error(), r.want) || !strings.Contains(err.Error(), "nothing was changed") {
			t.Errorf("%s: %v (want %q)", r.name, err, r.want)
		}
	}
}

// stepKinds renders a plan as "kind node [slots] slot" lines.
func stepKinds(steps []Step) []string {
	var out []string
	for _, s := range steps {
		line := string(s.Kind) + " " + s.Node
		if len(s.Slots) > 0 {
			line += fmt.Sprintf(" %v", s.Slots)
		}
		if s.Slot != "" {
			line += " " + s.Slot
		}
		out = append(out, line)
	}
	return out
}

// The executor runs the plan's steps and nothing else: a plan cut short
// after the preparation stops there; a follow step alone runs only its
// script and its start.
func TestExecuteSwitchoverWalksThePlan(t *testing.T) {
	st, c := healthyStatus("db", "db-replica")
	p, err := DecideSwitchover(st, c, "db-replica", RoleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fake := &recording{}
	cut := &SwitchoverPlan{Old: p.Old, To: p.To, Steps: p.Steps[:1]}
	if _, err := ExecuteSwitchover(context.Background(), Target{Cluster: c, Control: fake}, cut, RoleOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(fake.calls, "; "); got != "prepare db,db-replica" {
		t.Errorf("a plan of one preparation ran: %s", got)
	}
	var follow Step
	for _, s := range p.Steps {
		if s.Kind == StepFollow {
			follow = s
		}
	}
	fake = &recording{}
	only := &SwitchoverPlan{Old: p.Old, To: p.To, Steps: []Step{follow}}
	if _, err := ExecuteSwitchover(context.Background(), Target{Cluster: c, Control: fake}, only, RoleOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(fake.calls, "; "); got != "run db; start db" {
		t.Errorf("a plan of one follow step ran: %s", got)
	}
}

// A failure between the stop and the promote rolls back: the old primary
// is started again, and the error says the switchover failed.
func TestSwitchoverRollsBackAfterTheStop(t *testing.T) {
	st, c := healthyStatus("db", "db-replica")
	p, err := DecideSwitchover(st, c, "db-replica", RoleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var steps []Step
	for _, s := range p.Steps {
		if s.Kind == StepPrepare || s.Kind == StepStopPrimary || s.Kind == StepPromote {
			steps = append(steps, s)
		}
	}
	fake := &recording{}
	// The fake's control data is empty, so the stopped node's shutdown
	// checkpoint cannot be read: the switchover must start db again.
	_, err = ExecuteSwitchover(context.Background(), Target{Cluster: c, Control: fake}, &SwitchoverPlan{Old: p.Old, To: p.To, Steps: steps}, RoleOptions{Timeout: 50 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "switchover failed") {
		t.Fatalf("got %v", err)
	}
	// After the start, the rollback waits for db to answer (the fake never
	// does); nothing may have touched the candidate.
	got := strings.Join(fake.calls, "; ")
	if !strings.HasPrefix(got, "prepare db,db-replica; stop db; run db; start db") || strings.Contains(got, "conn db-replica") {
		t.Errorf("calls: %s", got)
	}
}

// recording is a fake Control: it records what it is asked to do, answers
// Running, and connects nowhere.
type recording struct {
	calls      []string
	prepareErr error
}

var (
	_ Control            = (*recording)(nil)
	_ RoleChangePreparer = (*recording)(nil)
)

func (r *recording) Conn(ctx context.Context, node string) (*pgx.Conn, error) {
	r.calls = append(r.calls, "conn "+node)
	return nil, &net.OpError{Op: "dial", Err: errors.New("the fake connects nowhere")}
}
func (r *recording) Start(ctx context.Context, node string) error {
	r.calls = append(r.calls, "start "+node)
	return nil
}
func (r *recording) Stop(ctx context.Context, node string) error {
	r.calls = append(r.calls, "stop "+node)
	return nil
}
func (r *recording) Running(ctx context.Context, node string) (bool, error) { return true, nil }
func (r *recording) Where(node string) string                               { return "fake " + node }
func (r *recording) Run(ctx context.Context, node, script string) (string, error) {
	r.calls = append(r.calls, "run "+node)
	return "", nil
}
func (r *recording) PrepareRoleChange(ctx context.Context, nodes ...string) error {
	r.calls = append(r.calls, "prepare "+strings.Join(nodes, ","))
	return r.prepareErr
}

// When a container step fails its trial run (the preparation), the
// switchover stops before anything: no connection, no stop, no script.
func TestSwitchoverStopsAtAFailedPreparation(t *testing.T) {
	st, c := healthyStatus("db", "db-replica")
	p, err := DecideSwitchover(st, c, "db-replica", RoleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fake := &recording{prepareErr: errors.New("docker on db's server: permission denied")}
	_, err = ExecuteSwitchover(context.Background(), Target{Cluster: c, Control: fake}, p, RoleOptions{})
	if err == nil || !strings.Contains(err.Error(), "nothing was changed") || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("got %v", err)
	}
	if strings.Join(fake.calls, "; ") != "prepare db,db-replica" {
		t.Errorf("the failed preparation was followed by: %v", fake.calls)
	}
}

func TestDecidePromote(t *testing.T) {
	st, c := healthyStatus("db", "db-replica", "db-3")
	if _, err := DecidePromote(st, c, "db-replica", false); err == nil || !strings.Contains(err.Error(), "two primaries") {
		t.Errorf("a writable primary without --fence: %v", err)
	}
	d, err := DecidePromote(st, c, "db-replica", true)
	if err != nil || d.Old != "db" || strings.Join(d.Fence, ",") != "db" {
		t.Errorf("with --fence: %+v %v", d, err)
	}
	// The primary is lost: unreachable and not running. Nothing refuses; it
	// is fenced when its files can be reached, the healthy standby is kept.
	st.Nodes[0] = NodeStatus{Name: "db", Role: RoleDown, Running: new(bool)}
	d, err = DecidePromote(st, c, "db-replica", false)
	if err != nil || d.Old != "db" || strings.Join(d.Fence, ",") != "db" {
		t.Errorf("lost primary: %+v %v", d, err)
	}
	running := true
	st.Nodes[0].Running = &running
	if _, err := DecidePromote(st, c, "db-replica", false); err == nil || !strings.Contains(err.Error(), "runs but does not answer") {
		t.Errorf("a primary that runs but does not answer: %v", err)
	}
	if _, err := DecidePromote(st, c, "db", true); err == nil || !strings.Contains(err.Error(), "not a running standby") {
		t.Errorf("promoting a down node: %v", err)
	}
	// The steps for a lost primary: fence it, report the loss, promote,
	// slots, and the other standby follows; with the backup agent's slot on
	// the candidate, it moves to that standby once it streams.
	st.Nodes[0].Running = new(bool)
	st.Nodes[1].Slots = []pgops.Slot{{Name: BackupSlot, Active: true}}
	d, err = DecidePromote(st, c, "db-replica", false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"fence db", "loss-report db-replica", "promote-now db-replica", "candidate-slots db-replica [understudy_db understudy_db_3]",
		"repoint db-3", "await-stream db-3", "backup-slot-move db-replica understudy_backup"}
	if got := stepKinds(d.Steps); strings.Join(got, "; ") != strings.Join(want, "; ") || d.BackupStays {
		t.Errorf("promote plan:\n got %q\nwant %q (backup stays %v)", got, want, d.BackupStays)
	}
	// Two nodes: no standby is left, so the agent's slot stays with it
	// (the agent streams from the primary until rejoin moves it).
	st, c = healthyStatus("db", "db-replica")
	st.Nodes[0] = NodeStatus{Name: "db", Role: RoleDown, Running: new(bool)}
	st.Nodes[1].Slots = []pgops.Slot{{Name: BackupSlot, Active: true}}
	if d, err = DecidePromote(st, c, "db-replica", false); err != nil {
		t.Fatal(err)
	}
	for _, s := range d.Steps {
		if s.Slot == BackupSlot {
			t.Errorf("a backup slot step with no standby to move to: %+v", s)
		}
	}
	if !d.BackupStays {
		t.Error("the promote does not say the backup agent stays on the new primary")
	}
}

func TestDecideRejoinPlan(t *testing.T) {
	// db was fenced and is down; db-replica is the primary and holds the
	// backup agent's slot (no standby was left to stream from).
	st, c := healthyStatus("db-replica", "db")
	st.Nodes[1] = NodeStatus{Name: "db", Role: RoleDown, Running: new(bool)}
	st.Nodes[0].Replication = nil
	st.Nodes[0].Slots = append(st.Nodes[0].Slots, pgops.Slot{Name: BackupSlot, Active: true})
	p, err := DecideRejoinPlan(st, c, "db", false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"prepare db", "ensure-slot db-replica understudy_db", "stop-node db", "rejoin-way db", "start-node db", "await-stream db",
		"backup-slot-move db-replica understudy_backup"}
	if got := stepKinds(p.Steps); strings.Join(got, "; ") != strings.Join(want, "; ") || p.Primary != "db-replica" || p.Nothing != "" {
		t.Errorf("rejoin plan:\n got %q\nwant %q", got, want)
	}
	// Already streaming: nothing to do, and no step.
	st, c = healthyStatus("db-replica", "db")
	if p, err = DecideRejoinPlan(st, c, "db", false); err != nil || p.Nothing == "" || len(p.Steps) != 0 {
		t.Errorf("a streaming standby: %+v %v", p, err)
	}
	refusals := []struct {
		name  string
		edit  func(*Status)
		node  string
		fence bool
		want  string
	}{
		{"no such node", func(*Status) {}, "nope", false, "no node"},
		{"no primary", func(s *Status) { s.Primary, s.Nodes[0].Role = "", RoleDown }, "db", false, "exactly one other node that is the primary"},
		{"two primaries, no --fence", func(s *Status) { s.Primary, s.Nodes[1].Role = "", RolePrimary }, "db", false, "--fence"},
	}
	for _, r := range refusals {
		st, c := healthyStatus("db-replica", "db")
		r.edit(st)
		if _, err := DecideRejoinPlan(st, c, r.node, r.fence); err == nil || !strings.Contains(err.Error(), r.want) {
			t.Errorf("%s: %v (want %q)", r.name, err, r.want)
		}
	}
	st, c = healthyStatus("db-replica", "db")
	st.Primary, st.Nodes[1].Role = "", RolePrimary
	st.Nodes[0].Replication = nil
	if p, err := DecideRejoinPlan(st, c, "db", true); err != nil || p.Primary != "db-replica" || len(p.Steps) == 0 {
		t.Errorf("two primaries with --fence: %+v %v", p, err)
	}
}

func TestDecideRejoin(t *testing.T) {
	cd := func(sys string, tl pgops.Timeline, state string, ckpt pgops.LSN) *pgops.ControlData {
		return &pgops.ControlData{SystemID: sys, Timeline: tl, State: state, Checkpoint: ckpt}
	}
	cases := []struct {
		name string
		r    RejoinReading
		want RejoinPath
	}{
		{"control file unreadable", RejoinReading{ControlErr: errors.New("no such file"), PrimarySystemID: "7", PrimaryTimeline: 2}, RejoinClone},
		{"another cluster", RejoinReading{Control: cd("8", 2, "shut down", 100), PrimarySystemID: "7", PrimaryTimeline: 2}, RejoinClone},
		{"same timeline", RejoinReading{Control: cd("7", 2, "shut down", 100), PrimarySystemID: "7", PrimaryTimeline: 2}, RejoinRepoint},
		{"clean stop before the switchpoint", RejoinReading{Control: cd("7", 1, "shut down", 100), PrimarySystemID: "7", PrimaryTimeline: 2, Switchpoint: 200}, RejoinRepoint},
		{"clean stop after the switchpoint", RejoinReading{Control: cd("7", 1, "shut down", 300), PrimarySystemID: "7", PrimaryTimeline: 2, Switchpoint: 200}, RejoinRewind},
		{"crashed", RejoinReading{Control: cd("7", 1, "in production", 100), PrimarySystemID: "7", PrimaryTimeline: 2, Switchpoint: 200}, RejoinRewind},
		{"history unreadable", RejoinReading{Control: cd("7", 1, "shut down", 100), PrimarySystemID: "7", PrimaryTimeline: 2, SwitchpointErr: errors.New("gone")}, RejoinRewind},
	}
	for _, c := range cases {
		if got, why := DecideRejoin(c.r, "db"); got != c.want || why == "" {
			t.Errorf("%s: %s (%q), want %s", c.name, got, why, c.want)
		}
	}
}

// check finds the backup agent's slot on the primary while a standby
// streams, and not while none does (then the agent uses the primary by
// design).
func TestCheckFindsTheBackupSlotOnAPrimary(t *testing.T) {
	has := func(st *Status, c pgconf.Cluster) bool {
		for _, f := range Check(st, c, DefaultThresholds) {
			if f.Code == CodeBackupSlotOnPrimary {
				return true
			}
		}
		return false
	}
	st, c := healthyStatus("db", "db-replica")
	if has(st, c) {
		t.Error("a finding without a backup slot on the primary")
	}
	st.Nodes[0].Slots = append(st.Nodes[0].Slots, pgops.Slot{Name: BackupSlot, Active: true})
	if !has(st, c) {
		t.Error("no finding for the backup slot on the primary while db-replica streams")
	}
	st.Nodes[0].Replication = nil
	st.Nodes[1] = NodeStatus{Name: "db-replica", Role: RoleDown}
	if has(st, c) {
		t.Error("a finding although no standby streams (the agent uses the primary then)")
	}
}

// A step that does not finish within its deadline ends the role change
// with which step, on which node, waited how long.
func TestRoleStepDeadline(t *testing.T) {
	defer func(s time.Duration) { stepSlack = s }(stepSlack)
	stepSlack = 0
	s := Step{Kind: StepCheckpoint, Node: "db", Action: "CHECKPOINT, so its shutdown is quick"}
	start := time.Now()
	err := runStep(context.Background(), RoleOptions{Timeout: 50 * time.Millisecond}, s, func(ctx context.Context) error {
		<-ctx.Done() // a server that never answers
		return ctx.Err()
	})
	if err == nil || !strings.Contains(err.Error(), `step "checkpoint" on db did not finish within 50ms`) || time.Since(start) > 5*time.Second {
		t.Fatalf("got %v after %s", err, time.Since(start))
	}
	// An interruption is not a deadline: it is passed on as it is.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = runStep(ctx, RoleOptions{Timeout: time.Minute}, s, func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	if !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "did not finish") {
		t.Errorf("interrupted: %v", err)
	}
}
