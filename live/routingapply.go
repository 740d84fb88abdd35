package live

import (
	"context"
	"fmt"
)

// The node agents' and the router's part of apply (Kamal): after the
// nodes and the backup accessory, each accessory read once (ReadAgent:
// its containers, the binary and the file it mounts), decided
// (DecideRouting, pure) and carried out by the same executor.
const (
	StepRoutingBinary StepKind = "routing-binary" // put the understudy binary where an agent's accessory mounts it
	StepRoutingBoot   StepKind = "routing-boot"   // kamal accessory boot: a container is missing
	StepRoutingReboot StepKind = "routing-reboot" // kamal accessory reboot: a new binary, cluster.json or haproxy.cfg
	StepRoutingStart  StepKind = "routing-start"  // docker container start: it exists, stopped
)

// RoutingKind is what a routing accessory runs.
type RoutingKind int

const (
	RoutingAgent   RoutingKind = iota // a node agent (understudy agent)
	RoutingRouter                     // the router (HAProxy)
	RoutingWitness                    // automatic failover's witness (understudy witness): the third etcd member
)

// RoutingDeployer runs a node agent's, the router's or the witness's
// accessory.
type RoutingDeployer interface {
	BackupAgentDeployer
	// Name is the accessory's name (a Step's Node).
	Name() string
	// Kind is what it runs.
	Kind() RoutingKind
}

// DecideRouting is the routing accessories' steps, in the order given
// (the witness, the agents, then the router); failover says whether
// automatic failover is on, for what a restart does. Pure.
func DecideRouting(facts []AgentFacts, kinds []RoutingKind, failover bool) []Step {
	var steps []Step
	for i, f := range facts {
		what, binary, cfg := "the node agent", "understudy agent", "cluster.json"
		effect := "none: the router keeps its last answers from it for a few checks, then treats the node as down until it is back"
		if failover {
			effect += "; with failover on, restarting the primary's agent fences its node (its watchdog outlives it), so apply first hands the lease to the standby while the primary holds it (docs/failover.md)"
		}
		switch kinds[i] {
		case RoutingRouter:
			what, cfg = "the router", "haproxy.cfg"
			effect = "the app's open connections through it are cut once; it reconnects"
		case RoutingWitness:
			what, binary = "failover's witness", "understudy witness"
			effect = "failover's third etcd member is away while it restarts: the two database servers keep the quorum (an etcd election, no failover)"
		}
		if !f.BinaryCurrent {
			steps = append(steps, Step{Kind: StepRoutingBinary, Node: f.Name, Action: "put the understudy binary (" + f.Binary + ") on its server, where " + f.Name + " mounts it", Effect: "none"})
		}
		switch {
		case f.Container == "absent":
			steps = append(steps, Step{Kind: StepRoutingBoot, Node: f.Name, Action: "boot " + what + " (kamal accessory boot " + f.Name + ")", Effect: "none"})
		case !f.BinaryCurrent || !f.ConfigCurrent:
			why := "a new " + binary + " binary"
			if f.BinaryCurrent {
				why = "a changed " + cfg
			}
			steps = append(steps, Step{Kind: StepRoutingReboot, Node: f.Name, Action: "reboot " + what + " (kamal accessory reboot " + f.Name + ") for " + why, Effect: effect})
		case f.Container != "running" && f.Container != "restarting":
			steps = append(steps, Step{Kind: StepRoutingStart, Node: f.Name, Action: "start " + what + " (its container is " + f.Container + ")", Effect: "none"})
		}
	}
	return steps
}

// readRouting reads every routing accessory of a target.
func readRouting(ctx context.Context, t Target) ([]Step, error) {
	var facts []AgentFacts
	var kinds []RoutingKind
	for _, d := range t.RoutingDeployers {
		f, err := d.ReadAgent(ctx)
		if err != nil {
			return nil, err
		}
		facts, kinds = append(facts, f), append(kinds, d.Kind())
	}
	return DecideRouting(facts, kinds, t.Cluster.Failover != nil), nil
}

func (a *applier) routingStep(ctx context.Context, s Step) error {
	var d RoutingDeployer
	for _, x := range a.t.RoutingDeployers {
		if x.Name() == s.Node {
			d = x
		}
	}
	if d == nil {
		return fmt.Errorf("step %s: this target has no accessory %s", s.Kind, s.Node)
	}
	var err error
	var done string
	switch s.Kind {
	case StepRoutingBinary:
		err, done = d.InstallAgentBinary(ctx), "put the understudy binary on "+s.Node+"'s server"
	case StepRoutingBoot:
		err, done = d.BootAgent(ctx), "booted "+s.Node
	case StepRoutingReboot:
		err, done = d.RebootAgent(ctx), "rebooted "+s.Node
	case StepRoutingStart:
		err, done = d.StartAgent(ctx), "started "+s.Node
	}
	if err != nil {
		return fmt.Errorf("%s: %w", s.Action, err)
	}
	a.did("%s", done)
	return nil
}
