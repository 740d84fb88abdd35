package live

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/pgops"
)

// PromoteDecision is what an emergency promote will do.
type PromoteDecision struct {
	Old       string            // the lost (or fenced) primary, "" if none is known
	Fence     []string          // nodes to stop and mark as standbys first
	LastKnown map[string]string // a writable old primary's WAL position when read
}

// DecidePromote is promote's decision over a reading: refuse while another
// node is up and writable, or runs without answering, unless fence; else
// fence every node that is neither the candidate nor a healthy standby.
// Pure.
func DecidePromote(st *Status, to string, fence bool) (*PromoteDecision, error) {
	s := st.Node(to)
	if s == nil {
		return nil, fmt.Errorf("there is no node %q", to)
	}
	if s.Role != RoleStandby {
		return nil, fmt.Errorf("%s is not a running standby (%s): only a standby can be promoted", to, s.Role)
	}
	d := &PromoteDecision{LastKnown: map[string]string{}}
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
	for _, n := range st.Nodes {
		if n.Name == to || n.Role == RoleStandby {
			continue
		}
		if d.Old == "" {
			d.Old = n.Name
		}
		d.Fence = append(d.Fence, n.Name)
	}
	return d, nil
}

// Promote makes the standby `to` the primary when the primary is lost. It
// refuses while another node is up and writable, unless Fence is set: then
// that node is stopped and marked a standby first (standby.signal), so it
// can never come back as a primary on its own. A primary that is down is
// marked the same way when its files can be reached. It reports how much
// WAL may be lost: what the old primary wrote that the standby never got.
func Promote(ctx context.Context, t Target, to string, o RoleOptions) (*RoleResult, error) {
	// Only the standby must be reachable: the old primary's server may be
	// the thing that is lost, and fencing copes without it.
	st, err := begin(ctx, t, &o, to)
	if err != nil {
		return nil, err
	}
	d, err := DecidePromote(st, to, o.Fence)
	if err != nil {
		return nil, err
	}
	s := st.Node(to)
	res := &RoleResult{NewPrimary: to, OldPrimary: d.Old}
	newNode, _ := t.Cluster.Node(to)
	for _, n := range d.Fence {
		if err := fence(ctx, t, n, newNode, o); err != nil {
			return nil, err
		}
	}
	lastKnown := d.LastKnown
	sc, err := t.Control.Conn(ctx, to)
	if err != nil {
		return nil, err
	}
	defer sc.Close(context.WithoutCancel(ctx))
	pos, err := pgops.ReadWALPositions(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("reading %s's WAL position: %w", to, err)
	}
	recv := pos.Known().String()
	if res.OldPrimary != "" {
		res.Lost = lossReport(ctx, t, res.OldPrimary, to, recv, lastKnown[res.OldPrimary], s.Facts.Timeline)
		say(o, "  %s", res.Lost)
	}
	start := time.Now()
	if err := pgops.Promote(ctx, sc, 60*time.Second); err != nil {
		return res, fmt.Errorf("promoting %s failed: %v; read its log", to, err)
	}
	say(o, "  ✓ %s promoted in %d ms: it accepts writes", to, time.Since(start).Milliseconds())
	for _, n := range t.Cluster.Nodes {
		if n.Name == to {
			continue
		}
		if _, err := pgops.EnsureSlot(ctx, sc, n.Slot()); err != nil {
			return res, err
		}
	}
	var others []string
	for _, n := range t.Cluster.Nodes {
		if n.Name != res.OldPrimary && n.Name != to && st.Node(n.Name).Role == RoleStandby {
			others = append(others, n.Name)
		}
	}
	if err := repointOthers(ctx, t, others, to, o); err != nil {
		return res, err
	}
	res.Routing = Routing(t.Cluster, to)
	if res.OldPrimary != "" {
		res.Routing += fmt.Sprintf("\nWhen %s is back, bring it in as a standby: understudy rejoin %s", res.OldPrimary, res.OldPrimary)
	}
	return res, nil
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

// lossReport compares the last WAL position each side knew.
func lossReport(ctx context.Context, t Target, old, to, recv, known string, tli int) string {
	r, err := pgops.ParseLSN(recv)
	if err != nil {
		return fmt.Sprintf("%s's received WAL position could not be read (%v), so what may be lost is unknown", to, err)
	}
	end := known
	if end == "" {
		out, err := t.Control.Run(ctx, old, pgconf.EndOfWALScript(recv, tli))
		if m := walEndRE.FindStringSubmatch(out); err == nil && m != nil {
			end = m[1] + m[2]
		} else if strings.Contains(out, "could not find a valid record after") {
			end = recv
		}
	}
	if end == "" {
		return fmt.Sprintf("%s has WAL up to %s. %s's own WAL could not be read, so what it wrote after that is unknown and would be lost", to, recv, old)
	}
	e, err := pgops.ParseLSN(end)
	if err != nil {
		return fmt.Sprintf("%s has WAL up to %s; where %s's own WAL ends could not be read (%v), so what it wrote after that is unknown and would be lost", to, recv, old, err)
	}
	if e <= r {
		return fmt.Sprintf("nothing lost: %s had received all of %s's WAL (up to %s)", to, old, recv)
	}
	return fmt.Sprintf("%s has WAL up to %s, but %s's WAL goes on to %s: %s of changes never reached %s and will not be in the new primary", to, recv, old, end, bytesText(int64(e-r)), to)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
