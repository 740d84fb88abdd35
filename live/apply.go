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

// ApplyResult is what apply changed; empty when the nodes already matched the plan.
type ApplyResult struct {
	Actions []string
}

// ErrRestartDeclined is returned when a restart is needed and not agreed to.
var ErrRestartDeclined = errors.New("restart not agreed")

// Apply brings running nodes to the plan: the primary runs, the replication
// role has the planned password, settings are in force (reloaded where a
// reload is enough; restarted only with consent), every standby has its
// slot before it is cloned, and every standby streams. Re-running it on a
// healthy cluster changes nothing.
func Apply(ctx context.Context, t Target, o ApplyOptions) (*ApplyResult, error) {
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Minute
	}
	a := &applier{t: t, o: o, res: &ApplyResult{}}
	return a.res, a.run(ctx)
}

type applier struct {
	t   Target
	o   ApplyOptions
	res *ApplyResult
}

func (a *applier) say(format string, args ...any) { fmt.Fprintf(a.o.Out, format+"\n", args...) }

func (a *applier) did(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	a.res.Actions = append(a.res.Actions, s)
	a.say("  ✓ %s", s)
}

func (a *applier) run(ctx context.Context) error {
	if err := reachAll(ctx, a.t); err != nil {
		return err
	}
	st, err := Gather(ctx, a.t)
	if err != nil {
		return err
	}
	prim, err := a.primary(ctx, st)
	if err != nil {
		return err
	}
	a.say("primary: %s", a.t.Control.Where(prim))
	pc, err := a.t.Control.Conn(ctx, prim)
	if err != nil {
		return fmt.Errorf("connecting to the primary %s: %w", prim, err)
	}
	defer func() { pc.Close(context.WithoutCancel(ctx)) }()

	// Settings first: a restart of the primary must come before the clone.
	restarts := map[string][]string{}
	for _, n := range a.t.Cluster.Nodes {
		ns := st.Node(n.Name)
		if !ns.Reachable {
			continue
		}
		c := pc
		if n.Name != prim {
			if c, err = a.t.Control.Conn(ctx, n.Name); err != nil {
				return fmt.Errorf("connecting to %s: %w", a.t.Control.Where(n.Name), err)
			}
		}
		need, err := a.settings(ctx, c, n.Name)
		if c != pc {
			c.Close(ctx)
		}
		if err != nil {
			return err
		}
		if len(need) > 0 {
			restarts[n.Name] = need
		}
	}
	if len(restarts) > 0 {
		if err := a.restart(ctx, restarts, prim); err != nil {
			return err
		}
		if _, ok := restarts[prim]; ok {
			pc.Close(ctx)
			if pc, err = a.t.Control.Conn(ctx, prim); err != nil {
				return fmt.Errorf("reconnecting to the primary %s after its restart: %w", prim, err)
			}
		}
	}

	role, err := pgops.ReadRole(ctx, pc, a.t.Cluster.ReplUser, a.t.Password)
	if err != nil {
		return err
	}
	if !role.OK() {
		if err := pgops.EnsureReplicationRole(ctx, pc, a.t.Cluster.ReplUser, a.t.Password); err != nil {
			return err
		}
		verb := "created"
		if role.Exists {
			verb = "updated"
		}
		a.did("%s replication role %s from a SCRAM verifier computed here (the password never reached the server)", verb, a.t.Cluster.ReplUser)
	}

	if granted, err := pgops.EnsureRewindGrants(ctx, pc, a.t.Cluster.ReplUser); err != nil {
		return err
	} else if granted {
		a.did("let %s read the files pg_rewind needs, so a crashed primary can rejoin without a full clone", a.t.Cluster.ReplUser)
	}

	rules, err := pgops.ReadHBARules(ctx, pc)
	if err != nil {
		return err
	}
	for _, n := range a.t.Cluster.Nodes {
		if n.Name == prim {
			continue
		}
		if v := HBADecides(rules, "replication", a.t.Cluster.ReplUser, n.Addr); !v.Allowed {
			return fmt.Errorf("the primary %s's pg_hba file does not let %s (%s) connect for replication (%s). Mount understudy's pg_hba file (re-run `understudy init`) and run apply again",
				prim, n.Name, n.Addr, describeVerdict(v))
		}
		created, err := pgops.EnsureSlot(ctx, pc, n.Slot())
		if err != nil {
			return err
		}
		if created {
			a.did("created slot %s on %s before cloning, so the primary keeps every WAL segment %s will need", n.Slot(), prim, n.Name)
		}
	}
	for _, n := range a.t.Cluster.Nodes {
		if n.Name == prim {
			continue
		}
		if err := a.standby(ctx, pc, st, prim, n); err != nil {
			return err
		}
	}
	return nil
}

// primary finds the writable node, starting the initial primary when no
// node runs at all.
func (a *applier) primary(ctx context.Context, st *Status) (string, error) {
	var writable []string
	for _, n := range st.Nodes {
		if n.Role == "primary" {
			writable = append(writable, n.Name)
		}
	}
	switch {
	case len(writable) == 1:
		return writable[0], nil
	case len(writable) > 1:
		return "", fmt.Errorf("more than one node accepts writes (%s): apply will not choose between them. Keep the one the app writes to and bring the other back with `understudy rejoin`", strings.Join(writable, ", "))
	}
	for _, n := range st.Nodes {
		if n.Reachable {
			return "", fmt.Errorf("no node accepts writes, but %s is up as a standby: apply will not invent a primary. Start the primary, or promote the standby with `understudy promote`", n.Name)
		}
	}
	prim := a.t.Cluster.InitialPrimary
	running, err := a.t.Control.Running(ctx, prim)
	if err != nil {
		return "", err
	}
	if !running {
		a.say("starting %s", a.t.Control.Where(prim))
		if err := a.t.Control.Start(ctx, prim); err != nil {
			return "", err
		}
		a.did("started the primary %s", prim)
	}
	inRecovery, err := WaitReady(ctx, a.t.Control, prim, a.o.Timeout)
	if err != nil {
		return "", err
	}
	if inRecovery {
		return "", fmt.Errorf("%s started as a standby, so there is no primary to apply to. Start the node that was the primary, or promote %s with `understudy promote`", prim, prim)
	}
	return prim, nil
}

// settingsDiff lists the planned settings a running server does not have.
func settingsDiff(ctx context.Context, c *pgx.Conn, cl pgconf.Cluster) ([]pgconf.Setting, map[string]pgops.LiveSetting, error) {
	want := pgconf.Settings(cl)
	names := make([]string, len(want))
	for i, s := range want {
		names[i] = s.Name
	}
	live, err := pgops.ReadSettings(ctx, c, names)
	if err != nil {
		return nil, nil, err
	}
	var d []pgconf.Setting
	for _, s := range want {
		l, ok := live[s.Name]
		if !ok || SameSetting(s.Value, l.Setting, l.Unit) || l.Source == "command line" {
			continue // a -c flag is the operator's choice (the lab's port and address)
		}
		if s.Name == "hba_file" && cl.HBAFile == "" {
			continue
		}
		if strings.HasPrefix(s.Name, "tcp_keepalives_") && l.Setting == "0" {
			continue // reads 0 on a Unix-socket session; the file's value applies to TCP ones
		}
		d = append(d, s)
	}
	return d, live, nil
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

// settings makes a node's live settings match the plan: a reload where that
// is enough; returns the settings that need a restart, with the reason.
func (a *applier) settings(ctx context.Context, c *pgx.Conn, node string) ([]string, error) {
	if why, err := notOurConfig(ctx, c, a.t.Cluster); err != nil || why != "" {
		if why != "" {
			return []string{why}, nil
		}
		return nil, err
	}
	differs := func() ([]pgconf.Setting, map[string]pgops.LiveSetting, error) {
		return settingsDiff(ctx, c, a.t.Cluster)
	}
	d, live, err := differs()
	if err != nil || len(d) == 0 {
		return nil, err
	}
	reloadable := false
	for _, s := range d {
		l := live[s.Name]
		if strings.HasSuffix(l.SourceFile, "postgresql.auto.conf") {
			if _, err := c.Exec(ctx, "ALTER SYSTEM RESET "+pgx.Identifier{s.Name}.Sanitize()); err != nil {
				return nil, fmt.Errorf("resetting %s (set by ALTER SYSTEM) on %s: %w", s.Name, node, err)
			}
			a.did("reset %s on %s: ALTER SYSTEM had set it to %s, overriding the managed settings file", s.Name, node, l.Setting)
		}
		if l.Context != "postmaster" && !l.PendingRestart {
			reloadable = true
		}
	}
	if reloadable {
		if err := pgops.Reload(ctx, c); err != nil {
			return nil, err
		}
		time.Sleep(200 * time.Millisecond) // the postmaster signals backends asynchronously
		var changed []string
		d2, _, err := differs()
		if err != nil {
			return nil, err
		}
		for _, s := range d {
			if !containsSetting(d2, s.Name) {
				changed = append(changed, s.Name+" = "+s.Value)
			}
		}
		if len(changed) > 0 {
			a.did("reloaded %s: %s", node, strings.Join(changed, ", "))
		}
		d = d2
	}
	var restart []string
	_, live, err = differs()
	if err != nil {
		return nil, err
	}
	for _, s := range d {
		l := live[s.Name]
		if l.Context == "postmaster" {
			restart = append(restart, fmt.Sprintf("%s %s → %s (%s)", s.Name, l.Setting+l.Unit, s.Value, s.Why))
			continue
		}
		return nil, fmt.Errorf("%s is %s on %s (from %s), but the plan says %s, and a reload did not change it. Check that understudy's settings file is the one the server reads (config_file), then run apply again",
			s.Name, l.Setting+l.Unit, node, sourceText(l), s.Value)
	}
	return restart, nil
}

func containsSetting(list []pgconf.Setting, name string) bool {
	for _, s := range list {
		if s.Name == name {
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

// restart restarts nodes whose settings need it, standbys first, after the
// user agrees.
func (a *applier) restart(ctx context.Context, need map[string][]string, prim string) error {
	var b strings.Builder
	for _, n := range a.t.Cluster.Nodes {
		if r, ok := need[n.Name]; ok {
			role := "standby: replication pauses while it restarts"
			if n.Name == prim {
				role = "the PRIMARY: the app cannot write for the few seconds it takes"
			}
			fmt.Fprintf(&b, "  %s (%s) needs a restart for:\n", n.Name, role)
			for _, s := range r {
				fmt.Fprintf(&b, "    - %s\n", s)
			}
		}
	}
	a.say("%s", strings.TrimRight(b.String(), "\n"))
	if !a.o.Yes && (a.o.Confirm == nil || !a.o.Confirm("Restart these nodes now?")) {
		return fmt.Errorf("%w: these settings need a restart and none was done:\n%s\nRe-run `understudy apply --yes` when a short interruption is acceptable", ErrRestartDeclined, strings.TrimRight(b.String(), "\n"))
	}
	order := []string{}
	for _, n := range a.t.Cluster.Nodes {
		if _, ok := need[n.Name]; ok && n.Name != prim {
			order = append(order, n.Name)
		}
	}
	if _, ok := need[prim]; ok {
		order = append(order, prim)
	}
	for _, n := range order {
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
		a.did("restarted %s in %.1f s (%s)", n, time.Since(start).Seconds(), strings.Join(need[n], "; "))
	}
	return nil
}

// standby boots a standby if needed and follows its clone until it streams.
func (a *applier) standby(ctx context.Context, pc *pgx.Conn, st *Status, prim string, n pgconf.Node) error {
	ns := st.Node(n.Name)
	streaming := func() (string, error) {
		var state string
		err := pc.QueryRow(ctx, `SELECT coalesce((SELECT state FROM pg_stat_replication WHERE application_name = $1 LIMIT 1), '')`, n.Name).Scan(&state)
		return state, err
	}
	if state, err := streaming(); err != nil {
		return err
	} else if state == "streaming" && ns.Reachable {
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
		if state == "streaming" {
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
			var rec bool
			err = c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec)
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
