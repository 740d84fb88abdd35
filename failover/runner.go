package failover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/understudy-dev/understudy/atomicfile"
	"github.com/understudy-dev/understudy/pgops"
)

// Runner is the failover loop inside a node's agent: every Interval it
// observes its PostgreSQL and etcd (Observe, under deadlines), runs Decide,
// and carries the steps out (the thin executor below). The agent asks it,
// on every /primary check, whether this node holds the lease right now
// (Holds), so a stuck loop cannot keep the router sending writes here.
type Runner struct {
	Node     string
	Standbys []string
	Settings Settings
	Store    *Store
	Spec     MemberSpec // the three members, for their health
	PG       NodePG
	Fencer   Fencer
	// Watchdog receives the deadline lines (nil: no watchdog).
	Watchdog io.Writer
	Interval time.Duration // default 100 ms
	Log      io.Writer
	// StateDir keeps what must survive the agent's restart (the newest
	// timeline this node was seen on); "" keeps it in memory only.
	StateDir string

	mu            sync.Mutex
	held          *Held
	state         State // last quorum read
	stateOK       bool
	obs           Observation
	dec           Decision
	downSince     time.Time
	members       []MemberHealth
	membersAt     time.Time
	leaderMov     time.Time
	lastStart     time.Time
	lastRejoin    time.Time
	dropped       *Held // the lease a fence just dropped, for a resign after it
	lastTL        pgops.Timeline
	tlLoaded      bool
	notStream     time.Time
	noQuorum      time.Time
	nudge         chan struct{}
	armed         bool      // the last decision let this node take writes
	pos           *Position // the position the renewer publishes
	wdMu          sync.Mutex
	renewFailedAt time.Time
	wdDeadline    time.Time
	wdLine        string
	counts        Counts
	lastErr       string
}

// Counts are the runner's counters, for /metrics.
type Counts struct {
	Renewals, RenewFailures, Acquired, Promotions, Fences, Resigns, Rejoins int64
}

// NodePG is what the runner does to its own PostgreSQL.
type NodePG interface {
	Observe(ctx context.Context) (PGView, error)
	FencedAt() time.Time // when the fence note was written (zero: not fenced)
	Promote(ctx context.Context) error
	SetSyncNames(ctx context.Context, names string) error
	// StartReadOnly starts a fenced, stopped node (it comes up read-only:
	// standby.signal): the lab's agent does it; on Kamal the container's
	// restart policy does, and it does nothing.
	StartReadOnly(ctx context.Context) error
	Rejoin(ctx context.Context, holder string) error
}

// Report is the runner's state for /status, `understudy status` and check.
type Report struct {
	Node     string         `json:"node"`
	Holder   string         `json:"holder"`
	Holds    bool           `json:"holds"`
	Quorum   bool           `json:"quorum"`
	Paused   bool           `json:"paused"`
	Position Position       `json:"position"`
	Members  []MemberHealth `json:"members"`
	Refusal  *Refusal       `json:"refusal,omitempty"`
	Steps    []Step         `json:"last_steps,omitempty"`
	Error    string         `json:"error,omitempty"`
	Counts   Counts         `json:"counts"`
	At       time.Time      `json:"at"`
}

func (r *Runner) logf(f string, a ...any) {
	if r.Log != nil {
		fmt.Fprintf(r.Log, "%s failover %s: %s\n", time.Now().UTC().Format("15:04:05.000"), r.Node, fmt.Sprintf(f, a...))
	}
}

// Holds says whether this node holds the lease at now, safe for writes:
// the agent's /primary is 200 only when it does.
func (r *Runner) Holds(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.held != nil && LeaseView{Mine: true, LastRenew: r.held.Sent}.HoldsAt(r.Settings, now)
}

// Holder is the holder as last read ("" none); this node's own name only
// while Holds.
func (r *Runner) Holder(now time.Time) string {
	if r.Holds(now) {
		return r.Node
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state.Holder == r.Node {
		return ""
	}
	return r.state.Holder
}

// Report returns the last round's state.
func (r *Runner) Report() Report {
	now := time.Now()
	holds := r.Holds(now)
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := Report{Node: r.Node, Holder: r.state.Holder, Holds: holds, Quorum: r.stateOK, Paused: r.state.Paused,
		Position: r.state.Position, Members: r.members, Refusal: r.dec.Refusal, Steps: r.dec.Steps, Error: r.lastErr,
		Counts: r.counts, At: r.obs.Now}
	return rep
}

// ReportJSON is Report as JSON (the node agent's /status).
func (r *Runner) ReportJSON() json.RawMessage {
	b, _ := json.Marshal(r.Report())
	return b
}

// MetricsText is RenderMetrics of the report (the node agent's /metrics).
func (r *Runner) MetricsText() string { return RenderMetrics(r.Report()) }

// Run loops until ctx ends.
func (r *Runner) Run(ctx context.Context) error {
	if r.Interval == 0 {
		r.Interval = 100 * time.Millisecond
	}
	// Member health: slow when members are unreachable (a timeout each),
	// so it runs beside the loop, never in its way.
	go func() {
		for ctx.Err() == nil {
			m := r.Store.Members(ctx, r.Spec)
			r.mu.Lock()
			r.members, r.membersAt = m, time.Now()
			r.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
		}
	}()
	r.nudge = make(chan struct{}, 1)
	go r.renewLoop(ctx)
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	for {
		r.Round(ctx)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Round is one observation, decision and execution.
func (r *Runner) Round(ctx context.Context) {
	o := r.observe(ctx)
	d := Decide(o)
	r.mu.Lock()
	r.obs, r.dec = o, d
	r.pos = nil
	if d.Holds && o.PG.Role == RolePrimary {
		r.pos = &Position{Node: r.Node, Timeline: o.PG.Timeline, LSN: o.PG.LSN, At: o.Now}
	}
	r.mu.Unlock()
	err := r.execute(ctx, o, d)
	r.mu.Lock()
	r.lastErr = ""
	if err != nil {
		r.lastErr = err.Error()
	}
	r.mu.Unlock()
	if err != nil {
		r.logf("%v", err)
	}
	r.feedWatchdog(d)
}

func (r *Runner) observe(ctx context.Context) Observation {
	now := time.Now()
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	pg, err := r.PG.Observe(pctx)
	cancel()
	if err != nil {
		if pg.Role == "" {
			pg.Role = RoleUnknown
		}
		if r.downSince.IsZero() {
			r.downSince = now
		}
		pg.DownSince = r.downSince
	} else {
		r.downSince = time.Time{}
	}
	r.noteTimeline(&pg)
	if pg.Role == RoleStandby && !pg.Streaming {
		if r.notStream.IsZero() {
			r.notStream = now
		}
		pg.NotStreamingSince = r.notStream
	} else {
		r.notStream = time.Time{}
	}
	rctx, cancel := r.bounded(ctx)
	st, err := r.Store.Read(rctx)
	cancel()
	r.mu.Lock()
	r.stateOK = err == nil
	if err == nil {
		r.state = st
		if r.held != nil && (st.Holder != r.Node || st.HolderLease != r.held.ID) {
			r.logf("the lease is no longer ours (holder %q)", st.Holder)
			r.held = nil
		}
	}
	held := r.held
	st = r.state
	r.mu.Unlock()
	if err == nil && held == nil && st.Holder == r.Node && st.HolderLease != 0 && pg.Role == RolePrimary && r.PG.FencedAt().IsZero() {
		// The agent restarted while its primary kept running and its lease
		// lived on: adopt it with a renewal (etcd then counts the TTL from
		// now). Never a lease this agent dropped with a fence: only a
		// running, unfenced primary.
		if h, rerr := r.Store.Renew(ctx, Held{ID: st.HolderLease}, nil, time.Now); rerr == nil {
			r.mu.Lock()
			r.held, held = &h, &h
			r.mu.Unlock()
			r.logf("adopted its lease %x", int64(h.ID))
		}
	}
	r.mu.Lock()
	if r.stateOK {
		r.noQuorum = time.Time{}
	} else if r.noQuorum.IsZero() {
		r.noQuorum = now
	}
	ev := EtcdView{Quorum: r.stateOK, NoQuorumSince: r.noQuorum, Witness: r.witness()}
	for _, m := range r.members {
		if m.Healthy {
			ev.Healthy = append(ev.Healthy, m.Name)
		}
		if m.Leader {
			ev.Leader = m.Name
		}
	}
	r.mu.Unlock()
	o := Observation{Now: time.Now(), Node: r.Node, Standbys: r.Standbys, PG: pg, Etcd: ev, Published: st.Position,
		SyncStandbys: st.Sync, Handover: st.Handover, Paused: st.Paused, Settings: r.Settings}
	o.FencedAt = r.PG.FencedAt()
	o.Fenced = !o.FencedAt.IsZero()
	o.Lease.Holder = st.Holder
	if held != nil {
		o.Lease.Mine, o.Lease.LastRenew = true, held.Sent
	}
	return o
}

// renewLoop keeps the lease alive beside the main loop, so nothing the
// main loop waits on (a slow read, a slow PostgreSQL, a rejoin) delays a
// renewal. It sends one every RenewEvery (and 100 ms after a failure)
// without waiting for the last to come back, each ending at the fence
// point: on a slow or starved path, answers arrive late but keep arriving,
// and the newest send time that etcd acknowledged is what counts. After
// each renewal it moves the watchdog on (while the node may take writes)
// and publishes the position the main loop last saw, neither in the way
// of the next renewal.
func (r *Runner) renewLoop(ctx context.Context) {
	const maxInFlight = 8
	inflight := make(chan struct{}, maxInFlight)
	publishing := make(chan struct{}, 1)
	var last time.Time // when the last renewal was sent
	for ctx.Err() == nil {
		wait := r.Settings.RenewEvery / 4
		r.mu.Lock()
		held := r.held
		failedAt := r.renewFailedAt
		r.mu.Unlock()
		due := held != nil && time.Since(last) >= r.Settings.RenewEvery
		if held != nil && !failedAt.IsZero() && failedAt.After(last) && time.Since(last) >= 100*time.Millisecond {
			due = true // the last one failed: again now
		}
		if due {
			select {
			case inflight <- struct{}{}:
				last = time.Now()
				go func(held Held) {
					defer func() { <-inflight }()
					r.renewOnce(ctx, held, publishing)
				}(*held)
			default: // too many unanswered: wait for one
			}
		}
		select {
		case <-ctx.Done():
		case <-r.nudge:
		case <-time.After(wait):
		}
	}
}

func (r *Runner) renewOnce(ctx context.Context, held Held, publishing chan struct{}) {
	rctx, cancel := r.bounded(ctx)
	h, err := r.Store.KeepAlive(rctx, held, time.Now)
	cancel()
	r.mu.Lock()
	same := r.held != nil && r.held.ID == held.ID // not dropped by a fence meanwhile
	switch {
	case same && errors.Is(err, ErrLost):
		r.held = nil
	case same && err == nil && h.Sent.After(r.held.Sent):
		r.held = &h
	}
	if err != nil {
		r.counts.RenewFailures++
		r.renewFailedAt = time.Now()
	} else {
		r.counts.Renewals++
	}
	arm := r.armed && same && err == nil
	deadline := time.Time{}
	if r.held != nil {
		deadline = r.held.Sent.Add(r.Settings.TTL - r.Settings.WatchdogMargin)
	}
	pos := r.pos
	r.mu.Unlock()
	if err != nil {
		r.logf("renew: %v", err)
		return
	}
	if arm && !deadline.IsZero() {
		r.arm(deadline)
	}
	if pos == nil || !same {
		return
	}
	select {
	case publishing <- struct{}{}:
		defer func() { <-publishing }()
		pctx, cancel := r.bounded(ctx)
		defer cancel()
		if err := r.Store.Publish(pctx, h, *pos); err != nil {
			r.logf("publish: %v", err)
		}
	default: // one publication at a time; the next renewal publishes again
	}
}

// noteTimeline remembers the newest timeline this node was seen on (as a
// primary, or streaming as a standby) and reports a standby's timeline as
// at least that: its checkpoint's lags behind a switch until the next
// restartpoint, and its walreceiver's is gone with the primary. Timelines
// only grow over a node's life (a rejoin moves it to the newer one).
func (r *Runner) noteTimeline(pg *PGView) {
	path := ""
	if r.StateDir != "" {
		path = filepath.Join(r.StateDir, "failover-timeline")
	}
	if !r.tlLoaded {
		r.tlLoaded = true
		if b, err := os.ReadFile(path); err == nil && path != "" {
			var n uint32
			fmt.Sscan(string(b), &n)
			r.lastTL = pgops.Timeline(n)
		}
	}
	seen := pg.Role == RolePrimary || (pg.Role == RoleStandby && pg.Streaming)
	if seen && pg.Timeline > r.lastTL {
		r.lastTL = pg.Timeline
		if path != "" {
			atomicfile.Write(path, []byte(fmt.Sprintln(uint32(r.lastTL))), 0o644)
		}
	}
	if pg.Role == RoleStandby && r.lastTL > pg.Timeline {
		pg.Timeline = r.lastTL
	}
}

// bounded is ctx for one etcd call: while this node holds the lease, it
// ends at the fence point, so a call stuck on a partition never delays the
// fence (the next round decides it at once).
func (r *Runner) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	r.mu.Lock()
	held := r.held
	r.mu.Unlock()
	if held == nil {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, held.Sent.Add(r.Settings.TTL-r.Settings.FenceMargin))
}

func (r *Runner) witness() string {
	for _, m := range r.Spec.Members {
		if m.Name != r.Node && !contains(r.Standbys, m.Name) {
			return m.Name
		}
	}
	return ""
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func (r *Runner) execute(ctx context.Context, o Observation, d Decision) error {
	for _, s := range d.Steps {
		if err := r.step(ctx, o, s); err != nil {
			return fmt.Errorf("%s: %w", s.Kind, err)
		}
	}
	return nil
}

func (r *Runner) step(ctx context.Context, o Observation, s Step) error {
	r.mu.Lock()
	held, basisRev := r.held, r.state.PositionRev
	r.mu.Unlock()
	setHeld := func(h *Held) {
		r.mu.Lock()
		r.held = h
		r.mu.Unlock()
	}
	count := func(p *int64) {
		r.mu.Lock()
		*p++
		r.mu.Unlock()
	}
	switch s.Kind {
	case StepRenew:
		// The renewer (renewLoop, beside this loop) renews and publishes;
		// a renewal due now wakes it.
		select {
		case r.nudge <- struct{}{}:
		default:
		}
	case StepAcquire:
		pos := Position{Node: r.Node, Timeline: o.PG.Timeline, LSN: o.PG.LSN, At: o.Now}
		h, err := r.Store.Acquire(ctx, r.Node, basisRev, pos, time.Now)
		if err != nil {
			return err
		}
		setHeld(&h)
		count(&r.counts.Acquired)
		r.logf("took the lease: %s", s.Reason)
	case StepPromote:
		r.logf("promoting: %s", s.Reason)
		if err := r.PG.Promote(ctx); err != nil {
			return err
		}
		count(&r.counts.Promotions)
	case StepFence:
		r.logf("fencing: %s", s.Reason)
		setHeld(nil)
		r.mu.Lock()
		r.dropped = held // a resign in the same decision gives it up
		r.mu.Unlock()
		r.feedWatchdog(Decision{}) // the fence is being done; no deadline now
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := r.Fencer.Fence(fctx, s.Reason)
		cancel()
		if err != nil {
			return err
		}
		count(&r.counts.Fences)
		return nil // a later round starts it read-only (StepStartReadOnly)
	case StepStartReadOnly:
		if time.Since(r.lastStart) < 5*time.Second {
			return nil
		}
		r.lastStart = time.Now()
		return r.PG.StartReadOnly(ctx)
	case StepResign:
		r.mu.Lock()
		if held == nil {
			held = r.dropped
		}
		r.dropped = nil
		r.mu.Unlock()
		if held == nil {
			return nil
		}
		setHeld(nil)
		count(&r.counts.Resigns)
		r.logf("giving the lease up: %s", s.Reason)
		return r.Store.Resign(ctx, *held, "")
	case StepRejoin:
		if time.Since(r.lastRejoin) < 10*time.Second {
			return nil
		}
		r.lastRejoin = time.Now()
		r.logf("rejoining: %s", s.Reason)
		rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		if err := r.PG.Rejoin(rctx, s.Target); err != nil {
			return err
		}
		count(&r.counts.Rejoins)
	case StepWaitFenced:
	case StepSetSyncNames:
		r.logf("synchronous_standby_names = %q: %s", s.SyncNames, s.Reason)
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return r.PG.SetSyncNames(pctx, s.SyncNames)
	case StepRecordSync:
		if held == nil {
			return nil
		}
		rctx, cancel := r.bounded(ctx)
		defer cancel()
		return r.Store.RecordSync(rctx, *held, s.Sync)
	case StepMoveEtcdLeader:
		// Beside the loop: it dials the leader and may be slow, and the
		// loop's renewals must never wait behind it.
		if time.Since(r.leaderMov) < 10*time.Second {
			return nil
		}
		r.leaderMov = time.Now()
		go func() {
			mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := r.Store.MoveLeader(mctx, r.Spec, s.Target); err != nil {
				r.logf("%v", err)
			}
		}()
		return nil
	}
	return nil
}

// feedWatchdog arms the watchdog at the lease's earliest expiry less its
// margin while this node may take writes, and disarms it otherwise (after
// each round; the renewer moves it on after each renewal).
func (r *Runner) feedWatchdog(d Decision) {
	r.mu.Lock()
	deadline := time.Time{}
	if d.Holds && r.held != nil {
		deadline = r.held.Sent.Add(r.Settings.TTL - r.Settings.WatchdogMargin)
	}
	r.armed = d.Holds
	r.mu.Unlock()
	r.arm(deadline)
}

func (r *Runner) arm(deadline time.Time) {
	if r.Watchdog == nil {
		return
	}
	r.wdMu.Lock()
	defer r.wdMu.Unlock()
	if !deadline.IsZero() && deadline.Before(r.wdDeadline) {
		return // an older renewal's answer, arriving after a newer one's
	}
	r.wdDeadline = deadline
	line := WatchdogLine(deadline, time.Now(), Monotonic())
	if deadline.IsZero() && line == r.wdLine {
		return
	}
	r.wdLine = line
	io.WriteString(r.Watchdog, line)
}

// SQLPG is NodePG over a connection to the local PostgreSQL (as a role
// that may promote and set synchronous_standby_names), with the data
// directory for the fence note.
type SQLPG struct {
	Connect func(ctx context.Context) (*pgx.Conn, error)
	DataDir string
	Restart func(ctx context.Context) error // StartReadOnly (nil: nothing)
	// Slots: the replication slots the other nodes stream through, made on
	// this node as soon as it is promoted, so they can follow it.
	Slots    []string
	DoRejoin func(ctx context.Context, holder string) error

	c *pgx.Conn
}

var _ NodePG = (*SQLPG)(nil)

func (p *SQLPG) conn(ctx context.Context) (*pgx.Conn, error) {
	if p.c != nil && !p.c.IsClosed() {
		return p.c, nil
	}
	c, err := p.Connect(ctx)
	if err != nil {
		return nil, err
	}
	p.c = c
	return c, nil
}

func (p *SQLPG) drop() {
	if p.c != nil {
		p.c.Close(context.Background())
		p.c = nil
	}
}

// Observe reads the server's role and positions.
func (p *SQLPG) Observe(ctx context.Context) (PGView, error) {
	c, err := p.conn(ctx)
	if err != nil {
		return PGView{Role: RoleDown}, err
	}
	f, err := pgops.ReadFailoverFacts(ctx, c)
	if err != nil {
		p.drop()
		return PGView{Role: RoleUnknown}, err
	}
	v := PGView{Role: RolePrimary, Timeline: f.Timeline, LSN: f.LSN, Streaming: f.Streaming, SyncNames: f.SyncNames}
	if f.InRecovery {
		v.Role = RoleStandby
	}
	for _, r := range f.Replicas {
		v.Replicas = append(v.Replicas, ReplicaView{Name: r.Name, Streaming: r.Streaming, Sync: r.Sync})
	}
	return v, nil
}

// FencedAt: when the fence note was written into PGDATA (zero: none).
func (p *SQLPG) FencedAt() time.Time {
	st, err := os.Stat(filepath.Join(p.DataDir, FenceNote))
	if err != nil {
		return time.Time{}
	}
	return st.ModTime()
}

// Promote promotes and removes the fence note (a fenced former primary
// that took the lease back).
func (p *SQLPG) Promote(ctx context.Context) error {
	c, err := p.conn(ctx)
	if err != nil {
		return err
	}
	if err := pgops.Promote(ctx, c, 30*time.Second); err != nil {
		return err
	}
	os.Remove(filepath.Join(p.DataDir, FenceNote))
	for _, slot := range p.Slots {
		if _, err := pgops.EnsureSlot(ctx, c, slot); err != nil {
			return fmt.Errorf("promoted, but making slot %s: %w", slot, err)
		}
	}
	return nil
}

// SetSyncNames sets synchronous_standby_names.
func (p *SQLPG) SetSyncNames(ctx context.Context, names string) error {
	c, err := p.conn(ctx)
	if err != nil {
		return err
	}
	return pgops.SetSyncStandbyNames(ctx, c, names)
}

// StartReadOnly restarts the node (read-only) when a restart is configured.
func (p *SQLPG) StartReadOnly(ctx context.Context) error {
	p.drop()
	if p.Restart == nil {
		return nil
	}
	return p.Restart(ctx)
}

// Rejoin follows the holder.
func (p *SQLPG) Rejoin(ctx context.Context, holder string) error {
	p.drop()
	if p.DoRejoin == nil {
		return errors.New("this node cannot rejoin by itself here: run `understudy rejoin`")
	}
	return p.DoRejoin(ctx, holder)
}

// LeaseStore opens the Store of a member's spec from this node's client.
func LeaseStore(c *clientv3.Client, spec MemberSpec, s Settings) *Store {
	return NewStore(c, spec.Token, s)
}
