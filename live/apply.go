package live

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/pgops"
)

// ApplyOptions control apply.
type ApplyOptions struct {
	Yes     bool                     // restarts are agreed to in advance (--yes)
	Confirm func(prompt string) bool // asked before a restart when Yes is false; nil refuses
	Out     io.Writer                // progress, one line per step
	Timeout time.Duration            // how long to wait for a node to start, clone or stream
}

// ApplyResult is what apply did: the steps it carried out (the plan), and
// what they changed; Actions is empty when the nodes already matched.
type ApplyResult struct {
	Steps   []Step
	Actions []string
}

// ErrRestartDeclined is returned when a restart is needed and not agreed to.
var ErrRestartDeclined = errors.New("restart not agreed")

// Apply brings running nodes to the plan: the primary runs, the replication
// role has the planned password, settings are in force (reloaded where a
// reload is enough; restarted only with consent), every standby has its
// slot before it is cloned, and every standby streams. Re-running it on a
// healthy cluster changes nothing. It is PlanApply followed by ExecuteApply.
func Apply(ctx context.Context, t Target, o ApplyOptions) (*ApplyResult, error) {
	if err := reachAll(ctx, t); err != nil {
		return &ApplyResult{}, err
	}
	steps, err := PlanApply(ctx, t)
	if err != nil {
		return &ApplyResult{}, err
	}
	return ExecuteApply(ctx, t, steps, o)
}

// ExecuteApply carries out the steps DecideApply chose, in order, and
// nothing else. Steps that need consent run only after the user agrees
// (once, for all of them, when the first is reached).
func ExecuteApply(ctx context.Context, t Target, steps []Step, o ApplyOptions) (*ApplyResult, error) {
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Minute
	}
	a := &applier{t: t, o: o, res: &ApplyResult{}}
	defer a.closePrimary(ctx)
	for i, s := range steps {
		if (s.Consent || s.Kind == StepFailoverPause) && !a.agreed {
			if err := a.consent(steps[i:]); err != nil {
				return a.res, a.resumeAfterFailure(ctx, err)
			}
		}
		if err := a.step(ctx, s); err != nil {
			return a.res, a.resumeAfterFailure(ctx, err)
		}
		a.res.Steps = append(a.res.Steps, s)
	}
	return a.res, nil
}

type applier struct {
	t      Target
	o      ApplyOptions
	res    *ApplyResult
	agreed bool
	prim   string
	pc     *pgx.Conn
	// paused: apply paused failover and has not resumed it yet.
	paused bool
}

func (a *applier) say(format string, args ...any) { fmt.Fprintf(a.o.Out, format+"\n", args...) }

func (a *applier) did(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	a.res.Actions = append(a.res.Actions, s)
	a.say("  ✓ %s", s)
}

// primary is the connection to the primary (the node of the role, grant
// and slot steps), opened on first use and after a restart.
func (a *applier) primary(ctx context.Context, node string) (*pgx.Conn, error) {
	if a.pc != nil && a.prim == node {
		return a.pc, nil
	}
	a.closePrimary(ctx)
	c, err := a.t.Control.Conn(ctx, node)
	if err != nil {
		return nil, fmt.Errorf("connecting to the primary %s: %w", node, err)
	}
	if a.prim == "" {
		a.say("primary: %s", a.t.Control.Where(node))
	}
	a.prim, a.pc = node, c
	return c, nil
}

func (a *applier) closePrimary(ctx context.Context) {
	if a.pc != nil {
		a.pc.Close(context.WithoutCancel(ctx))
		a.pc = nil
	}
}

// consent asks once for every step from here on that interrupts a node.
func (a *applier) consent(rest []Step) error {
	var b strings.Builder
	for _, s := range rest {
		if !s.Consent {
			continue
		}
		if s.Kind != StepRestart {
			fmt.Fprintf(&b, "  %s: %s\n    (%s)\n", s.Node, s.Action, s.Effect)
			continue
		}
		role := "standby: replication pauses while it restarts"
		if s.Primary {
			role = "the PRIMARY: the app cannot write for the few seconds it takes"
		}
		fmt.Fprintf(&b, "  %s (%s) needs a restart for:\n", s.Node, role)
		for _, w := range s.Settings {
			fmt.Fprintf(&b, "    - %s\n", w)
		}
	}
	a.say("%s", strings.TrimRight(b.String(), "\n"))
	if !a.o.Yes && (a.o.Confirm == nil || !a.o.Confirm("Restart these nodes now?")) {
		return fmt.Errorf("%w: these steps interrupt the app and none was done:\n%s\nRe-run `understudy apply --yes` when a short interruption is acceptable", ErrRestartDeclined, strings.TrimRight(b.String(), "\n"))
	}
	a.agreed = true
	return nil
}

// step carries out one step.
func (a *applier) step(ctx context.Context, s Step) error {
	switch s.Kind {
	case StepAgentBinary, StepAgentBoot, StepAgentReboot, StepAgentStart:
		return a.agentStep(ctx, s)
	case StepRoutingBinary, StepRoutingBoot, StepRoutingReboot, StepRoutingStart:
		return a.routingStep(ctx, s)
	case StepFailoverPause, StepFailoverResume, StepAwaitPromote, StepLeaseSwitchover, StepAwaitLease:
		return a.failoverStep(ctx, s)
	case StepRefreshBoot:
		r, ok := a.t.Control.(BootScriptRefresher)
		if !ok {
			return fmt.Errorf("step %s: this target cannot replace %s's boot script", s.Kind, s.Node)
		}
		if err := r.RefreshBootScript(ctx, s.Node); err != nil {
			return err
		}
		a.did("put %s's new boot script on its server (it keeps running; its next start runs it)", s.Node)
		return nil
	case StepStartPrimary:
		return a.startPrimary(ctx, s.Node)
	case StepReload:
		c, done, err := a.conn(ctx, s.Node)
		if err != nil {
			return err
		}
		defer done()
		return a.reload(ctx, c, s.Node, s.Reset)
	case StepCheckSettings:
		// A guard: a primary that apply started could not be read when the
		// plan was made, so its settings are read, and reloaded, now.
		c, err := a.primary(ctx, s.Node)
		if err != nil {
			return err
		}
		r, err := readApplyNode(ctx, c, a.t.Cluster)
		if err != nil {
			return err
		}
		if r.NotOurConfig != "" {
			return fmt.Errorf("%s started without understudy's settings file (%s); re-run `understudy init`, then apply", s.Node, r.NotOurConfig)
		}
		if len(r.Gaps) > 0 {
			return a.reload(ctx, c, s.Node, autoConfOverrides(r.Gaps))
		}
		return nil
	case StepRestart:
		return a.restart(ctx, s)
	case StepEnsureRole:
		pc, err := a.primary(ctx, s.Node)
		if err != nil {
			return err
		}
		exists := s.Exists
		if s.Fresh {
			// A guard: the primary apply started could not be read when the
			// plan was made; its first boot may have made the role already.
			role, err := pgops.ReadRole(ctx, pc, a.t.Cluster.ReplUser, a.t.Password)
			if err != nil || role.OK() {
				return err
			}
			exists = role.Exists
		}
		if err := pgops.EnsureReplicationRole(ctx, pc, a.t.Cluster.ReplUser, a.t.Password); err != nil {
			return err
		}
		verb := "created"
		if exists {
			verb = "updated"
		}
		a.did("%s replication role %s from a SCRAM verifier computed here (the password never reached the server)", verb, a.t.Cluster.ReplUser)
		return nil
	case StepEnsureMonitor:
		return a.ensureMonitor(ctx, s)
	case StepRewindGrants:
		pc, err := a.primary(ctx, s.Node)
		if err != nil {
			return err
		}
		if granted, err := pgops.EnsureRewindGrants(ctx, pc, a.t.Cluster.ReplUser); err != nil {
			return err
		} else if granted {
			a.did("let %s read the files pg_rewind needs, so a crashed primary can rejoin without a full clone", a.t.Cluster.ReplUser)
		}
		return nil
	case StepCheckPrimHBA:
		pc, err := a.primary(ctx, s.Node)
		if err != nil {
			return err
		}
		rules, err := pgops.ReadHBARules(ctx, pc)
		if err != nil {
			return err
		}
		return hbaRefusal(rules, a.t.Cluster, s.Node)
	case StepEnsureSlot:
		pc, err := a.primary(ctx, s.Node)
		if err != nil {
			return err
		}
		created, err := pgops.EnsureSlot(ctx, pc, s.Slot)
		if err != nil {
			return err
		}
		if created {
			a.did("created slot %s on %s before cloning, so the primary keeps every WAL segment its standby will need", s.Slot, s.Node)
		}
		return nil
	case StepStartStandby, StepAwaitStandby:
		n, ok := a.t.Cluster.Node(s.Node)
		if !ok {
			return fmt.Errorf("there is no node %q", s.Node)
		}
		return a.standby(ctx, n)
	}
	return fmt.Errorf("internal error: apply has no step %q", s.Kind)
}

// ensureMonitor makes the node agents' login as the plan has it.
func (a *applier) ensureMonitor(ctx context.Context, s Step) error {
	role := a.t.Cluster.MonitorUser
	if a.t.MonitorPassword == "" {
		return fmt.Errorf("the node agents' login %s has no password here: add %s to .kamal/secrets (a reference, as for REPLICATION_PASSWORD; `understudy password` makes one)", role, pgconf.MonitorSecret)
	}
	pc, err := a.primary(ctx, s.Node)
	if err != nil {
		return err
	}
	exists := s.Exists
	if s.Fresh {
		// A guard: the role could not be read when the plan was made.
		m, err := pgops.ReadMonitorRole(ctx, pc, role, a.t.MonitorPassword)
		if err != nil || m.OK() {
			return err
		}
		exists = m.Exists
	}
	if err := pgops.EnsureMonitorRole(ctx, pc, role, a.t.MonitorPassword); err != nil {
		return err
	}
	verb := "created"
	if exists {
		verb = "updated"
	}
	a.did("%s the node agents' login %s (pg_monitor, no superuser) from a SCRAM verifier computed here", verb, role)
	return nil
}

// conn opens a connection to any node; done closes it unless it is the
// primary's shared one.
func (a *applier) conn(ctx context.Context, node string) (*pgx.Conn, func(), error) {
	if node == a.prim && a.pc != nil {
		return a.pc, func() {}, nil
	}
	c, err := a.t.Control.Conn(ctx, node)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to %s: %w", a.t.Control.Where(node), err)
	}
	return c, func() { c.Close(context.WithoutCancel(ctx)) }, nil
}

// startPrimary starts the initial primary when it does not run, and waits
// until it answers as a primary.
func (a *applier) startPrimary(ctx context.Context, prim string) error {
	running, err := a.t.Control.Running(ctx, prim)
	if err != nil {
		return err
	}
	if !running {
		a.say("starting %s", a.t.Control.Where(prim))
		if err := a.t.Control.Start(ctx, prim); err != nil {
			return err
		}
		a.did("started the primary %s", prim)
	}
	inRecovery, err := WaitReady(ctx, a.t.Control, prim, a.o.Timeout)
	if err != nil {
		return err
	}
	if inRecovery {
		return fmt.Errorf("%s started as a standby, so there is no primary to apply to. Start the node that was the primary, or promote %s with `understudy promote`", prim, prim)
	}
	return nil
}

// settingGaps lists the planned settings a running server does not have.
func settingGaps(ctx context.Context, c *pgx.Conn, cl pgconf.Cluster) ([]SettingGap, error) {
	want := pgconf.Settings(cl)
	names := make([]string, len(want))
	for i, s := range want {
		names[i] = s.Name
	}
	live, err := pgops.ReadSettings(ctx, c, names)
	if err != nil {
		return nil, err
	}
	var d []SettingGap
	for _, s := range want {
		l, ok := live[s.Name]
		if !ok || pgconf.SameSetting(s.Value, l.Setting, l.Unit) || l.Source == "command line" {
			continue // a -c flag is the operator's choice (the lab's port and address)
		}
		if s.Name == "hba_file" && cl.HBAFile == "" {
			continue
		}
		if strings.HasPrefix(s.Name, "tcp_keepalives_") && l.Setting == "0" {
			continue // reads 0 on a Unix-socket session; the file's value applies to TCP ones
		}
		d = append(d, SettingGap{Setting: s, Live: l})
	}
	return d, nil
}

// notOurConfig says why a node needs a reboot when it runs without the
// managed settings file, "" when it runs with it (or the plan names none).
func notOurConfig(ctx context.Context, c *pgx.Conn, cl pgconf.Cluster) (string, error) {
	if cl.ConfFile == "" {
		return "", nil
	}
	cf, err := pgops.ReadSettings(ctx, c, []string{"config_file"})
	if err != nil {
		return "", err
	}
	if got := cf["config_file"].Setting; got != cl.ConfFile {
		return fmt.Sprintf("config_file %s → %s (it runs without understudy's boot script and settings file; a reboot uploads them and starts it with the new cmd)", got, cl.ConfFile), nil
	}
	return "", nil
}

// reload resets the ALTER SYSTEM overrides the plan named, reloads the
// configuration, and then, as a guard, reads the settings again: what still
// differs must need a restart (a later step), or apply stops.
func (a *applier) reload(ctx context.Context, c *pgx.Conn, node string, reset []string) error {
	before, err := settingGaps(ctx, c, a.t.Cluster)
	if err != nil {
		return err
	}
	for _, name := range reset {
		if err := pgops.ResetAutoConf(ctx, c, name); err != nil {
			return fmt.Errorf("resetting %s (set by ALTER SYSTEM) on %s: %w", name, node, err)
		}
		a.did("reset %s on %s: ALTER SYSTEM had overridden the managed settings file", name, node)
	}
	if err := pgops.Reload(ctx, c); err != nil {
		return err
	}
	time.Sleep(200 * time.Millisecond) // the postmaster signals backends asynchronously
	after, err := settingGaps(ctx, c, a.t.Cluster)
	if err != nil {
		return err
	}
	var changed []string
	for _, g := range before {
		if !hasGap(after, g.Setting.Name) {
			changed = append(changed, g.Setting.Name+" = "+g.Setting.Value)
		}
	}
	if len(changed) > 0 {
		a.did("reloaded %s: %s", node, strings.Join(changed, ", "))
	}
	for _, g := range after {
		if g.Live.Context != "postmaster" {
			return fmt.Errorf("%s is %s on %s (from %s), but the plan says %s, and a reload did not change it. Check that understudy's settings file is the one the server reads (config_file), then run apply again",
				g.Setting.Name, g.Live.Setting+g.Live.Unit, node, sourceText(g.Live), g.Setting.Value)
		}
	}
	return nil
}

func hasGap(list []SettingGap, name string) bool {
	for _, g := range list {
		if g.Setting.Name == name {
			return true
		}
	}
	return false
}

func sourceText(l pgops.LiveSetting) string {
	if l.SourceFile != "" {
		return l.SourceFile
	}
	return l.Source
}

// restart restarts one node (agreed to already): a reboot where the
// control has one (Kamal: new files and cmd), else a stop and a start.
func (a *applier) restart(ctx context.Context, s Step) error {
	n := s.Node
	if n == a.prim {
		a.closePrimary(ctx)
		defer func() { a.prim = n }()
	}
	start := time.Now()
	if rb, ok := a.t.Control.(Rebooter); ok {
		if err := rb.Reboot(ctx, n); err != nil {
			return fmt.Errorf("rebooting %s: %w (start it with `understudy apply`)", n, err)
		}
	} else {
		if err := a.t.Control.Stop(ctx, n); err != nil {
			return fmt.Errorf("stopping %s for its restart: %w", n, err)
		}
		if err := a.t.Control.Start(ctx, n); err != nil {
			return fmt.Errorf("starting %s after stopping it for a restart: %w (start it with `understudy apply`)", n, err)
		}
	}
	if _, err := WaitReady(ctx, a.t.Control, n, a.o.Timeout); err != nil {
		return err
	}
	a.did("restarted %s in %.1f s (%s)", n, time.Since(start).Seconds(), strings.Join(s.Settings, "; "))
	return nil
}

// standby boots a standby if needed and follows its clone until it
// streams from the primary.
func (a *applier) standby(ctx context.Context, n pgconf.Node) error {
	prim := a.prim
	pc, err := a.primary(ctx, prim)
	if err != nil {
		return err
	}
	streaming := func() (string, error) { return pgops.StandbyState(ctx, pc, n.Name) }
	if state, err := streaming(); err != nil {
		return err
	} else if state == "streaming" && a.receiverStreaming(ctx, n.Name) {
		return nil
	}
	running, err := a.t.Control.Running(ctx, n.Name)
	if err != nil {
		return err
	}
	if !running {
		a.say("starting %s: its boot script clones %s over slot %s if its data directory is empty", a.t.Control.Where(n.Name), prim, n.Slot())
		if err := a.t.Control.Start(ctx, n.Name); err != nil {
			return err
		}
	} else {
		a.say("%s is running but not streaming yet; waiting", n.Name)
	}
	start := time.Now()
	deadline := start.Add(a.o.Timeout)
	var last pgops.Basebackup
	var lastAt time.Time
	var rate float64
	cloned := false
	for {
		state, err := streaming()
		if err != nil {
			return err
		}
		if state == "streaming" && a.receiverStreaming(ctx, n.Name) {
			break
		}
		bbs, err := pgops.ReadBasebackups(ctx, pc)
		if err != nil {
			return err
		}
		for _, bb := range bbs {
			now := time.Now()
			if !lastAt.IsZero() && bb.PID == last.PID && now.Sub(lastAt) > 0 {
				inst := float64(bb.Streamed-last.Streamed) / now.Sub(lastAt).Seconds()
				rate = inst
				if last.Streamed > 0 {
					rate = 0.5*rate + 0.5*inst
				}
			}
			if bb.Streamed != last.Streamed || bb.Phase != last.Phase {
				a.say("  clone %s", ProgressLine(bb, rate))
			}
			last, lastAt, cloned = bb, now, true
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is not streaming after %s (state %q). Read its log: %s", n.Name, a.o.Timeout, state, a.t.Control.Where(n.Name))
		}
		if run, err := a.t.Control.Running(ctx, n.Name); err == nil && !run {
			return fmt.Errorf("%s stopped while starting; read its log (%s)", n.Name, a.t.Control.Where(n.Name))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	if cloned {
		a.did("cloned %s from %s (about %s in %.1f s) and it is streaming", n.Name, prim, bytesText(max(last.Total, last.Streamed)), time.Since(start).Seconds())
	} else {
		a.did("%s is streaming from %s (%.1f s)", n.Name, prim, time.Since(start).Seconds())
	}
	return nil
}

// ProgressLine renders one clone progress line: bytes, share, rate, ETA.
func ProgressLine(bb pgops.Basebackup, rate float64) string {
	s := fmt.Sprintf("%s: %s", bb.Phase, bytesText(bb.Streamed))
	if bb.Total > 0 {
		s += fmt.Sprintf(" of %s (%.0f%%)", bytesText(bb.Total), 100*float64(bb.Streamed)/float64(bb.Total))
	}
	if rate > 0 {
		s += fmt.Sprintf(", %s/s", bytesText(int64(rate)))
		if bb.Total > bb.Streamed {
			s += fmt.Sprintf(", about %.0f s left", max(1, float64(bb.Total-bb.Streamed)/rate))
		}
	}
	return s
}

// Permanent reports whether a connection error cannot go away by waiting:
// a refused password or role, or an error that says so itself (SSH host
// key and login failures).
func Permanent(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "28") {
		return true
	}
	var p interface{ Permanent() bool }
	return errors.As(err, &p) && p.Permanent()
}

// WaitReady waits until a node accepts connections and returns whether it
// is in recovery.
func WaitReady(ctx context.Context, ctl Control, node string, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		c, err := ctl.Conn(ctx, node)
		if err == nil {
			rec, err := pgops.InRecovery(ctx, c)
			c.Close(ctx)
			if err == nil {
				return rec, nil
			}
		}
		lastErr = err
		if Permanent(err) {
			return false, err
		}
		if time.Now().After(deadline) {
			return false, fmt.Errorf("%s did not accept connections within %s: %w", ctl.Where(node), timeout, lastErr)
		}
		if run, rerr := ctl.Running(ctx, node); rerr == nil && !run {
			return false, fmt.Errorf("%s stopped during start-up; read its log", ctl.Where(node))
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// receiverStreaming asks the standby itself: its walreceiver streams.
func (a *applier) receiverStreaming(ctx context.Context, node string) bool {
	c, err := a.t.Control.Conn(ctx, node)
	if err != nil {
		return false
	}
	defer c.Close(context.WithoutCancel(ctx))
	ok, err := pgops.ReceiverStreaming(ctx, c)
	return err == nil && ok
}
