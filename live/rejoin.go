package live

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/pgops"
)

// RejoinReading is what rejoin decides its way from, read once the node
// is stopped: its control file, and the primary's identity, timeline and,
// when the node is on an older timeline, where that timeline ended.
type RejoinReading struct {
	Control         *pgops.ControlData // nil when ControlErr
	ControlErr      error
	PrimarySystemID string
	PrimaryTimeline pgops.Timeline
	Switchpoint     pgops.LSN
	SwitchpointErr  error
	// WALEnd: where the node's own WAL on its timeline ends, read before
	// pg_rewind when it crashed (0: not read).
	WALEnd pgops.LSN
}

// RewoundText says what pg_rewind undid (pure). A node that crashed gets
// crash recovery from pg_rewind first, which writes its own checkpoint at
// the end of the node's WAL: when that end was not past where the new
// primary took over, that checkpoint is all pg_rewind undoes, and no
// transaction of the node's is lost (what promote said).
func RewoundText(r RejoinReading, prim, why string) string {
	if r.WALEnd != 0 && r.SwitchpointErr == nil && r.Switchpoint != 0 && r.WALEnd <= r.Switchpoint {
		return fmt.Sprintf("pg_rewind: it had crashed, and its WAL ended at %s, where %s took over (%s), so it had written nothing %s lacks; pg_rewind's crash recovery wrote a checkpoint after that point, and only that checkpoint was undone (%s)", r.WALEnd, prim, r.Switchpoint, prim, why)
	}
	return "pg_rewind: it may have written WAL the new primary never got (" + why + "); those changes were undone"
}

// crashedEndOfWAL reads where a crashed node's WAL ends, before pg_rewind
// runs crash recovery on it (0 when it cannot tell).
func crashedEndOfWAL(ctx context.Context, t Target, node string, r RejoinReading) pgops.LSN {
	if r.Control == nil || r.Control.State != "in production" || r.SwitchpointErr != nil || r.Switchpoint == 0 {
		return 0
	}
	out, err := t.Control.Run(ctx, node, pgconf.EndOfWALScript(r.Switchpoint.String(), int(r.Control.Timeline)))
	if err != nil {
		return 0
	}
	if strings.Contains(out, "could not find a valid record after") {
		return r.Switchpoint // nothing at or after it
	}
	if m := walEndRE.FindStringSubmatch(out); m != nil {
		if end, err := pgops.ParseLSN(m[1] + m[2]); err == nil {
			return end
		}
	}
	return 0
}

// DecideRejoin picks the way back and says why (pure). RejoinRewind means:
// try pg_rewind, and fall back to a fresh clone if it cannot run; the text
// is then the reason rewinding is needed.
func DecideRejoin(r RejoinReading, prim string) (RejoinPath, string) {
	cd := r.Control
	switch {
	case cd == nil:
		return RejoinClone, fmt.Sprintf("fresh clone: its control file could not be read (%v)", firstLine(fmt.Sprint(r.ControlErr)))
	case cd.SystemID != r.PrimarySystemID:
		return RejoinClone, fmt.Sprintf("fresh clone: it holds a different cluster (system id %s, the primary's is %s), which can neither follow nor be rewound", cd.SystemID, r.PrimarySystemID)
	case cd.Timeline == r.PrimaryTimeline:
		return RejoinRepoint, fmt.Sprintf("re-point: it is on the primary's timeline %d, so it only has to follow", cd.Timeline)
	case r.SwitchpointErr == nil && cd.State == "shut down" && cd.Checkpoint < r.Switchpoint:
		return RejoinRepoint, fmt.Sprintf("re-point: it shut down cleanly at %s, before %s took over at %s, so nothing diverged and no pg_rewind is needed", cd.Checkpoint, prim, r.Switchpoint)
	}
	return RejoinRewind, fmt.Sprintf("its control file says %q at %s on timeline %d", cd.State, cd.Checkpoint, cd.Timeline)
}

// Rejoin's step kinds, beside StepPrepare, StepEnsureSlot, StepAwaitStream
// and StepBackupSlotMove.
const (
	StepStopNode  StepKind = "stop-node"  // stop Node if it runs
	StepRejoinWay StepKind = "rejoin-way" // read Node's control file, then re-point, pg_rewind or set aside for a clone (DecideRejoin)
	StepStartNode StepKind = "start-node" // start Node (a clone runs in its boot script when its data directory is empty)
)

// RejoinPlan is what rejoin will do: its steps, the only thing
// ExecuteRejoin runs. Nothing is set when the node already streams.
type RejoinPlan struct {
	Node, Primary string
	Nothing       string // why there is nothing to do, when there is not
	// The primary's identity and timeline, which the way back is decided
	// against once the node is stopped.
	PrimarySystemID string
	PrimaryTimeline pgops.Timeline
	Steps           []Step
}

// DecideRejoinPlan is rejoin's decision over a reading: refuse unless
// exactly one other node is the primary (and, when the node itself still
// accepts writes, unless fence), nothing to do when it streams already,
// else the steps. The way back (re-point, pg_rewind or a clone) is decided
// by DecideRejoin over the node's control file, read once it is stopped.
// Pure.
func DecideRejoinPlan(st *Status, c pgconf.Cluster, node string, fence bool) (*RejoinPlan, error) {
	n := st.Node(node)
	if n == nil {
		return nil, fmt.Errorf("there is no node %q", node)
	}
	prim := st.Primary
	if prim == "" || prim == node {
		others := []string{}
		for _, x := range st.Nodes {
			if x.Role == RolePrimary && x.Name != node {
				others = append(others, x.Name)
			}
		}
		if len(others) != 1 {
			return nil, errors.New("rejoin needs exactly one other node that is the primary; run `understudy check`")
		}
		prim = others[0]
		if !fence {
			return nil, fmt.Errorf("%s accepts writes, and so does %s: rejoining %s discards what was written to it since they split. Re-run with --fence if %s is the one to keep", node, prim, node, prim)
		}
	}
	p := st.Node(prim)
	plan := &RejoinPlan{Node: node, Primary: prim, PrimarySystemID: p.Facts.SystemIdentifier, PrimaryTimeline: p.Facts.Timeline}
	if streamingFrom(p, node) {
		plan.Nothing = "nothing to do: it already streams from " + prim
		return plan, nil
	}
	me, ok := c.Node(node)
	if !ok {
		return nil, fmt.Errorf("there is no node %q", node)
	}
	add := func(s Step) { plan.Steps = append(plan.Steps, s) }
	add(Step{Kind: StepPrepare, Node: node, Action: "check that the role-change steps can run on " + node + " (on Kamal: docker, the image, a container with the node's volumes)", Effect: "none"})
	add(Step{Kind: StepEnsureSlot, Node: prim, Slot: me.Slot(), Action: "make sure it holds slot " + me.Slot() + " for " + node, Effect: "none"})
	add(Step{Kind: StepStopNode, Node: node, Action: "stop it if it runs", Effect: "none: it is not the primary"})
	add(Step{Kind: StepRejoinWay, Node: node, Upstream: prim, Action: "read its control file, then re-point it at " + prim + ", pg_rewind it, or set its files aside for a fresh clone, whichever its control file allows", Effect: "none"})
	add(Step{Kind: StepStartNode, Node: node, Action: "start it as a standby of " + prim + " (an empty data directory clones " + prim + ")", Effect: "none"})
	add(Step{Kind: StepAwaitStream, Node: node, Upstream: prim, Action: "wait until it streams from " + prim, Effect: "none"})
	if hasSlot(p, BackupSlot) {
		add(Step{Kind: StepBackupSlotMove, Node: prim, Upstream: node, Slot: BackupSlot, Action: "move the backup agent's slot " + BackupSlot + " to " + node + " (the agent's session here ended once it has the WAL that slot starts at, 10 s at most)", Effect: "none"})
	}
	return plan, nil
}

// PlanRejoin reads the nodes and decides, changing nothing (`rejoin
// --dry-run`).
func PlanRejoin(ctx context.Context, t Target, node string, o RoleOptions) (*RejoinPlan, error) {
	st, err := begin(ctx, t, &o, node)
	if err != nil {
		return nil, err
	}
	return DecideRejoinPlan(st, t.Cluster, node, o.Fence)
}

// Rejoin brings a former primary (or a standby that fell off) back as a
// standby of the current primary: a plain re-point when it stopped cleanly
// before the switch, pg_rewind when it diverged, and a fresh clone (the old
// files set aside, not deleted) when rewinding cannot work. It is
// PlanRejoin followed by ExecuteRejoin.
func Rejoin(ctx context.Context, t Target, node string, o RoleOptions) (*RoleResult, error) {
	p, err := PlanRejoin(ctx, t, node, o)
	if err != nil {
		return nil, err
	}
	return ExecuteRejoin(ctx, t, p, o)
}

// ExecuteRejoin walks the steps DecideRejoinPlan chose, and nothing else.
func ExecuteRejoin(ctx context.Context, t Target, p *RejoinPlan, o RoleOptions) (*RoleResult, error) {
	o.defaults()
	res := &RoleResult{NewPrimary: p.Primary, OldPrimary: p.Node}
	if p.Nothing != "" {
		res.Kind, res.Path = RejoinNothing, p.Nothing
		return res, nil
	}
	for _, s := range p.Steps {
		if err := runStep(ctx, o, s, func(sctx context.Context) error { return rejoinStep(sctx, t, p, s, res, o) }); err != nil {
			if s.Kind == StepPrepare {
				return nil, fmt.Errorf("rejoin refused, nothing was changed: %w", err)
			}
			return res, err
		}
	}
	res.Routing = Routing(t.Cluster, p.Primary)
	return res, nil
}

func rejoinStep(ctx context.Context, t Target, p *RejoinPlan, s Step, res *RoleResult, o RoleOptions) error {
	switch s.Kind {
	case StepPrepare:
		return prepare(ctx, t, s.Node)
	case StepEnsureSlot:
		c, err := t.Control.Conn(ctx, s.Node)
		if err != nil {
			return fmt.Errorf("connecting to %s: %w", s.Node, err)
		}
		defer c.Close(context.WithoutCancel(ctx))
		_, err = pgops.EnsureSlot(ctx, c, s.Slot)
		return err
	case StepStopNode:
		if run, _ := t.Control.Running(ctx, s.Node); run {
			if err := t.Control.Stop(ctx, s.Node); err != nil {
				return fmt.Errorf("stopping %s to rejoin it: %w", s.Node, err)
			}
		}
		return nil
	case StepRejoinWay:
		return rejoinWay(ctx, t, p, s.Node, s.Upstream, res, o)
	case StepStartNode:
		return t.Control.Start(ctx, s.Node)
	case StepAwaitStream:
		if err := awaitStream(ctx, t, s.Node, s.Upstream, o.Timeout); err != nil {
			return err
		}
		say(o, "  ✓ %s streams from %s", s.Node, s.Upstream)
		return nil
	case StepBackupSlotMove:
		return moveBackupSlot(ctx, t, s, o)
	}
	return fmt.Errorf("internal error: a rejoin has no step %q", s.Kind)
}

// rejoinWay reads the stopped node's control file, decides the way back
// (DecideRejoin, pure) and prepares its files for it: re-pointed, rewound,
// or set aside for a fresh clone.
func rejoinWay(ctx context.Context, t Target, p *RejoinPlan, node, prim string, res *RoleResult, o RoleOptions) error {
	pn, _ := t.Cluster.Node(prim)
	me, _ := t.Cluster.Node(node)
	pc, err := t.Control.Conn(ctx, prim)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", prim, err)
	}
	defer pc.Close(context.WithoutCancel(ctx))
	r := RejoinReading{PrimarySystemID: p.PrimarySystemID, PrimaryTimeline: p.PrimaryTimeline}
	cd, err := controlData(ctx, t, node)
	if err != nil {
		r.ControlErr = err
	} else {
		r.Control = &cd
		if cd.SystemID == p.PrimarySystemID && cd.Timeline != p.PrimaryTimeline {
			r.Switchpoint, r.SwitchpointErr = pgops.TimelineSwitchpoint(ctx, pc, p.PrimaryTimeline, cd.Timeline)
		}
	}
	res.Kind, res.Path = DecideRejoin(r, prim)
	if res.Kind == RejoinRewind {
		r.WALEnd = crashedEndOfWAL(ctx, t, node, r)
		// Before 16, pg_rewind reads the source's timeline from its last
		// checkpoint, which a fresh promotion has not written yet
		// (PostgreSQL docs, app-pgrewind.html).
		if err := pgops.Checkpoint(ctx, pc); err != nil {
			return fmt.Errorf("CHECKPOINT on %s before pg_rewind: %w", prim, err)
		}
		out, rerr := t.Control.Run(ctx, node, pgconf.RewindScript(t.Cluster, pn))
		switch {
		case rerr != nil:
			res.Kind, res.Path = RejoinClone, fmt.Sprintf("fresh clone: pg_rewind could not run (%s)", lastLine(out))
		case strings.Contains(out, "no rewind required"):
			res.Kind, res.Path = RejoinRepoint, "re-point: pg_rewind found nothing to undo ("+res.Path+")"
		default:
			res.Path = RewoundText(r, prim, res.Path)
		}
	}
	if res.Kind == RejoinClone {
		stamp := time.Now().UTC().Format("20060102T150405Z")
		if _, err := t.Control.Run(ctx, node, pgconf.SetAsideScript(stamp)); err != nil {
			return fmt.Errorf("setting %s's old files aside for a fresh clone: %w", node, err)
		}
		res.Path += fmt.Sprintf("; its old files are kept in .understudy-old-%s inside its data directory (remove them once the standby is healthy)", stamp)
	} else if _, err := t.Control.Run(ctx, node, pgconf.FollowScript(t.Cluster, me, pn, "")); err != nil {
		return err
	}
	say(o, "  path: %s", res.Path)
	return nil
}
