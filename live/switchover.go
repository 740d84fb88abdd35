package live

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/pgops"
)

// SwitchoverPlan is what a switchover will do, decided before anything
// changes: the swap, the slots the candidate gets for the other nodes,
// and the other standbys that will follow it.
type SwitchoverPlan struct {
	Old, To string
	Slots   []string // on To, before the stop
	Repoint []string // other running standbys, re-pointed at To by a reload
	Steps   []Step   // the same, for --dry-run
}

// DecideSwitchover is the switchover's decision over a reading: the
// refusals (no single primary, the candidate not streaming or too far
// behind, split brain, parity, a pg_hba that would shut a node out) and
// the plan. Pure.
func DecideSwitchover(st *Status, c pgconf.Cluster, to string, o RoleOptions) (*SwitchoverPlan, error) {
	o.defaults()
	if err := preflight(st, c, to, o); err != nil {
		return nil, fmt.Errorf("switchover refused, nothing was changed: %w", err)
	}
	p := &SwitchoverPlan{Old: st.Primary, To: to}
	for _, n := range c.Nodes {
		if n.Name != to {
			p.Slots = append(p.Slots, n.Slot())
		}
	}
	for _, n := range c.Nodes {
		if n.Name != p.Old && n.Name != to && st.Node(n.Name).Role == RoleStandby {
			p.Repoint = append(p.Repoint, n.Name)
		}
	}
	add := func(node, action, effect string) {
		p.Steps = append(p.Steps, Step{Kind: "switchover", Node: node, Action: action, Effect: effect})
	}
	add(to, "make sure it holds slots "+strings.Join(p.Slots, ", ")+" for after the swap", "none")
	add(p.Old, "CHECKPOINT, then stop it cleanly", "writes pause from here")
	add(to, "prove it has all of "+p.Old+"'s WAL (its shutdown checkpoint), then promote it", "writes resume on "+to)
	add(p.Old, "make it a standby of "+to+" (standby.signal, primary_conninfo) and start it", "none")
	for _, n := range p.Repoint {
		add(n, "follow "+to+" (primary_conninfo, reloaded)", "none")
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

// ExecuteSwitchover carries out a plan DecideSwitchover made.
func ExecuteSwitchover(ctx context.Context, t Target, p *SwitchoverPlan, o RoleOptions) (*RoleResult, error) {
	o.defaults()
	old, to := p.Old, p.To
	if err := prepare(ctx, t, old, to); err != nil {
		return nil, fmt.Errorf("switchover refused, nothing was changed: %w", err)
	}
	res := &RoleResult{OldPrimary: old, NewPrimary: to}
	sc, err := t.Control.Conn(ctx, to)
	if err != nil {
		return nil, err
	}
	defer func() { sc.Close(context.WithoutCancel(ctx)) }()
	// Slots on the future primary for every other node, so none of them
	// loses WAL after the swap. Physical slots can be made on a standby.
	for _, slot := range p.Slots {
		if created, err := pgops.EnsureSlot(ctx, sc, slot); err != nil {
			return nil, fmt.Errorf("switchover refused, nothing else was changed: %w", err)
		} else if created {
			say(o, "  ✓ slot %s created on %s for after the swap", slot, to)
		}
	}
	// The promote must not wait out wal_retrieve_retry_interval. When the old
	// primary stops, the candidate's walreceiver loses it and the startup
	// process starts a new one; a promote request that finds it waiting on
	// that walreceiver is handled as one more failed attempt, and PostgreSQL
	// sleeps the rest of the retry interval since the previous failure
	// before it reads pg_wal once more and promotes (a 2 s stall in about 1
	// switchover of 10 with the generated 2 s). So, for the switchover only,
	// the candidate retries every 20 ms; the generated value comes back when
	// this function returns, whatever happened.
	if err := pgops.SetSystem(ctx, sc, pgops.WALRetrieveRetryInterval, "20ms"); err != nil {
		return nil, fmt.Errorf("switchover refused, nothing else was changed: %w", err)
	}
	defer func() {
		if err := pgops.ResetSystem(context.WithoutCancel(ctx), sc, pgops.WALRetrieveRetryInterval); err != nil {
			say(o, "  ! could not reset wal_retrieve_retry_interval on %s (%v): run `ALTER SYSTEM RESET wal_retrieve_retry_interval; SELECT pg_reload_conf();` there", to, err)
		}
	}()
	pc, err := t.Control.Conn(ctx, old)
	if err != nil {
		return nil, err
	}
	if err := pgops.Checkpoint(ctx, pc); err != nil {
		pc.Close(ctx)
		return nil, fmt.Errorf("switchover refused: CHECKPOINT on %s failed: %w", old, err)
	}
	pc.Close(ctx)

	// From here on, an interruption must not leave the cluster without a
	// primary: the rest runs to the end (or rolls back) even if ctx ends.
	cctx := context.WithoutCancel(ctx)
	o.hook("before-stop")
	start := time.Now()
	say(o, "stopping %s cleanly (writes pause now)", old)
	if err := t.Control.Stop(cctx, old); err != nil {
		return nil, rollback(cctx, t, old, o, fmt.Errorf("stopping %s: %w", old, err))
	}
	say(o, "  ✓ %s stopped (%d ms)", old, time.Since(start).Milliseconds())
	o.hook("after-stop")
	if ctx.Err() != nil {
		return nil, rollback(cctx, t, old, o, fmt.Errorf("interrupted after %s stopped: %w", old, ctx.Err()))
	}
	cd, err := controlData(cctx, t, old)
	if err != nil {
		return nil, rollback(cctx, t, old, o, err)
	}
	if cd.State != "shut down" {
		return nil, rollback(cctx, t, old, o, fmt.Errorf("%s did not shut down cleanly (its control file says %q), so the standby cannot be proven complete", old, cd.State))
	}
	ckpt := cd.Checkpoint
	// The walsender sends up to and including the shutdown checkpoint
	// before it exits, so a complete standby has received past its start.
	var pos pgops.WALPositions
	deadline := time.Now().Add(10 * time.Second)
	for {
		if pos, err = pgops.ReadWALPositions(cctx, sc); err != nil {
			return nil, rollback(cctx, t, old, o, fmt.Errorf("reading %s's WAL position: %w", to, err))
		}
		if pos.Received > ckpt && pos.Replayed >= pos.Received {
			break
		}
		if time.Now().After(deadline) {
			return nil, rollback(cctx, t, old, o, fmt.Errorf("%s received WAL up to %s and replayed to %s, short of %s's shutdown checkpoint at %s", to, pos.Received, pos.Replayed, old, cd.Checkpoint))
		}
		time.Sleep(5 * time.Millisecond)
	}
	say(o, "  ✓ %s has all of %s's WAL (shutdown checkpoint %s, received %s; %d ms)", to, old, cd.Checkpoint, pos.Received, time.Since(start).Milliseconds())
	if err := pgops.Promote(cctx, sc, 60*time.Second); err != nil {
		return nil, rollback(cctx, t, old, o, fmt.Errorf("promoting %s failed (%v); if %s is writable now, do not start %s: run `understudy rejoin %s`", to, err, to, old, old))
	}
	res.WriteOutage = time.Since(start)
	say(o, "  ✓ %s promoted: writable again after %d ms", to, res.WriteOutage.Milliseconds())

	newNode, _ := t.Cluster.Node(to)
	oldNode, _ := t.Cluster.Node(old)
	if _, err := t.Control.Run(cctx, old, pgconf.FollowScript(t.Cluster, oldNode, newNode, "")); err != nil {
		return res, fmt.Errorf("%s is the primary, but pointing %s at it failed: %w. Run `understudy rejoin %s`", to, old, err, old)
	}
	if err := t.Control.Start(cctx, old); err != nil {
		return res, fmt.Errorf("%s is the primary, but starting %s as its standby failed: %w. Run `understudy rejoin %s`", to, old, err, old)
	}
	if err := repointOthers(cctx, t, p.Repoint, to, o); err != nil {
		return res, err
	}
	if err := waitFollowers(cctx, t, sc, to, o.Timeout); err != nil {
		return res, err
	}
	say(o, "  ✓ %s streams from %s, without pg_rewind", old, to)
	res.Routing = Routing(t.Cluster, to)
	return res, nil
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

// waitFollowers waits until every other node streams from the primary and
// has replayed past where the primary's WAL was when the wait began (so a
// node stuck on an old timeline does not count).
func waitFollowers(ctx context.Context, t Target, pc *pgx.Conn, primary string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	target, err := pgops.CurrentWALLSN(ctx, pc)
	if err != nil {
		return fmt.Errorf("reading %s's WAL position: %w", primary, err)
	}
	for _, n := range t.Cluster.Nodes {
		if n.Name == primary {
			continue
		}
		for {
			state, err := pgops.FollowerState(ctx, pc, n.Name, target)
			if err != nil {
				return fmt.Errorf("reading pg_stat_replication on %s: %w", primary, err)
			}
			if state == "streaming" {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s is the primary, but %s is not streaming from it after %s (state %q): run `understudy rejoin %s`", primary, n.Name, timeout, state, n.Name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}
