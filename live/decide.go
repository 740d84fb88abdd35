package live

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/pgops"
)

// apply in three parts, as Check is: ReadApplyFacts reads every node once
// (impure), DecideApply turns the reading into typed steps (pure, so
// `apply --dry-run` shows exactly what runs and the decisions are tested
// without servers), and ExecuteApply (apply.go) carries the steps out.

// StepKind is what a step does.
type StepKind string

const (
	StepStartPrimary  StepKind = "start-primary"  // no node runs: start the initial primary
	StepReload        StepKind = "reload"         // ALTER SYSTEM overrides reset, then a reload
	StepRestart       StepKind = "restart"        // settings that need a restart (asks first)
	StepEnsureRole    StepKind = "ensure-role"    // the replication role, from a SCRAM verifier
	StepRewindGrants  StepKind = "rewind-grants"  // EXECUTE on the functions pg_rewind uses
	StepEnsureSlot    StepKind = "ensure-slot"    // a standby's slot, before its clone
	StepStartStandby  StepKind = "start-standby"  // start it (it clones when empty) and wait until it streams
	StepAwaitStandby  StepKind = "await-standby"  // it runs but does not stream yet: wait
	StepCheckPrimHBA  StepKind = "check-hba"      // after a start: the primary's pg_hba lets every standby in (a guard: read once it runs)
	StepCheckSettings StepKind = "check-settings" // after a fresh start: the new primary's settings, read now, reloaded if needed (a guard: they could not be read before)
	StepEnsureMonitor StepKind = "ensure-monitor" // the node agents' login (pg_monitor), from a SCRAM verifier
	StepRefreshBoot   StepKind = "refresh-boot"   // put the node's new boot script on its server; the node keeps running
)

// Step is one thing apply does: the kind, the node, what it changes and
// what the app notices. Consent marks a step that interrupts the node and
// runs only after the user agrees (or --yes).
type Step struct {
	Kind     StepKind `json:"kind"`
	Node     string   `json:"node"`
	Action   string   `json:"action"`
	Effect   string   `json:"effect"` // what the app notices
	Consent  bool     `json:"consent,omitempty"`
	Primary  bool     `json:"primary,omitempty"`  // the step interrupts the primary
	Settings []string `json:"settings,omitempty"` // restart: each setting and why
	Slot     string   `json:"slot,omitempty"`
	Reset    []string `json:"reset,omitempty"`    // reload: settings ALTER SYSTEM overrides, reset before it
	Exists   bool     `json:"exists,omitempty"`   // ensure-role: the role exists (it is updated, not created)
	Fresh    bool     `json:"fresh,omitempty"`    // the node was not running when the plan was made: a guard reads it first
	Slots    []string `json:"slots,omitempty"`    // several slots on Node
	Upstream string   `json:"upstream,omitempty"` // the node Node follows, or is swapped with
}

// SettingGap is one planned setting a running node does not have.
type SettingGap struct {
	Setting pgconf.Setting
	Live    pgops.LiveSetting
}

// NodeReading is what apply reads from one reachable node.
type NodeReading struct {
	NotOurConfig string       // why the node needs a reboot: it runs without the managed settings file
	Gaps         []SettingGap // planned settings it does not have
}

// ApplyFacts is apply's whole reading of the cluster.
type ApplyFacts struct {
	Status *Status
	Nodes  map[string]NodeReading // reachable nodes only
	// On the primary, when one answers:
	Role          *pgops.RoleState
	Monitor       *pgops.MonitorRoleState // the agents' login, when the setup has one
	GrantsMissing bool
	HBA           []pgops.HBARule
	DBBytes       int64
	// StaleBoot: the nodes whose server holds an older boot script than
	// the app's (a BootScriptRefresher control only).
	StaleBoot map[string]bool
	// PrimaryRunsUnreachable: no node answers, but the initial primary's
	// server or boot script runs (it is starting, or broken).
	PrimaryRunsUnreachable bool
}

// ReadApplyFacts reads, once, everything DecideApply needs.
func ReadApplyFacts(ctx context.Context, t Target, st *Status) (*ApplyFacts, error) {
	f := &ApplyFacts{Status: st, Nodes: map[string]NodeReading{}}
	for _, n := range st.Nodes {
		if !n.Reachable {
			continue
		}
		c, err := t.Control.Conn(ctx, n.Name)
		if err != nil {
			return nil, fmt.Errorf("connecting to %s: %w", t.Control.Where(n.Name), err)
		}
		r, err := readApplyNode(ctx, c, t.Cluster)
		if err == nil && n.Name == st.Primary {
			var role pgops.RoleState
			if role, err = pgops.ReadRole(ctx, c, t.Cluster.ReplUser, t.Password); err == nil {
				f.Role = &role
				f.GrantsMissing = true // a role that does not exist has none
				if role.Exists {
					f.GrantsMissing, err = pgops.RewindGrantsMissing(ctx, c, t.Cluster.ReplUser)
				}
				if err == nil {
					if f.HBA, err = pgops.ReadHBARules(ctx, c); err == nil {
						f.DBBytes, err = pgops.DatabaseBytes(ctx, c)
					}
				}
				if err == nil && t.Cluster.MonitorUser != "" && t.MonitorPassword != "" {
					var m pgops.MonitorRoleState
					if m, err = pgops.ReadMonitorRole(ctx, c, t.Cluster.MonitorUser, t.MonitorPassword); err == nil {
						f.Monitor = &m
					}
				}
			}
		}
		c.Close(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", n.Name, err)
		}
		f.Nodes[n.Name] = r
	}
	if r, ok := t.Control.(BootScriptRefresher); ok {
		for _, n := range t.Cluster.Nodes {
			current, err := r.BootScriptCurrent(ctx, n.Name)
			if err != nil {
				return nil, err
			}
			if !current {
				if f.StaleBoot == nil {
					f.StaleBoot = map[string]bool{}
				}
				f.StaleBoot[n.Name] = true
			}
		}
	}
	if st.Primary == "" {
		if n := st.Node(t.Cluster.InitialPrimary); n != nil && n.Running != nil && *n.Running {
			f.PrimaryRunsUnreachable = true
		}
	}
	return f, nil
}

func readApplyNode(ctx context.Context, c *pgx.Conn, cl pgconf.Cluster) (NodeReading, error) {
	var r NodeReading
	why, err := notOurConfig(ctx, c, cl)
	if err != nil || why != "" {
		r.NotOurConfig = why
		return r, err
	}
	r.Gaps, err = settingGaps(ctx, c, cl)
	return r, err
}

// DecideApply is apply's decision: the steps, in the order they run, that
// bring the cluster to the plan. Settings first (a restart of the primary
// comes before any clone), then the role and grants, the pg_hba proof, the
// slots, and the standbys. An error means apply must not start.
func DecideApply(f *ApplyFacts, c pgconf.Cluster) ([]Step, error) {
	st := f.Status
	// Before anything starts or clones: a node of another major cannot
	// follow (or, started on the wrong image, cannot start).
	if err := MajorRefusal(st, c); err != nil {
		return nil, err
	}
	var steps []Step
	add := func(s Step) { steps = append(steps, s) }
	prim := st.Primary
	fresh := false
	if prim == "" {
		var writable []string
		for _, n := range st.Nodes {
			if n.Role == RolePrimary {
				writable = append(writable, n.Name)
			}
		}
		if len(writable) > 1 {
			return nil, fmt.Errorf("more than one node accepts writes (%s): apply will not choose between them. Keep the one the app writes to and bring the other back with `understudy rejoin`", strings.Join(writable, ", "))
		}
		for _, n := range st.Nodes {
			if n.Reachable {
				return nil, fmt.Errorf("no node accepts writes, but %s is up as a standby: apply will not invent a primary. Start the primary, or promote the standby with `understudy promote`", n.Name)
			}
		}
		prim, fresh = c.InitialPrimary, true
		if f.PrimaryRunsUnreachable {
			add(Step{Kind: StepStartPrimary, Node: prim, Action: "wait until it answers (it runs but does not answer yet)", Effect: "none"})
		} else {
			add(Step{Kind: StepStartPrimary, Node: prim, Action: "start it", Effect: "a new, empty cluster is created if no node holds data; otherwise its own"})
		}
	}

	// Settings of the nodes that answer now; a primary started above is
	// checked once it answers.
	var restarts []Step
	for _, n := range c.Nodes {
		r, ok := f.Nodes[n.Name]
		if !ok {
			continue
		}
		pause := "replication pauses for a few seconds"
		if n.Name == prim {
			pause = "the app cannot write for the few seconds it takes (asked first, or --yes)"
		}
		if r.NotOurConfig != "" {
			restarts = append(restarts, Step{Kind: StepRestart, Node: n.Name, Action: "reboot: " + r.NotOurConfig, Effect: pause, Consent: true, Primary: n.Name == prim, Settings: []string{r.NotOurConfig}})
			continue
		}
		var reload, restart []string
		var why []string
		for _, g := range r.Gaps {
			if g.Live.Context == "postmaster" {
				restart = append(restart, g.Setting.Name+" → "+g.Setting.Value)
				why = append(why, fmt.Sprintf("%s %s → %s (%s)", g.Setting.Name, g.Live.Setting+g.Live.Unit, g.Setting.Value, g.Setting.Why))
			} else {
				reload = append(reload, g.Setting.Name+" → "+g.Setting.Value)
			}
		}
		if reset := autoConfOverrides(r.Gaps); len(reload) > 0 || len(reset) > 0 {
			add(Step{Kind: StepReload, Node: n.Name, Reset: reset, Action: "reload for: " + strings.Join(append(reload, restart...), ", "), Effect: "none"})
		}
		if len(restart) > 0 {
			restarts = append(restarts, Step{Kind: StepRestart, Node: n.Name, Action: "restart for: " + strings.Join(restart, ", "), Effect: pause, Consent: true, Primary: n.Name == prim, Settings: why})
		}
	}
	// A changed boot script goes onto the servers first, before anything
	// starts or restarts there (a node that restarts gets it with its
	// reboot): the running nodes keep running; their next start runs it.
	var refresh []Step
	for _, n := range c.Nodes {
		if !f.StaleBoot[n.Name] || slices.ContainsFunc(restarts, func(s Step) bool { return s.Node == n.Name }) {
			continue
		}
		why := "its next start (by apply, or by Docker's restart policy) runs it"
		if c.Failover != nil {
			why = "with automatic failover on, its next start is read-only (standby.signal), so it never comes back writable without the lease"
		}
		refresh = append(refresh, Step{Kind: StepRefreshBoot, Node: n.Name, Action: "put the new boot script on its server without restarting it: " + why, Effect: "none"})
	}
	steps = append(refresh, steps...)
	// Standbys restart before the primary.
	for _, s := range restarts {
		if s.Node != prim {
			add(s)
		}
	}
	for _, s := range restarts {
		if s.Node == prim {
			add(s)
		}
	}
	if fresh {
		add(Step{Kind: StepCheckSettings, Node: prim, Action: "once it answers: its settings are the plan's (reload where needed; a restart only with consent)", Effect: "none"})
	}

	if fresh || f.Role == nil || !f.Role.OK() {
		action := "create the replication role " + c.ReplUser + " from a SCRAM verifier computed here"
		switch {
		case fresh:
			action = "create or update the replication role " + c.ReplUser + " if its first boot did not"
		case f.Role.Exists:
			action = "update the replication role " + c.ReplUser + " (login, replication, password) from a SCRAM verifier computed here"
		}
		add(Step{Kind: StepEnsureRole, Node: prim, Exists: !fresh && f.Role.Exists, Fresh: fresh, Action: action, Effect: "none"})
	}
	if fresh || f.GrantsMissing {
		add(Step{Kind: StepRewindGrants, Node: prim, Action: "let " + c.ReplUser + " read the files pg_rewind needs", Effect: "none"})
	}
	if c.MonitorUser != "" && (fresh || f.Monitor == nil || !f.Monitor.OK()) {
		// Not read (fresh, or no password here): the executor reads it first.
		unread := fresh || f.Monitor == nil
		action := "create the node agents' login " + c.MonitorUser + " (pg_monitor, no superuser) from a SCRAM verifier computed here"
		switch {
		case unread:
			action = "create or update the node agents' login " + c.MonitorUser + " (pg_monitor, no superuser) unless it is as planned"
		case f.Monitor.Exists:
			action = "update the node agents' login " + c.MonitorUser + " (login, pg_monitor, no superuser, password) from a SCRAM verifier computed here"
		}
		add(Step{Kind: StepEnsureMonitor, Node: prim, Exists: !unread && f.Monitor.Exists, Fresh: unread, Action: action, Effect: "none"})
	}
	primRestarts := false
	for _, r := range restarts {
		primRestarts = primRestarts || r.Node == prim
	}
	if fresh || primRestarts {
		// Its pg_hba file is read once it runs with the managed files.
		add(Step{Kind: StepCheckPrimHBA, Node: prim, Action: "check that its pg_hba file lets every standby in for replication", Effect: "none"})
	} else if err := hbaRefusal(f.HBA, c, prim); err != nil {
		return nil, err
	}
	p := st.Node(prim)
	for _, n := range c.Nodes {
		if n.Name == prim {
			continue
		}
		if !fresh && hasSlot(p, n.Slot()) {
			continue
		}
		add(Step{Kind: StepEnsureSlot, Node: prim, Slot: n.Slot(), Action: "create slot " + n.Slot() + " before " + n.Name + " clones", Effect: "none"})
	}
	for _, n := range c.Nodes {
		if n.Name == prim {
			continue
		}
		ns := st.Node(n.Name)
		switch {
		case ns.Reachable && !fresh && streamingFrom(p, n.Name):
		case ns.Reachable:
			add(Step{Kind: StepAwaitStandby, Node: n.Name, Action: "wait until it streams from " + prim, Effect: "none"})
		default:
			what := fmt.Sprintf("start it; if its data directory is empty it clones %s (about %s)", prim, bytesText(f.DBBytes))
			if f.DBBytes == 0 {
				what = "start it; if its data directory is empty it clones " + prim
			}
			add(Step{Kind: StepStartStandby, Node: n.Name, Slot: n.Slot(), Action: what, Effect: "none: the primary keeps serving; the clone reads its disk"})
		}
	}
	return steps, nil
}

// autoConfOverrides names the planned settings that ALTER SYSTEM
// overrides (postgresql.auto.conf): a reload resets them first.
func autoConfOverrides(gaps []SettingGap) []string {
	var names []string
	for _, g := range gaps {
		if strings.HasSuffix(g.Live.SourceFile, "postgresql.auto.conf") {
			names = append(names, g.Setting.Name)
		}
	}
	return names
}

// hbaRefusal refuses a primary whose pg_hba rules shut a standby out of
// replication: DecideApply over the rules it read, and apply's guard after
// a fresh start (the rules are read only once the node runs).
func hbaRefusal(rules []pgops.HBARule, c pgconf.Cluster, prim string) error {
	for _, n := range c.Nodes {
		if n.Name == prim {
			continue
		}
		if v := HBADecides(rules, "replication", c.ReplUser, n.Addr); !v.Allowed {
			return fmt.Errorf("the primary %s's pg_hba file does not let %s (%s) connect for replication (%s). Mount understudy's pg_hba file (re-run `understudy init`) and run apply again",
				prim, n.Name, n.Addr, describeVerdict(v))
		}
	}
	return nil
}

func hasSlot(p *NodeStatus, slot string) bool {
	if p == nil {
		return false
	}
	for _, s := range p.Slots {
		if s.Name == slot {
			return true
		}
	}
	return false
}

func streamingFrom(p *NodeStatus, node string) bool {
	if p == nil {
		return false
	}
	for _, r := range p.Replication {
		if r.Name == node && r.State == "streaming" {
			return true
		}
	}
	return false
}

// PlanApply reads the nodes and decides, changing nothing: what
// `apply --dry-run` prints, and what ExecuteApply then runs.
func PlanApply(ctx context.Context, t Target) ([]Step, error) {
	st, err := GatherNodes(ctx, t)
	if err != nil {
		return nil, err
	}
	f, err := ReadApplyFacts(ctx, t, st)
	if err != nil {
		return nil, err
	}
	steps, err := DecideApply(f, t.Cluster)
	if err != nil {
		return steps, err
	}
	if t.BackupAgent != nil {
		af, err := t.BackupAgent.ReadAgent(ctx)
		if err != nil {
			return nil, err
		}
		steps = append(steps, DecideBackupAgent(af)...)
	}
	rs, err := readRouting(ctx, t)
	if err != nil {
		return nil, err
	}
	steps = append(steps, rs...)
	if t.Cluster.Failover == nil {
		return steps, nil
	}
	ff := FailoverApplyFacts{Primary: st.Primary, AgentNode: map[string]string{}}
	for _, n := range t.Cluster.Nodes {
		if n.Name != st.Primary {
			ff.Standby = n.Name
		}
	}
	for _, d := range t.RoutingDeployers {
		if a, ok := d.(interface{ AgentNode() string }); ok && a.AgentNode() != "" {
			ff.AgentNode[d.Name()] = a.AgentNode()
		}
		if d.Kind() == RoutingWitness {
			ff.Witness = d.Name()
		}
	}
	if FailoverGuardNeeded(steps, ff) {
		// Read only when the primary or its agent restarts: on a first
		// apply etcd does not run yet.
		ff.Lease = readLease(ctx, t)
	}
	return DecideFailoverApply(steps, ff)
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
