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
	PrimaryTimeline int
	Switchpoint     pgops.LSN
	SwitchpointErr  error
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

// Rejoin brings a former primary (or a standby that fell off) back as a
// standby of the current primary: a plain re-point when it stopped cleanly
// before the switch, pg_rewind when it diverged, and a fresh clone (the old
// files set aside, not deleted) when rewinding cannot work.
func Rejoin(ctx context.Context, t Target, node string, o RoleOptions) (*RoleResult, error) {
	st, err := begin(ctx, t, &o, node)
	if err != nil {
		return nil, err
	}
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
		if !o.Fence {
			return nil, fmt.Errorf("%s accepts writes, and so does %s: rejoining %s discards what was written to it since they split. Re-run with --fence if %s is the one to keep", node, prim, node, prim)
		}
	}
	if err := prepare(ctx, t, node); err != nil {
		return nil, fmt.Errorf("rejoin refused, nothing was changed: %w", err)
	}
	res := &RoleResult{NewPrimary: prim, OldPrimary: node}
	pn, _ := t.Cluster.Node(prim)
	me, _ := t.Cluster.Node(node)
	p := st.Node(prim)
	for _, r := range p.Replication {
		if r.Name == node && r.State == "streaming" {
			res.Kind, res.Path = RejoinNothing, "nothing to do: it already streams from "+prim
			return res, nil
		}
	}
	pc, err := t.Control.Conn(ctx, prim)
	if err != nil {
		return nil, err
	}
	defer pc.Close(context.WithoutCancel(ctx))
	if _, err := pgops.EnsureSlot(ctx, pc, me.Slot()); err != nil {
		return nil, err
	}
	if run, _ := t.Control.Running(ctx, node); run {
		if err := t.Control.Stop(ctx, node); err != nil {
			return nil, fmt.Errorf("stopping %s to rejoin it: %w", node, err)
		}
	}
	r := RejoinReading{PrimarySystemID: p.Facts.SystemIdentifier, PrimaryTimeline: p.Facts.Timeline}
	cd, err := controlData(ctx, t, node)
	if err != nil {
		r.ControlErr = err
	} else {
		r.Control = &cd
		if cd.SystemID == p.Facts.SystemIdentifier && cd.Timeline != p.Facts.Timeline {
			r.Switchpoint, r.SwitchpointErr = pgops.TimelineSwitchpoint(ctx, pc, p.Facts.Timeline, cd.Timeline)
		}
	}
	res.Kind, res.Path = DecideRejoin(r, prim)
	if res.Kind == RejoinRewind {
		// Before 16, pg_rewind reads the source's timeline from its last
		// checkpoint, which a fresh promotion has not written yet
		// (PostgreSQL docs, app-pgrewind.html).
		if err := pgops.Checkpoint(ctx, pc); err != nil {
			return res, fmt.Errorf("CHECKPOINT on %s before pg_rewind: %w", prim, err)
		}
		out, rerr := t.Control.Run(ctx, node, pgconf.RewindScript(t.Cluster, pn))
		switch {
		case rerr != nil:
			res.Kind, res.Path = RejoinClone, fmt.Sprintf("fresh clone: pg_rewind could not run (%s)", lastLine(out))
		case strings.Contains(out, "no rewind required"):
			res.Kind, res.Path = RejoinRepoint, "re-point: pg_rewind found nothing to undo ("+res.Path+")"
		default:
			res.Path = "pg_rewind: it may have written WAL the new primary never got (" + res.Path + "); those changes were undone"
		}
	}
	if res.Kind == RejoinClone {
		stamp := time.Now().UTC().Format("20060102T150405Z")
		if _, err := t.Control.Run(ctx, node, pgconf.SetAsideScript(stamp)); err != nil {
			return res, fmt.Errorf("setting %s's old files aside for a fresh clone: %w", node, err)
		}
		res.Path += fmt.Sprintf("; its old files are kept in .understudy-old-%s inside its data directory (remove them once the standby is healthy)", stamp)
	} else if _, err := t.Control.Run(ctx, node, pgconf.FollowScript(t.Cluster, me, pn, "")); err != nil {
		return res, err
	}
	say(o, "  path: %s", res.Path)
	if err := t.Control.Start(ctx, node); err != nil {
		return res, err
	}
	if err := waitFollowers(ctx, Target{Cluster: pgconf.Cluster{Nodes: []pgconf.Node{pn, me}}, Control: t.Control}, pc, prim, o.Timeout); err != nil {
		return res, err
	}
	say(o, "  ✓ %s streams from %s", node, prim)
	res.Routing = Routing(t.Cluster, prim)
	return res, nil
}
