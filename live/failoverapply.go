package live

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// apply with automatic failover on. A planned restart must not make an
// unasked failover:
//
//   - The primary's PostgreSQL restarting: its agent, holding the lease,
//     fences it and gives the lease up once it has been down for the
//     primary-down grace (3 s), and the standby takes over. Paused, the
//     holder keeps renewing through the outage (failover.Decide), the node
//     boots read-only as every node does with failover on, and the holder
//     keeps the lease without promoting it; resumed, its agent promotes
//     it. So apply pauses failover before the restart, resumes it after
//     (also when a step in between fails: a pause must never outlive
//     apply), and waits until the agent has promoted its node again.
//   - The primary's agent restarting: pausing is not enough. Its watchdog,
//     armed at every renewal, outlives the agent and fences PostgreSQL at
//     the last deadline whatever happens next (nothing else would stop a
//     writable primary whose lease runs out); once the lease lapses, the
//     fenced node lets the standby go first. So apply hands the lease to
//     the standby first (a switchover: lossless, writes pause under a
//     second) and then restarts the former primary's agent, now a
//     standby's, whose watchdog is disarmed. The primary stays on the other
//     node afterwards (`understudy switchover` moves it back).
//
// Only while failover runs (the lease read, held by the primary): with
// the lease unreadable or held by nobody, no agent holds a lease to lose
// and the steps stay as they were. Paused by someone before apply, a
// restart of the primary or of its agent is refused: the primary would
// stay read-only, or fenced, until the resume.
const (
	StepFailoverPause   StepKind = "failover-pause"   // pause automatic failover: nobody is promoted, the holder keeps its lease through an outage
	StepFailoverResume  StepKind = "failover-resume"  // resume it (also run when a step after the pause fails)
	StepLeaseSwitchover StepKind = "lease-switchover" // a switchover to Node (a lease handover) before the old primary's agent restarts
	StepAwaitLease      StepKind = "await-lease"      // failover turned on: wait until Node's agent holds the lease
)

// FailoverApplyFacts is what the failover guard of apply decides on.
type FailoverApplyFacts struct {
	Lease   *LeaseReading // nil: failover off
	Primary string
	Standby string // the other node: a switchover's target
	// AgentNode: each node agent's accessory → its node.
	AgentNode map[string]string
	// Witness is the witness's accessory ("" none).
	Witness string
}

// DecideFailoverApply wraps apply's steps for failover: a pause around a
// restart of the primary's PostgreSQL (resume, then wait for its agent to
// promote it again), and a switchover before a restart of the primary's
// agent. Pure.
func DecideFailoverApply(steps []Step, f FailoverApplyFacts) ([]Step, error) {
	if f.Lease == nil || !FailoverGuardNeeded(steps, f) {
		return steps, nil
	}
	restart, agentReboot := guarded(steps, f)
	l := f.Lease
	if l.Error == "" && l.Paused {
		what := "restart the primary " + f.Primary + ", which would then stay read-only"
		if restart < 0 {
			what = "restart the primary's agent " + steps[agentReboot].Node + ", whose watchdog would fence " + f.Primary + " with nobody to take over"
		}
		return nil, fmt.Errorf("failover is paused (`understudy failover pause`), and apply would %s until it is resumed: run `understudy failover resume`, then apply again", what)
	}
	if l.Error != "" && turningOn(steps, f) {
		return decideTurnOn(steps, f, restart, agentReboot)
	}
	if l.Error != "" || l.Holder != f.Primary {
		return steps, nil
	}
	var out []Step
	for i, s := range steps {
		switch {
		case i == restart:
			out = append(out,
				Step{Kind: StepFailoverPause, Node: f.Primary, Action: "pause automatic failover for the restart: " + f.Primary + "'s agent keeps the lease while PostgreSQL is down, and nobody is promoted", Effect: "none"},
				s,
				Step{Kind: StepFailoverResume, Node: f.Primary, Action: "resume automatic failover (also if a step before fails)", Effect: "none"},
				Step{Kind: StepAwaitPromote, Node: f.Primary, Action: "wait until its agent, holding the lease, makes it writable again (it boots read-only)", Effect: "writes resume on " + f.Primary})
		case i == agentReboot:
			// Moved after every other agent's steps (below).
		default:
			out = append(out, s)
		}
	}
	if agentReboot < 0 {
		return out, nil
	}
	if f.Standby == "" {
		return nil, fmt.Errorf("apply would restart the primary's agent %s, which fences %s, and there is no standby to hand the lease to first", steps[agentReboot].Node, f.Primary)
	}
	// After the last step of any other agent (the standby's agent is new
	// when it takes over), before the router's.
	at := 0
	for i, s := range out {
		if !routingKinds[s.Kind] || f.AgentNode[s.Node] != "" {
			at = i + 1
		}
	}
	reboot := steps[agentReboot]
	reboot.Effect = "none: " + f.Primary + " is a standby by now (its agent's watchdog is disarmed)"
	guard := Step{Kind: StepLeaseSwitchover, Node: f.Standby, Upstream: f.Primary, Consent: true,
		Action: "switch over to " + f.Standby + " (a lease handover, as `understudy switchover " + f.Standby + "`) before " + reboot.Node + " restarts: a primary's agent that stops has its watchdog fence the primary",
		Effect: "writes pause for under a second; " + f.Standby + " stays the primary afterwards (`understudy switchover " + f.Primary + "` moves it back)"}
	return slices.Insert(out, at, guard, reboot), nil
}

// turningOn: failover is being turned on over a running cluster: the
// plan boots the witness, and no lease can be read (no etcd member runs
// yet, so no agent holds a lease to lose).
func turningOn(steps []Step, f FailoverApplyFacts) bool {
	return f.Witness != "" && slices.ContainsFunc(steps, func(s Step) bool { return s.Kind == StepRoutingBoot && s.Node == f.Witness })
}

// decideTurnOn orders the agents' restarts when failover is turned on over
// a running cluster. PostgreSQL keeps running on both nodes (their new
// boot script, read-only, is only put in place: a primary restarted
// read-only now would wait for a lease nobody may take first). The
// witness boots, then the standby's agent restarts with --failover (its
// member and the witness make etcd's quorum; it never takes a lease nobody
// has held), and the primary's agent last: from its restart until the new
// agent takes the lease as the first holder, the router has no primary and
// writes pause; apply waits until it holds the lease. Meanwhile the
// primary is writable with the lease free, as failover.Decide allows only
// while nothing was ever published: no standby can take it, and the router
// sends nothing there. A restart of the primary planned in the same
// apply is left to the next apply (which pauses failover around it): now
// it would boot read-only with no agent holding the lease to make it
// writable.
func decideTurnOn(steps []Step, f FailoverApplyFacts, restart, agentReboot int) ([]Step, error) {
	var out []Step
	deferred := ""
	for i, s := range steps {
		switch {
		case i == agentReboot:
		case i == restart:
			deferred = s.Action
		case s.Kind == StepRoutingReboot && f.AgentNode[s.Node] != "":
			s.Effect = "none: it restarts with --failover; its etcd member and the witness's make the quorum, and it never takes a lease nobody has held"
			out = append(out, s)
		default:
			out = append(out, s)
		}
	}
	if agentReboot < 0 {
		return out, nil
	}
	reboot := steps[agentReboot]
	at := 0
	for i, s := range out {
		if !routingKinds[s.Kind] || f.AgentNode[s.Node] != "" || s.Node == f.Witness {
			at = i + 1
		}
	}
	reboot.Consent = true
	reboot.Effect = "writes through the router pause from this restart until the new agent holds the lease (a few seconds: its etcd member joins the witness's and the standby's, it takes the lease as the first holder, and its /primary answers again); " + f.Primary + " keeps running meanwhile, and no standby can take a lease nobody has held"
	wait := Step{Kind: StepAwaitLease, Node: f.Primary, Action: "wait until " + f.Primary + "'s agent holds the failover lease", Effect: "writes resume on " + f.Primary}
	if deferred != "" {
		wait.Action += "; the primary's restart (" + deferred + ") is left to the next `understudy apply`, which pauses failover around it: restarted now, it would boot read-only with no agent holding the lease to make it writable"
	}
	return slices.Insert(out, at, reboot, wait), nil
}

// FailoverGuardNeeded: the steps restart the primary or its agent (then
// the lease is read for DecideFailoverApply).
func FailoverGuardNeeded(steps []Step, f FailoverApplyFacts) bool {
	r, a := guarded(steps, f)
	return f.Primary != "" && (r >= 0 || a >= 0)
}

func guarded(steps []Step, f FailoverApplyFacts) (restart, agentReboot int) {
	restart = slices.IndexFunc(steps, func(s Step) bool { return s.Kind == StepRestart && s.Node == f.Primary })
	agentReboot = slices.IndexFunc(steps, func(s Step) bool {
		return s.Kind == StepRoutingReboot && f.AgentNode[s.Node] == f.Primary
	})
	return restart, agentReboot
}

var routingKinds = map[StepKind]bool{StepRoutingBinary: true, StepRoutingBoot: true, StepRoutingReboot: true, StepRoutingStart: true}

// failoverStep runs the failover guard's steps.
func (a *applier) failoverStep(ctx context.Context, s Step) error {
	switch s.Kind {
	case StepFailoverPause, StepFailoverResume:
		if a.t.Lease == nil {
			return fmt.Errorf("step %s: failover is on, but this target has no way to reach etcd", s.Kind)
		}
		pause := s.Kind == StepFailoverPause
		if err := a.t.Lease.SetPaused(ctx, pause); err != nil {
			return fmt.Errorf("%s: %w", s.Action, err)
		}
		a.paused = pause
		if pause {
			a.did("paused automatic failover for the restart of %s", s.Node)
		} else {
			a.did("resumed automatic failover")
		}
	case StepAwaitPromote:
		start := time.Now()
		if err := awaitPromoted(ctx, a.t, s.Node, a.o.Timeout); err != nil {
			return err
		}
		a.did("%s's agent made it writable again (%.1f s)", s.Node, time.Since(start).Seconds())
	case StepAwaitLease:
		start := time.Now()
		if err := awaitLease(ctx, a.t, s.Node, a.o.Timeout); err != nil {
			return err
		}
		a.did("%s's agent holds the failover lease (%.1f s)", s.Node, time.Since(start).Seconds())
	case StepLeaseSwitchover:
		a.closePrimary(ctx)
		if _, err := Switchover(ctx, a.t, s.Node, RoleOptions{Out: a.o.Out}); err != nil {
			return fmt.Errorf("switching over to %s before restarting %s's agent: %w (nothing was restarted; run apply again once `understudy status` is healthy)", s.Node, s.Upstream, err)
		}
		a.prim = s.Node
		a.did("switched over to %s: %s's agent restarts as a standby's", s.Node, s.Upstream)
	}
	return nil
}

// resumeAfterFailure resumes failover that a failed apply paused.
func (a *applier) resumeAfterFailure(ctx context.Context, err error) error {
	if !a.paused {
		return err
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if rerr := a.t.Lease.SetPaused(rctx, false); rerr != nil {
		return fmt.Errorf("%w; and failover, paused for it, could not be resumed (%v): run `understudy failover resume`", err, rerr)
	}
	a.paused = false
	a.say("  ✓ resumed automatic failover after the failure")
	return err
}
