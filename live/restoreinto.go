package live

import (
	"fmt"
)

// RestoreIntoFacts is what `restore --into NODE` reads before it decides.
type RestoreIntoFacts struct {
	Status    *Status
	Node      string
	DataEmpty bool   // the node's data directory is missing or empty
	DataWhat  string // what is there when it is not (for the message)
}

// DecideRestoreInto is whether the backups may be restored into a node,
// which then starts as the primary: only when that node is down with an
// empty data directory and no other node is a primary (the cluster was
// lost). Pure.
func DecideRestoreInto(f RestoreIntoFacts) error {
	var target *NodeStatus
	for i := range f.Status.Nodes {
		if f.Status.Nodes[i].Name == f.Node {
			target = &f.Status.Nodes[i]
		}
	}
	if target == nil {
		return fmt.Errorf("%s is not a node of this cluster", f.Node)
	}
	if target.Reachable || target.Running != nil && *target.Running {
		return &RestoreIntoRefusal{What: f.Node + " is running", Fix: "understudy never restores over a running node: to take data from a point in time, restore --into DIR (a new directory on this machine) instead; to rebuild " + f.Node + " from the primary, use rejoin"}
	}
	for _, n := range f.Status.Nodes {
		if n.Name != f.Node && n.Reachable && n.Role == RolePrimary {
			return &RestoreIntoRefusal{What: n.Name + " is the primary and runs, so a restored " + f.Node + " would be a second primary",
				Fix: "restore into a node only when the cluster is lost; to take data from a point in time, restore --into DIR; to rebuild " + f.Node + " as a standby, rejoin it"}
		}
	}
	if !f.DataEmpty {
		return &RestoreIntoRefusal{What: f.Node + "'s data directory is not empty (" + f.DataWhat + ")",
			Fix: "understudy never deletes or restores over a data directory: if that data is lost for good, move it aside yourself, then run again"}
	}
	return nil
}

// RestoreIntoRefusal is a refusal to restore into a node, with the fix.
type RestoreIntoRefusal struct{ What, Fix string }

func (r *RestoreIntoRefusal) Error() string { return r.What + "\n  fix: " + r.Fix }
