package live

import (
	"context"
	"fmt"
	"strings"

	"github.com/understudy-dev/understudy/pgops"
)

// Step is one thing apply would do, for the plan shown before it runs.
type Step struct {
	Node   string `json:"node"`
	Action string `json:"action"`
	Effect string `json:"effect"` // what the app notices
}

// PlanApply reads the nodes and lists what Apply would do, changing
// nothing: which nodes start, reload or restart (and what that costs the
// app), the role, the slots, and how much each clone copies.
func PlanApply(ctx context.Context, t Target) ([]Step, error) {
	st, err := Gather(ctx, t)
	if err != nil {
		return nil, err
	}
	var steps []Step
	add := func(node, action, effect string) { steps = append(steps, Step{node, action, effect}) }
	prim := st.Primary
	if prim == "" {
		for _, n := range st.Nodes {
			if n.Role == "primary" || n.Reachable {
				return nil, fmt.Errorf("no single writable primary (%s is %s): run `understudy check`", n.Name, n.Role)
			}
		}
		prim = t.Cluster.InitialPrimary
		if n := st.Node(prim); n.Running != nil && *n.Running {
			return nil, fmt.Errorf("%s runs but cannot be reached: %s", t.Control.Where(prim), n.Error)
		}
		add(prim, "start it", "a new, empty cluster is created if no node holds data; otherwise its own")
	}
	var dbBytes int64
	for _, n := range st.Nodes {
		if !n.Reachable {
			continue
		}
		c, err := t.Control.Conn(ctx, n.Name)
		if err != nil {
			return nil, err
		}
		why, err := notOurConfig(ctx, c, t.Cluster)
		var diff []string
		var restart bool
		if err == nil && why == "" {
			d, live, derr := settingsDiff(ctx, c, t.Cluster)
			err = derr
			for _, s := range d {
				diff = append(diff, s.Name+" → "+s.Value)
				restart = restart || live[s.Name].Context == "postmaster"
			}
		}
		if n.Name == prim {
			if err == nil {
				var role pgops.RoleState
				if role, err = pgops.ReadRole(ctx, c, t.Cluster.ReplUser, t.Password); err == nil && !role.OK() {
					add(n.Name, "create or update the replication role "+t.Cluster.ReplUser, "none")
				}
			}
			if err == nil {
				err = c.QueryRow(ctx, "SELECT sum(pg_database_size(oid))::bigint FROM pg_database").Scan(&dbBytes)
			}
		}
		c.Close(ctx)
		if err != nil {
			return nil, err
		}
		pause := "replication pauses for a few seconds"
		if n.Name == prim {
			pause = "the app cannot write for the few seconds it takes (asked first, or --yes)"
		}
		switch {
		case why != "":
			add(n.Name, "reboot: "+why, pause)
		case restart:
			add(n.Name, "restart for: "+strings.Join(diff, ", "), pause)
		case len(diff) > 0:
			add(n.Name, "reload for: "+strings.Join(diff, ", "), "none")
		}
	}
	p := st.Node(prim)
	for _, n := range t.Cluster.Nodes {
		if n.Name == prim {
			continue
		}
		has := false
		if p != nil {
			for _, s := range p.Slots {
				has = has || s.Name == n.Slot()
			}
		}
		if !has {
			add(prim, "create slot "+n.Slot()+" before "+n.Name+" clones", "none")
		}
		ns := st.Node(n.Name)
		if ns.Reachable {
			continue
		}
		what := fmt.Sprintf("start it; if its data directory is empty it clones %s (about %s)", prim, bytesText(dbBytes))
		if dbBytes == 0 {
			what = "start it; if its data directory is empty it clones " + prim
		}
		add(n.Name, what, "none: the primary keeps serving; the clone reads its disk")
	}
	return steps, nil
}

// StepsText renders a plan.
func StepsText(steps []Step) string {
	if len(steps) == 0 {
		return "nothing to do: every node already matches the plan\n"
	}
	var b strings.Builder
	for i, s := range steps {
		fmt.Fprintf(&b, "  %d. %s: %s\n     effect on the app: %s\n", i+1, s.Node, s.Action, s.Effect)
	}
	return b.String()
}
