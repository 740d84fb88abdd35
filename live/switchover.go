package live

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/pgops"
)

// Role-change step kinds: what a switchover's plan holds, in order. Each
// kind's data is in the Step's typed fields (Node, Upstream, Slot, Slots);
// ExecuteSwitchover walks the plan and runs exactly these.
const (
	StepPrepare         StepKind = "prepare"           // prove the control's own role-change steps work on these nodes (Kamal: docker, image, volumes)
	StepCandidateSlots  StepKind = "candidate-slots"   // Slots on Node (the candidate) for every other node, for after the swap
	StepBackupSlotAhead StepKind = "backup-slot-ahead" // the backup agent's Slot on Node (the old primary, a standby after), reserving WAL from before the stop
	StepFastRetry       StepKind = "fast-retry"        // wal_retrieve_retry_interval 20ms on Node while the switchover runs
	StepCheckpoint      StepKind = "checkpoint"        // CHECKPOINT on Node, so its shutdown checkpoint is quick
	StepStopPrimary     StepKind = "stop-primary"      // stop Node cleanly and read its shutdown checkpoint: writes pause
	StepPromote         StepKind = "promote"           // prove Node has all WAL up to that checkpoint, then promote it: writes resume
	StepFollow          StepKind = "follow"            // the stopped Node becomes a standby of Upstream and starts
	StepRepoint         StepKind = "repoint"           // running standby Node follows Upstream (reload)
	StepAwaitFollowers  StepKind = "await-followers"   // every other node streams from Node
	StepBackupSlotMove  StepKind = "backup-slot-move"  // the backup agent leaves Node (now the primary) for Upstream: its session ended, Slot dropped on Node
)

// SwitchoverPlan is what a switchover will do, decided before anything
// changes: the swap and its steps, the only thing ExecuteSwitchover runs.
type SwitchoverPlan struct {
	Old, To string
	Steps   []Step
}

// BackupSlot is the backup agent's slot (backup.DefaultSlot): on a
// standby, never left on a primary.
const BackupSlot = backup.DefaultSlot

// DecideSwitchover is the switchover's decision over a reading: the
// refusals (no single primary, the candidate not streaming or too far
// behind, split brain, parity, a pg_hba that would shut a node out) and
// the plan. Pure.
func DecideSwitchover(st *Status, c pgconf.Cluster, to string, o RoleOptions) (*SwitchoverPlan, error) {
	o.defaults()
	if err := preflight(st, c, to, o); err != nil {
		return nil, fmt.Errorf("switchover refused, nothing was changed: %w", err)
	}
	if c.Failover != nil {
		if st.Lease == nil {
			st.Lease = &LeaseReading{Error: "not read"}
		}
		if err := leasePreflight(st, to, true); err != nil {
			return nil, fmt.Errorf("switchover refused, nothing was changed: %w", err)
		}
	}
	old := st.Primary
	p := &SwitchoverPlan{Old: old, To: to}
	add := func(s Step) { p.Steps = append(p.Steps, s) }
	var slots []string
	for _, n := range c.Nodes {
		if n.Name != to {
			slots = append(slots, n.Slot())
		}
	}
	// The backup agent streams from a standby over its own slot. When that
	// standby is the candidate, the slot moves with the standby role: made
	// on the old primary before the stop (so it keeps every WAL segment from
	// before the switch), dropped on the candidate once the agent has
	// everything up to the switch.
	backupOnCandidate := hasSlot(st.Node(to), BackupSlot)
	add(Step{Kind: StepPrepare, Node: old, Upstream: to, Action: "check that the role-change steps can run on " + old + " and " + to + " (on Kamal: docker, the image, a container with the node's volumes)", Effect: "none"})
	add(Step{Kind: StepCandidateSlots, Node: to, Slots: slots, Action: "make sure it holds slots " + strings.Join(slots, ", ") + " for after the swap", Effect: "none"})
	if backupOnCandidate {
		add(Step{Kind: StepBackupSlotAhead, Node: old, Slot: BackupSlot, Action: "create the backup agent's slot " + BackupSlot + " here, keeping WAL from before the switch for when it streams from " + old, Effect: "none"})
	}
	add(Step{Kind: StepFastRetry, Node: to, Action: "retry reading WAL every 20 ms during the switchover (wal_retrieve_retry_interval, reset at the end)", Effect: "none"})
	add(Step{Kind: StepCheckpoint, Node: old, Action: "CHECKPOINT, so its shutdown is quick", Effect: "none"})
	agents := c.MonitorUser != ""
	if agents {
		add(Step{Kind: StepDrain, Node: old, Action: "drain at its agent: hold understudy's drain lock in a superuser session until the agent answers /primary 503", Effect: "the routers stop sending it writes and cut its sessions: writes through them pause from here"})
	}
	add(Step{Kind: StepStopPrimary, Node: old, Action: "stop it cleanly and read its shutdown checkpoint", Effect: "writes pause from here"})
	if c.Failover != nil {
		// Through the lease: only the holder's agent makes its node writable.
		add(Step{Kind: StepProveWAL, Node: to, Upstream: old, Action: "prove it has all of " + old + "'s WAL (its shutdown checkpoint)", Effect: "none"})
		add(Step{Kind: StepHandOver, Node: to, Upstream: old, Action: "hand the failover lease from " + old + " to " + to + " in etcd: only " + to + " may take it", Effect: "none"})
		add(Step{Kind: StepAwaitPromote, Node: to, Action: "wait until its agent takes the lease and promotes it", Effect: "writes resume on " + to})
	} else {
		add(Step{Kind: StepPromote, Node: to, Upstream: old, Action: "prove it has all of " + old + "'s WAL (its shutdown checkpoint), then promote it", Effect: "writes resume on " + to})
	}
	if agents {
		add(Step{Kind: StepAnnounce, Node: to, Action: "announce at its agent: ask for a fresh answer until /primary is 200", Effect: "the routers send writes to " + to + " at their next check"})
	}
	add(Step{Kind: StepFollow, Node: old, Upstream: to, Action: "make it a standby of " + to + " (standby.signal, primary_conninfo) and start it", Effect: "none"})
	for _, n := range c.Nodes {
		if n.Name != old && n.Name != to && st.Node(n.Name).Role == RoleStandby {
			add(Step{Kind: StepRepoint, Node: n.Name, Upstream: to, Action: "follow " + to + " (primary_conninfo, reloaded)", Effect: "none"})
		}
	}
	for _, n := range c.Nodes {
		if n.Name == old || n.Name != to && st.Node(n.Name).Role == RoleStandby {
			add(Step{Kind: StepAwaitStream, Node: n.Name, Upstream: to, Action: "wait until it streams from " + to, Effect: "none"})
		}
	}
	if backupOnCandidate {
		add(Step{Kind: StepBackupSlotMove, Node: to, Upstream: old, Slot: BackupSlot, Action: "once the backup agent has the WAL that " + old + "'s slot starts at (10 s at most), end its session and drop " + BackupSlot + " here: it streams from " + old + " next, and the primary keeps no WAL for it", Effect: "none"})
	}
	return p, nil
}

// PlanSwitchover reads the cluster and decides, changing nothing
// (`switchover --dry-run`).
func PlanSwitchover(ctx context.Context, t Target, to string, o RoleOptions) (*SwitchoverPlan, error) {
	st, err := begin(ctx, t, &o)
	if err != nil {
		return nil, err
	}
	return DecideSwitchover(st, t.Cluster, to, o)
}

// Switchover swaps the primary and the standby `to` with no lost commit:
// preflight, CHECKPOINT, clean stop of the primary, proof that the standby
// has everything up to the old primary's shutdown checkpoint, promote, and
// the old primary back as a standby of the new one without pg_rewind
// (PostgreSQL docs, warm-standby.html, failover and switchover). Anything
// failing before the promote rolls back: the old primary starts again as
// the primary. It is PlanSwitchover followed by ExecuteSwitchover.
func Switchover(ctx context.Context, t Target, to string, o RoleOptions) (*RoleResult, error) {
	p, err := PlanSwitchover(ctx, t, to, o)
	if err != nil {
		return nil, err
	}
	return ExecuteSwitchover(ctx, t, p, o)
}

// ExecuteSwitchover walks a plan DecideSwitchover made, step by step, and
// runs nothing else. A step that fails before the stop changes nothing
// further; between the stop and the promote the old primary is started
// again (rollback); after the promote the error says how to finish.
func ExecuteSwitchover(ctx context.Context, t Target, p *SwitchoverPlan, o RoleOptions) (*RoleResult, error) {
	o.defaults()
	x := &switchover{t: t, p: p, o: o, res: &RoleResult{OldPrimary: p.Old, NewPrimary: p.To}}
	defer x.close(ctx)
	for _, s := range p.Steps {
		// From the stop on, an interruption must not leave the cluster
		// without a primary: the rest runs to the end (or rolls back) even
		// if ctx ends, each step under its own deadline still.
		base := ctx
		if x.stopped {
			base = context.WithoutCancel(ctx)
		}
		if err := runStep(base, o, s, func(sctx context.Context) error { return x.step(sctx, s) }); err != nil {
			return x.fail(ctx, s, err)
		}
	}
	x.res.Routing = Routing(t.Cluster, p.To)
	return x.res, nil
}

// switchover is ExecuteSwitchover's state between steps.
type switchover struct {
	t   Target
	p   *SwitchoverPlan
	o   RoleOptions
	res *RoleResult

	sc        *pgx.Conn // the candidate (the new primary)
	fastRetry bool      // wal_retrieve_retry_interval to reset on close
	stopped   bool      // the old primary is stopped: a failure rolls back
	promoted  bool      // the candidate is the primary: no way back
	start     time.Time // the stop began
	ckpt      pgops.LSN // the old primary's shutdown checkpoint
	undrain   func()    // ends the drain lock's session (nil when none is held)
}

// endDrain ends the drain lock's session, if one is held: after the stop
// (which ended it already), or on a failure before it.
func (x *switchover) endDrain() {
	if x.undrain != nil {
		x.undrain()
		x.undrain = nil
	}
}

// cand is the connection to the candidate, opened on first use.
func (x *switchover) cand(ctx context.Context) (*pgx.Conn, error) {
	if x.sc == nil {
		c, err := x.t.Control.Conn(ctx, x.p.To)
		if err != nil {
			return nil, fmt.Errorf("connecting to %s: %w", x.p.To, err)
		}
		x.sc = c
	}
	return x.sc, nil
}

func (x *switchover) close(ctx context.Context) {
	x.endDrain()
	if x.sc == nil {
		return
	}
	wctx := context.WithoutCancel(ctx)
	if x.fastRetry {
		if err := pgops.ResetSystem(wctx, x.sc, pgops.WALRetrieveRetryInterval); err != nil {
			say(x.o, "  ! could not reset wal_retrieve_retry_interval on %s (%v): run `ALTER SYSTEM RESET wal_retrieve_retry_interval; SELECT pg_reload_conf();` there", x.p.To, err)
		}
	}
	x.sc.Close(wctx)
}

// fail turns a step's error into the switchover's outcome for its phase.
func (x *switchover) fail(ctx context.Context, s Step, err error) (*RoleResult, error) {
	cctx := context.WithoutCancel(ctx)
	switch {
	case x.promoted:
		return x.res, err
	case x.stopped:
		return nil, rollback(cctx, x.t, x.p.Old, x.o, err)
	case s.Kind == StepPrepare:
		return nil, fmt.Errorf("switchover refused, nothing was changed: %w", err)
	default:
		return nil, fmt.Errorf("switchover refused before %s stopped, nothing else was changed: %w", x.p.Old, err)
	}
}

// step runs one step of the plan.
func (x *switchover) step(ctx context.Context, s Step) error {
	switch s.Kind {
	case StepPrepare:
		return prepare(ctx, x.t, s.Node, s.Upstream)
	case StepCandidateSlots:
		sc, err := x.cand(ctx)
		if err != nil {
			return err
		}
		// Physical slots can be made on a standby.
		for _, slot := range s.Slots {
			if created, err := pgops.EnsureSlot(ctx, sc, slot); err != nil {
				return err
			} else if created {
				say(x.o, "  ✓ slot %s created on %s for after the swap", slot, s.Node)
			}
		}
		return nil
	case StepBackupSlotAhead:
		c, err := x.t.Control.Conn(ctx, s.Node)
		if err != nil {
			return fmt.Errorf("connecting to %s: %w", s.Node, err)
		}
		defer c.Close(context.WithoutCancel(ctx))
		if created, err := pgops.EnsureSlot(ctx, c, s.Slot); err != nil {
			return err
		} else if created {
			say(x.o, "  ✓ backup slot %s created on %s, keeping WAL from before the switch", s.Slot, s.Node)
		}
		return nil
	case StepFastRetry:
		// The promote must not wait out wal_retrieve_retry_interval. When
		// the old primary stops, the candidate's walreceiver loses it and
		// the startup process starts a new one; a promote request that
		// finds it waiting on that walreceiver is handled as one more failed
		// attempt, and PostgreSQL sleeps the rest of the retry interval
		// since the previous failure before it reads pg_wal once more and
		// promotes (a 2 s stall in about 1 switchover of 10 with the
		// generated 2 s). So the candidate retries every 20 ms; close resets
		// the generated value, whatever happened.
		sc, err := x.cand(ctx)
		if err != nil {
			return err
		}
		if err := pgops.SetSystem(ctx, sc, pgops.WALRetrieveRetryInterval, "20ms"); err != nil {
			return err
		}
		x.fastRetry = true
		return nil
	case StepCheckpoint:
		c, err := x.t.Control.Conn(ctx, s.Node)
		if err != nil {
			return fmt.Errorf("connecting to %s: %w", s.Node, err)
		}
		defer c.Close(context.WithoutCancel(ctx))
		if err := pgops.Checkpoint(ctx, c); err != nil {
			return fmt.Errorf("CHECKPOINT on %s failed: %w", s.Node, err)
		}
		return nil
	case StepDrain:
		undrain, err := drain(ctx, x.t, s.Node, x.o)
		if err != nil {
			return fmt.Errorf("draining %s: %w", s.Node, err)
		}
		x.undrain = undrain
		return nil
	case StepStopPrimary:
		return x.stop(ctx, s.Node)
	case StepAnnounce:
		announce(ctx, x.t, s.Node, x.o)
		return nil
	case StepPromote:
		if err := x.prove(ctx, s.Node, s.Upstream); err != nil {
			return err
		}
		return x.promote(ctx, s.Node, s.Upstream)
	case StepProveWAL:
		return x.prove(ctx, s.Node, s.Upstream)
	case StepHandOver:
		return x.handOver(ctx, s.Upstream, s.Node)
	case StepAwaitPromote:
		if err := awaitPromoted(ctx, x.t, s.Node, x.o.Timeout); err != nil {
			return fmt.Errorf("%w; %s stays stopped (the lease is no longer its): once %s is the primary, `understudy rejoin %s`", err, x.p.Old, s.Node, x.p.Old)
		}
		x.res.WriteOutage = time.Since(x.start)
		say(x.o, "  ✓ %s's agent took the lease and promoted it: writable again after %d ms", s.Node, x.res.WriteOutage.Milliseconds())
		return nil
	case StepFollow:
		oldNode, _ := x.t.Cluster.Node(s.Node)
		newNode, _ := x.t.Cluster.Node(s.Upstream)
		if _, err := x.t.Control.Run(ctx, s.Node, pgconf.FollowScript(x.t.Cluster, oldNode, newNode, "")); err != nil {
			return fmt.Errorf("%s is the primary, but pointing %s at it failed: %w. Run `understudy rejoin %s`", s.Upstream, s.Node, err, s.Node)
		}
		if err := x.t.Control.Start(ctx, s.Node); err != nil {
			return fmt.Errorf("%s is the primary, but starting %s as its standby failed: %w. Run `understudy rejoin %s`", s.Upstream, s.Node, err, s.Node)
		}
		return nil
	case StepRepoint:
		return repointOthers(ctx, x.t, []string{s.Node}, s.Upstream, x.o)
	case StepAwaitStream:
		if err := awaitStream(ctx, x.t, s.Node, s.Upstream, x.o.Timeout); err != nil {
			return err
		}
		if s.Node == x.p.Old {
			say(x.o, "  ✓ %s streams from %s, without pg_rewind", s.Node, s.Upstream)
		}
		return nil
	case StepBackupSlotMove:
		return moveBackupSlot(ctx, x.t, s, x.o)
	}
	return fmt.Errorf("internal error: a switchover has no step %q", s.Kind)
}

// stop stops the old primary cleanly and reads its shutdown checkpoint.
func (x *switchover) stop(ctx context.Context, old string) error {
	x.o.hook("before-stop")
	x.start = time.Now()
	say(x.o, "stopping %s cleanly (writes pause now)", old)
	x.stopped = true
	cctx := context.WithoutCancel(ctx)
	err := x.t.Control.Stop(cctx, old)
	x.endDrain() // the stop ended its session; this frees it if the stop failed
	if err != nil {
		return fmt.Errorf("stopping %s: %w", old, err)
	}
	say(x.o, "  ✓ %s stopped (%d ms)", old, time.Since(x.start).Milliseconds())
	x.o.hook("after-stop")
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted after %s stopped: %w", old, ctx.Err())
	}
	cd, err := controlData(cctx, x.t, old)
	if err != nil {
		return err
	}
	if cd.State != "shut down" {
		return fmt.Errorf("%s did not shut down cleanly (its control file says %q), so the standby cannot be proven complete", old, cd.State)
	}
	x.ckpt = cd.Checkpoint
	return nil
}

// prove proves the candidate has every WAL record up to the old
// primary's shutdown checkpoint.
func (x *switchover) prove(ctx context.Context, to, old string) error {
	sc, err := x.cand(ctx)
	if err != nil {
		return err
	}
	// The walsender sends up to and including the shutdown checkpoint
	// before it exits, so a complete standby has received past its start.
	var pos pgops.WALPositions
	deadline := time.Now().Add(10 * time.Second)
	for {
		if pos, err = pgops.ReadWALPositions(ctx, sc); err != nil {
			return fmt.Errorf("reading %s's WAL position: %w", to, err)
		}
		if pos.Received > x.ckpt && pos.Replayed >= pos.Received {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s received WAL up to %s and replayed to %s, short of %s's shutdown checkpoint at %s", to, pos.Received, pos.Replayed, old, x.ckpt)
		}
		time.Sleep(5 * time.Millisecond)
	}
	say(x.o, "  ✓ %s has all of %s's WAL (shutdown checkpoint %s, received %s; %d ms)", to, old, x.ckpt, pos.Received, time.Since(x.start).Milliseconds())
	return nil
}

// handOver hands the lease from the stopped old primary to the proven
// candidate. From here there is no way back: the old primary's agent has
// lost the lease (so no rollback), the candidate's takes it.
func (x *switchover) handOver(ctx context.Context, old, to string) error {
	if x.t.Lease == nil {
		return errors.New("failover is on, but this target has no way to reach etcd")
	}
	err := x.t.Lease.HandOver(ctx, old, to)
	if err != nil {
		// The old primary's agent may have given the lease up by itself
		// already (its PostgreSQL stopped): the candidate takes the free
		// lease then, as in a failover.
		lr := readLease(ctx, x.t)
		if lr == nil || lr.Error != "" || (lr.Holder != "" && lr.Holder != to) {
			return err
		}
	}
	x.promoted = true
	say(x.o, "  ✓ the failover lease handed from %s to %s (%d ms)", old, to, time.Since(x.start).Milliseconds())
	return nil
}

// promote promotes the proven candidate (failover off).
func (x *switchover) promote(ctx context.Context, to, old string) error {
	sc, err := x.cand(ctx)
	if err != nil {
		return err
	}
	if err := pgops.Promote(ctx, sc, 60*time.Second); err != nil {
		return fmt.Errorf("promoting %s failed (%v); if %s is writable now, do not start %s: run `understudy rejoin %s`", to, err, to, old, old)
	}
	x.promoted = true
	x.res.WriteOutage = time.Since(x.start)
	say(x.o, "  ✓ %s promoted: writable again after %d ms", to, x.res.WriteOutage.Milliseconds())
	return nil
}

// moveBackupSlot takes the backup agent's slot off s.Node (the primary)
// and leaves it on s.Upstream (a standby): the slot is made there when it
// is missing, then, once the agent has flushed past where that slot keeps
// WAL from (10 s at most), the agent's session on s.Node is ended and the
// slot dropped. The agent then streams from s.Upstream with no gap. An
// agent that is down or behind is not waited on longer: it resumes from
// s.Upstream's slot, or reports the gap itself and takes a new base backup.
func moveBackupSlot(ctx context.Context, t Target, s Step, o RoleOptions) error {
	// A standby can stream before it accepts connections (a rewound node
	// replays to consistency first).
	if _, err := WaitReady(ctx, t.Control, s.Upstream, o.Timeout); err != nil {
		return fmt.Errorf("moving the backup slot to %s: %w", s.Upstream, err)
	}
	hc, err := t.Control.Conn(ctx, s.Upstream)
	if err != nil {
		return fmt.Errorf("connecting to %s to move the backup slot there: %w", s.Upstream, err)
	}
	defer hc.Close(context.WithoutCancel(ctx))
	if _, err := pgops.EnsureSlot(ctx, hc, s.Slot); err != nil {
		return err
	}
	held, err := pgops.ReadSlotUse(ctx, hc, s.Slot)
	if err != nil {
		return err
	}
	pc, err := t.Control.Conn(ctx, s.Node)
	if err != nil {
		return fmt.Errorf("connecting to %s to drop its backup slot: %w", s.Node, err)
	}
	defer pc.Close(context.WithoutCancel(ctx))
	deadline := time.Now().Add(10 * time.Second)
	for {
		u, err := pgops.ReadSlotUse(ctx, pc, s.Slot)
		if err != nil {
			return err
		}
		if !u.Exists {
			return nil
		}
		if !u.Active || u.Restart >= held.Restart {
			break
		}
		if time.Now().After(deadline) {
			say(o, "  ! after 10 s the backup agent had confirmed WAL only up to %s, and %s keeps it from %s; moving it anyway (it resumes from what its spool holds; should WAL it still needs be gone, it reports the gap and takes a new base backup)", u.Restart, s.Upstream, held.Restart)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := pgops.EndSlotSession(ctx, pc, s.Slot); err != nil {
		return err
	}
	// The slot stays active until the walsender has exited.
	deadline = time.Now().Add(10 * time.Second)
	for {
		err := pgops.DropSlot(ctx, pc, s.Slot)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is the primary, but the backup slot %s on it could not be dropped: %w. Drop it there (`SELECT pg_drop_replication_slot('%s')`) once the backup agent streams from %s", s.Node, s.Slot, err, s.Slot, s.Upstream)
		}
		time.Sleep(50 * time.Millisecond)
	}
	say(o, "  ✓ backup slot %s moved from %s to %s: the backup agent streams from the standby, and the primary keeps no WAL for it", s.Slot, s.Node, s.Upstream)
	return nil
}

// preflight refuses a switchover that could lose a commit or leave a
// node unable to follow.
func preflight(st *Status, c pgconf.Cluster, to string, o RoleOptions) error {
	if st.Primary == "" {
		return errors.New("there is no single writable primary (run `understudy check`); for a lost primary use `understudy promote`")
	}
	if st.Primary == to {
		return fmt.Errorf("%s is already the primary", to)
	}
	s := st.Node(to)
	if s == nil {
		return fmt.Errorf("there is no node %q", to)
	}
	if s.Role != RoleStandby {
		return fmt.Errorf("%s is not a running standby (%s)", to, s.Role)
	}
	p := st.Node(st.Primary)
	var rep *pgops.Replication
	for i := range p.Replication {
		if p.Replication[i].Name == to {
			rep = &p.Replication[i]
		}
	}
	if rep == nil || rep.State != "streaming" {
		return fmt.Errorf("%s is not streaming from %s; fix that first (`understudy check` says why)", to, st.Primary)
	}
	if rep.LagBytes > o.MaxLagBytes {
		return fmt.Errorf("%s is %s behind %s (limit %s); the switchover would wait that long with writes stopped. Try again when it has caught up", to, bytesText(rep.LagBytes), st.Primary, bytesText(o.MaxLagBytes))
	}
	for _, f := range Check(st, c, DefaultThresholds) {
		switch f.Code {
		case CodeParity, CodeSplitBrain, CodeOtherCluster, CodeHbaError:
			return fmt.Errorf("%s: %s (fix: %s)", f.Code, f.Problem, f.Fix)
		}
	}
	for _, n := range c.Nodes {
		if n.Name == to {
			continue
		}
		if v, ok := s.HBA[n.Name]; ok && !v.Allowed {
			return fmt.Errorf("%s's pg_hba file does not let %s connect for replication (%s), so %s could not follow it", to, n.Name, describeVerdict(v), n.Name)
		}
	}
	return nil
}

// rollback starts the old primary again after a failed switchover.
func rollback(ctx context.Context, t Target, old string, o RoleOptions, cause error) error {
	say(o, "  ✗ %v; rolling back: starting %s again as the primary", cause, old)
	if err := t.Control.Start(ctx, old); err != nil {
		return fmt.Errorf("switchover failed (%v) and %s did not start again: %w. Start it (`understudy apply`) before anything else", cause, old, err)
	}
	if t.Cluster.Failover != nil {
		// It boots read-only; its agent, still holding the lease, promotes it.
		if err := awaitPromoted(ctx, t, old, o.Timeout); err != nil {
			return fmt.Errorf("switchover failed (%v) and %s is not the primary again after its restart: %w", cause, old, err)
		}
		return fmt.Errorf("switchover rolled back, %s is the primary again and nothing was lost: %w", old, cause)
	}
	inRecovery, err := WaitReady(ctx, t.Control, old, o.Timeout)
	if err != nil {
		return fmt.Errorf("switchover failed (%v) and %s is not answering after its restart: %w", cause, old, err)
	}
	if inRecovery {
		return fmt.Errorf("switchover failed (%v) and %s came back as a standby; run `understudy check`", cause, old)
	}
	return fmt.Errorf("switchover rolled back, %s is the primary again and nothing was lost: %w", old, cause)
}

// repointOthers makes every other running standby follow the new primary:
// primary_conninfo is reloadable (13+), so no restart.
func repointOthers(ctx context.Context, t Target, nodes []string, to string, o RoleOptions) error {
	newNode, _ := t.Cluster.Node(to)
	for _, name := range nodes {
		n, _ := t.Cluster.Node(name)
		c, err := t.Control.Conn(ctx, n.Name)
		if err != nil {
			return fmt.Errorf("re-pointing %s at %s: %w", n.Name, to, err)
		}
		// Keep the passfile the node already uses.
		cur, err := pgops.PrimaryConninfoSetting(ctx, c)
		if err != nil {
			c.Close(ctx)
			return fmt.Errorf("re-pointing %s at %s: %w", n.Name, to, err)
		}
		passfile := pgconf.DefaultPassfile
		for _, f := range strings.Fields(cur) {
			if p, ok := strings.CutPrefix(f, "passfile="); ok {
				passfile = p
			}
		}
		err = pgops.SetSystem(ctx, c, pgops.PrimaryConninfo, pgconf.Conninfo(t.Cluster, n, newNode, passfile))
		c.Close(ctx)
		if err != nil {
			return fmt.Errorf("re-pointing %s at %s: %w", n.Name, to, err)
		}
		say(o, "  ✓ %s now follows %s (reloaded, no restart)", n.Name, to)
	}
	return nil
}

// awaitStream waits until node streams from primary and has replayed past
// where the primary's WAL was when the wait began (so a node stuck on an
// old timeline does not count).
func awaitStream(ctx context.Context, t Target, node, primary string, timeout time.Duration) error {
	pc, err := t.Control.Conn(ctx, primary)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", primary, err)
	}
	defer pc.Close(context.WithoutCancel(ctx))
	deadline := time.Now().Add(timeout)
	target, err := pgops.CurrentWALLSN(ctx, pc)
	if err != nil {
		return fmt.Errorf("reading %s's WAL position: %w", primary, err)
	}
	for {
		state, err := pgops.FollowerState(ctx, pc, node, target)
		if err != nil {
			return fmt.Errorf("reading pg_stat_replication on %s: %w", primary, err)
		}
		if state == "streaming" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is the primary, but %s is not streaming from it after %s (state %q): run `understudy rejoin %s`", primary, node, timeout, state, node)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
