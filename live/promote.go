package live

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/pgops"
)

// Promote's step kinds, beside the switchover's (StepCandidateSlots,
// StepRepoint, StepBackupSlotMove).
const (
	StepFence       StepKind = "fence"        // stop Node if it runs and mark it a standby of Upstream
	StepLossReport  StepKind = "loss-report"  // compare what Node received with where Upstream's own WAL ends
	StepPromoteNow  StepKind = "promote-now"  // promote Node: it accepts writes
	StepAwaitStream StepKind = "await-stream" // wait until Node streams from Upstream
)

// PromoteDecision is what an emergency promote will do: its steps, the
// only thing ExecutePromote runs.
type PromoteDecision struct {
	To        string
	Old       string               // the lost (or fenced) primary, "" if none is known
	Fence     []string             // nodes to stop and mark as standbys first
	LastKnown map[string]pgops.LSN // a writable old primary's WAL position when read
	Timeline  pgops.Timeline       // the candidate's timeline when read
	// BackupStays is set when the backup agent's slot stays on the new
	// primary because no standby is left to stream from (rejoin moves it).
	BackupStays bool
	Steps       []Step
}

// DecidePromote is promote's decision over a reading: refuse while another
// node is up and writable, or runs without answering, unless fence; else
// fence every node that is neither the candidate nor a healthy standby,
// promote, give the new primary a slot for every other node, re-point the
// other standbys, and move the backup agent's slot to one of them. Pure.
func DecidePromote(st *Status, c pgconf.Cluster, to string, fence bool) (*PromoteDecision, error) {
	s := st.Node(to)
	if s == nil {
		return nil, fmt.Errorf("there is no node %q", to)
	}
	if s.Role != RoleStandby {
		return nil, fmt.Errorf("%s is not a running standby (%s): only a standby can be promoted", to, s.Role)
	}
	if c.Failover != nil {
		if st.Lease == nil {
			st.Lease = &LeaseReading{Error: "not read"}
		}
		if err := leasePreflight(st, to, false); err != nil {
			return nil, fmt.Errorf("promote refused, nothing was changed: %w", err)
		}
	}
	d := &PromoteDecision{To: to, LastKnown: map[string]pgops.LSN{}, Timeline: s.Facts.Timeline}
	for _, n := range st.Nodes {
		if n.Name == to {
			continue
		}
		switch {
		case n.Role == RolePrimary:
			d.Old = n.Name
			if !fence {
				return nil, fmt.Errorf("%s is up and accepts writes: promoting %s now would make two primaries. For a planned swap with no loss run `understudy switchover %s`; if %s must be taken out, re-run with --fence (it stops %s and marks it a standby of %s)", n.Name, to, to, n.Name, n.Name, to)
			}
			d.LastKnown[n.Name] = n.Facts.CurrentLSN
		case !n.Reachable && n.Running != nil && *n.Running && !fence:
			return nil, fmt.Errorf("%s runs but does not answer (%s): it may still accept writes from apps that reach it. Stop it, or re-run with --fence to have understudy stop and mark it", n.Name, firstLine(n.Error))
		}
	}
	var standbys []string
	for _, n := range st.Nodes {
		if n.Name == to {
			continue
		}
		if n.Role == RoleStandby {
			standbys = append(standbys, n.Name)
			continue
		}
		if d.Old == "" {
			d.Old = n.Name
		}
		d.Fence = append(d.Fence, n.Name)
	}
	add := func(s Step) { d.Steps = append(d.Steps, s) }
	for _, n := range d.Fence {
		add(Step{Kind: StepFence, Node: n, Upstream: to, Action: "stop it if it runs, and mark it a standby of " + to + " (standby.signal), so it can only come back read-only", Effect: "none: it is lost or taken out"})
	}
	if d.Old != "" {
		add(Step{Kind: StepLossReport, Node: to, Upstream: d.Old, Action: "compare the WAL it received with where " + d.Old + "'s own WAL ends: what would be lost", Effect: "none"})
	}
	if c.Failover != nil {
		// Through the lease: its agent takes it and promotes; what it
		// received becomes the bar (the loss above is accepted).
		add(Step{Kind: StepLeaseFor, Node: to, Action: "let its agent take the free failover lease: publish its own WAL position and a handover to it in etcd", Effect: "none"})
		add(Step{Kind: StepAwaitPromote, Node: to, Action: "wait until its agent takes the lease and promotes it", Effect: "writes resume on " + to})
	} else {
		add(Step{Kind: StepPromoteNow, Node: to, Action: "promote it", Effect: "writes resume on " + to})
	}
	var slots []string
	for _, n := range c.Nodes {
		if n.Name != to {
			slots = append(slots, n.Slot())
		}
	}
	add(Step{Kind: StepCandidateSlots, Node: to, Slots: slots, Action: "make sure it holds slots " + strings.Join(slots, ", ") + " for the other nodes", Effect: "none"})
	for _, n := range standbys {
		add(Step{Kind: StepRepoint, Node: n, Upstream: to, Action: "follow " + to + " (primary_conninfo, reloaded)", Effect: "none"})
	}
	if hasSlot(s, BackupSlot) {
		if len(standbys) > 0 {
			add(Step{Kind: StepAwaitStream, Node: standbys[0], Upstream: to, Action: "wait until it streams from " + to, Effect: "none"})
			add(Step{Kind: StepBackupSlotMove, Node: to, Upstream: standbys[0], Slot: BackupSlot, Action: "move the backup agent's slot " + BackupSlot + " to " + standbys[0] + " (the agent's session here ended once it has the WAL that slot starts at, 10 s at most)", Effect: "none"})
		} else {
			d.BackupStays = true
		}
	}
	return d, nil
}

// PlanPromote reads the nodes and decides, changing nothing (`promote
// --dry-run`). Only the standby's server must be reachable: the old
// primary's may be the thing that is lost, and fencing copes without it.
func PlanPromote(ctx context.Context, t Target, to string, o RoleOptions) (*PromoteDecision, error) {
	st, err := begin(ctx, t, &o, to)
	if err != nil {
		return nil, err
	}
	return DecidePromote(st, t.Cluster, to, o.Fence)
}

// Promote makes the standby `to` the primary when the primary is lost. It
// refuses while another node is up and writable, unless Fence is set: then
// that node is stopped and marked a standby first (standby.signal), so it
// can never come back as a primary on its own. A primary that is down is
// marked the same way when its files can be reached. It reports how much
// WAL may be lost: what the old primary wrote that the standby never got.
// It is PlanPromote followed by ExecutePromote.
func Promote(ctx context.Context, t Target, to string, o RoleOptions) (*RoleResult, error) {
	d, err := PlanPromote(ctx, t, to, o)
	if err != nil {
		return nil, err
	}
	return ExecutePromote(ctx, t, d, o)
}

// ExecutePromote walks the steps DecidePromote chose, and nothing else.
func ExecutePromote(ctx context.Context, t Target, d *PromoteDecision, o RoleOptions) (*RoleResult, error) {
	o.defaults()
	res := &RoleResult{NewPrimary: d.To, OldPrimary: d.Old}
	promoted := false
	for _, s := range d.Steps {
		if err := runStep(ctx, o, s, func(sctx context.Context) error { return promoteStep(sctx, t, d, s, res, o) }); err != nil {
			if promoted {
				return res, err
			}
			return nil, err
		}
		promoted = promoted || s.Kind == StepPromoteNow || s.Kind == StepAwaitPromote
	}
	res.Routing = Routing(t.Cluster, d.To)
	if d.Old != "" {
		res.Routing += fmt.Sprintf("\nWhen %s is back, bring it in as a standby: understudy rejoin %s", d.Old, d.Old)
	}
	if d.BackupStays {
		res.Routing += fmt.Sprintf("\nThe backup agent streams from %s until a standby is back; `rejoin` moves it there.", d.To)
	}
	return res, nil
}

func promoteStep(ctx context.Context, t Target, d *PromoteDecision, s Step, res *RoleResult, o RoleOptions) error {
	withConn := func(node string, f func(*pgx.Conn) error) error {
		c, err := t.Control.Conn(ctx, node)
		if err != nil {
			return fmt.Errorf("connecting to %s: %w", node, err)
		}
		defer c.Close(context.WithoutCancel(ctx))
		return f(c)
	}
	switch s.Kind {
	case StepFence:
		n, _ := t.Cluster.Node(s.Upstream)
		return fence(ctx, t, s.Node, n, o)
	case StepLossReport:
		return withConn(s.Node, func(c *pgx.Conn) error {
			pos, err := pgops.ReadWALPositions(ctx, c)
			if err != nil {
				return fmt.Errorf("reading %s's WAL position: %w", s.Node, err)
			}
			res.Lost = lossReport(ctx, t, s.Upstream, s.Node, pos.Known(), d.LastKnown[s.Upstream], d.Timeline)
			say(o, "  %s", res.Lost)
			return nil
		})
	case StepPromoteNow:
		return withConn(s.Node, func(c *pgx.Conn) error {
			start := time.Now()
			if err := pgops.Promote(ctx, c, 60*time.Second); err != nil {
				return fmt.Errorf("promoting %s failed: %v; read its log", s.Node, err)
			}
			say(o, "  ✓ %s promoted in %d ms: it accepts writes", s.Node, time.Since(start).Milliseconds())
			return nil
		})
	case StepLeaseFor:
		if t.Lease == nil {
			return errors.New("failover is on, but this target has no way to reach etcd")
		}
		return withConn(s.Node, func(c *pgx.Conn) error {
			pos, err := pgops.ReadWALPositions(ctx, c)
			if err != nil {
				return fmt.Errorf("reading %s's WAL position: %w", s.Node, err)
			}
			if err := t.Lease.LeaseFor(ctx, s.Node, d.Timeline, pos.Known()); err != nil {
				return fmt.Errorf("%w (nothing was promoted)", err)
			}
			say(o, "  ✓ published %s's position %s as the bar, with a handover of the lease to it", s.Node, pos.Known())
			return nil
		})
	case StepAwaitPromote:
		start := time.Now()
		if err := awaitPromoted(ctx, t, s.Node, o.Timeout); err != nil {
			return err
		}
		say(o, "  ✓ %s's agent took the lease and promoted it in %d ms: it accepts writes", s.Node, time.Since(start).Milliseconds())
		return nil
	case StepCandidateSlots:
		return withConn(s.Node, func(c *pgx.Conn) error {
			for _, slot := range s.Slots {
				if _, err := pgops.EnsureSlot(ctx, c, slot); err != nil {
					return err
				}
			}
			return nil
		})
	case StepRepoint:
		return repointOthers(ctx, t, []string{s.Node}, s.Upstream, o)
	case StepAwaitStream:
		return awaitStream(ctx, t, s.Node, s.Upstream, o.Timeout)
	case StepBackupSlotMove:
		return moveBackupSlot(ctx, t, s, o)
	}
	return fmt.Errorf("internal error: a promote has no step %q", s.Kind)
}

// fence stops a node and marks it a standby of upstream. A node whose files
// cannot be reached is left to its boot script, which refuses to start a
// second primary while another node is one.
func fence(ctx context.Context, t Target, node string, upstream pgconf.Node, o RoleOptions) error {
	running, err := t.Control.Running(ctx, node)
	if err != nil {
		say(o, "  ! cannot tell whether %s runs (%v); its boot script will refuse to start it as a second primary", node, err)
		return nil
	}
	if running {
		if err := t.Control.Stop(ctx, node); err != nil {
			return fmt.Errorf("fencing %s: stopping it failed: %w; nothing was promoted", node, err)
		}
		say(o, "  ✓ stopped %s", node)
	}
	n, _ := t.Cluster.Node(node)
	note := fmt.Sprintf("fenced by understudy promote at %s: %s took over as the primary", time.Now().UTC().Format(time.RFC3339), upstream.Name)
	if _, err := t.Control.Run(ctx, node, pgconf.FollowScript(t.Cluster, n, upstream, note)); err != nil {
		say(o, "  ! could not mark %s as a standby (%v); its boot script will still refuse to start it as a second primary while %s is one", node, firstLine(err.Error()), upstream.Name)
		return nil
	}
	say(o, "  ✓ fenced %s: marked a standby of %s, so it can only come back read-only", node, upstream.Name)
	return nil
}

var walEndRE = regexp.MustCompile(`(?:invalid record length|invalid magic number|record with incorrect prev-link|invalid resource manager ID|contrecord is requested|zero-length record|record length) at ([0-9A-F]+/[0-9A-F]+)|at ([0-9A-F]+/[0-9A-F]+): (?:invalid|unexpected)`)

// lossReport compares the last WAL position each side knew: recv, what
// the candidate received, and known, the old primary's position when it was
// last read (0 when it was not: its own WAL is then read where it lies).
func lossReport(ctx context.Context, t Target, old, to string, recv, known pgops.LSN, tli pgops.Timeline) string {
	end := known
	if end == 0 {
		out, err := t.Control.Run(ctx, old, pgconf.EndOfWALScript(recv.String(), int(tli)))
		if m := walEndRE.FindStringSubmatch(out); err == nil && m != nil {
			e, perr := pgops.ParseLSN(m[1] + m[2])
			if perr != nil {
				return fmt.Sprintf("%s has WAL up to %s; where %s's own WAL ends could not be read (%v), so what it wrote after that is unknown and would be lost", to, recv, old, perr)
			}
			end = e
		} else if strings.Contains(out, "could not find a valid record after") {
			end = recv
		}
	}
	if end == 0 {
		return fmt.Sprintf("%s has WAL up to %s. %s's own WAL could not be read, so what it wrote after that is unknown and would be lost", to, recv, old)
	}
	if end <= recv {
		return fmt.Sprintf("nothing lost: %s had received all of %s's WAL (up to %s)", to, old, recv)
	}
	return fmt.Sprintf("%s has WAL up to %s, but %s's WAL goes on to %s: %s of changes never reached %s and will not be in the new primary", to, recv, old, end, bytesText(int64(end-recv)), to)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
