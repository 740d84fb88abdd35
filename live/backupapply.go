package live

import (
	"context"
	"fmt"
)

// The backup accessory's part of apply (Kamal): after the nodes, the agent's
// binary on its server and its container, read once (ReadAgent), decided
// (DecideBackupAgent, pure) and carried out by the same executor.
const (
	StepAgentBinary StepKind = "agent-binary" // put the understudy binary where the accessory mounts it
	StepAgentBoot   StepKind = "agent-boot"   // kamal accessory boot: no container yet
	StepAgentReboot StepKind = "agent-reboot" // kamal accessory reboot: a new binary or backup.json
	StepAgentStart  StepKind = "agent-start"  // docker container start: it exists, stopped
)

// AgentFacts is what apply reads of the backup accessory.
type AgentFacts struct {
	Name string
	// Container: "absent", or Docker's state ("running", "exited", ...).
	Container string
	// BinaryCurrent: the server holds the binary apply would put there.
	BinaryCurrent bool
	// ConfigCurrent: the container was booted with the current backup.json.
	ConfigCurrent bool
	Binary        string // what apply puts there, for the plan's text
}

// BackupAgentDeployer runs the backup accessory (remote.Control on Kamal).
type BackupAgentDeployer interface {
	ReadAgent(ctx context.Context) (AgentFacts, error)
	InstallAgentBinary(ctx context.Context) error
	BootAgent(ctx context.Context) error
	RebootAgent(ctx context.Context) error
	StartAgent(ctx context.Context) error
}

// DecideBackupAgent is the backup accessory's steps. Pure.
func DecideBackupAgent(f AgentFacts) []Step {
	var steps []Step
	if !f.BinaryCurrent {
		steps = append(steps, Step{Kind: StepAgentBinary, Node: f.Name, Action: "put the understudy binary (" + f.Binary + ") on its server, where the accessory mounts it", Effect: "none"})
	}
	switch {
	case f.Container == "absent":
		steps = append(steps, Step{Kind: StepAgentBoot, Node: f.Name, Action: "boot it (kamal accessory boot): the backup agent starts streaming WAL from the standby and takes the first base backup", Effect: "none: it reads from the standby"})
	case !f.BinaryCurrent || !f.ConfigCurrent:
		why := "a new understudy binary"
		if f.BinaryCurrent {
			why = "a changed backup.json"
		}
		steps = append(steps, Step{Kind: StepAgentReboot, Node: f.Name, Action: "reboot it (kamal accessory reboot) for " + why, Effect: "none: the agent resumes from its slot"})
	case f.Container != "running" && f.Container != "restarting":
		steps = append(steps, Step{Kind: StepAgentStart, Node: f.Name, Action: "start it (its container is " + f.Container + ")", Effect: "none"})
	}
	return steps
}

func (a *applier) agentStep(ctx context.Context, s Step) error {
	d := a.t.BackupAgent
	if d == nil {
		return fmt.Errorf("step %s: this target has no backup accessory", s.Kind)
	}
	var err error
	var done string
	switch s.Kind {
	case StepAgentBinary:
		err, done = d.InstallAgentBinary(ctx), "put the understudy binary on "+s.Node+"'s server"
	case StepAgentBoot:
		err, done = d.BootAgent(ctx), "booted "+s.Node+" (the backup agent)"
	case StepAgentReboot:
		err, done = d.RebootAgent(ctx), "rebooted "+s.Node
	case StepAgentStart:
		err, done = d.StartAgent(ctx), "started "+s.Node
	}
	if err != nil {
		return fmt.Errorf("%s: %w", s.Action, err)
	}
	a.did("%s", done)
	return nil
}
