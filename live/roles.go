package live

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/pgops"
)

// RoleOptions control switchover, promote and rejoin.
type RoleOptions struct {
	Out         io.Writer
	Timeout     time.Duration // per wait; default 2 minutes
	MaxLagBytes int64         // switchover refuses a standby further behind; default 16 MB
	Fence       bool          // promote: stop and fence a primary that is still up
	// Hook, when set, is called at named points of a switchover
	// ("before-stop", "after-stop"): the tests interrupt or kill there.
	Hook func(stage string)
}

func (o *RoleOptions) defaults() {
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.MaxLagBytes == 0 {
		o.MaxLagBytes = 16 << 20
	}
}

// RoleResult is what a role change did.
type RoleResult struct {
	OldPrimary, NewPrimary string
	WriteOutage            time.Duration // from the old primary's stop to the new one's promotion
	Kind                   RejoinPath    // rejoin: which way it took
	Path                   string        // rejoin: that way, and why
	Lost                   string        // promote: what may be lost
	Routing                string        // the connection URL that keeps working
}

// RejoinPath is the way rejoin brings a node back.
type RejoinPath string

const (
	RejoinNothing RejoinPath = "nothing" // it already streams
	RejoinRepoint RejoinPath = "re-point"
	RejoinRewind  RejoinPath = "pg_rewind"
	RejoinClone   RejoinPath = "fresh clone" // old files set aside in PGDATA
)

// begin is how every role change starts: defaults, the servers it must
// act on reached (all when none is named; so bad SSH settings change
// nothing), and a reading of every node.
func begin(ctx context.Context, t Target, o *RoleOptions, mustReach ...string) (*Status, error) {
	o.defaults()
	if err := reachAll(ctx, t, mustReach...); err != nil {
		return nil, err
	}
	st, err := GatherNodes(ctx, t)
	if err != nil {
		return nil, err
	}
	st.Lease = readLease(ctx, t)
	return st, nil
}

func (o RoleOptions) hook(stage string) {
	if o.Hook != nil {
		o.Hook(stage)
	}
}

func say(o RoleOptions, format string, a ...any) { fmt.Fprintf(o.Out, format+"\n", a...) }

// stepSlack is what a step gets beyond the role options' Timeout, which
// bounds its own waits (a node stopping, starting, streaming).
var stepSlack = 30 * time.Second

// runStep runs one step of a role change's plan under a deadline of its
// own, so a node that stops answering mid-step ends the command with what
// it waited for instead of hanging it.
func runStep(ctx context.Context, o RoleOptions, s Step, run func(context.Context) error) error {
	limit := o.Timeout + stepSlack
	sctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	err := run(sctx)
	if err != nil && errors.Is(sctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		return fmt.Errorf("%s: step %q on %s did not finish within %s: %w", s.Action, s.Kind, s.Node, limit, err)
	}
	return err
}

// controlData reads a stopped node's control file: directly where the
// control can (ControlReader: a copy of one file, no new process or
// container), else with pg_controldata run in the node's environment.
func controlData(ctx context.Context, t Target, node string) (pgops.ControlData, error) {
	if r, ok := t.Control.(ControlReader); ok {
		cd, err := r.ReadControl(ctx, node)
		if err != nil {
			return cd, fmt.Errorf("reading %s's control file: %w", node, err)
		}
		return cd, nil
	}
	out, err := t.Control.Run(ctx, node, pgconf.ControlDataScript)
	if err != nil {
		return pgops.ControlData{}, fmt.Errorf("reading %s's control file: %w", node, err)
	}
	return pgops.ParseControlData(out)
}

// Routing is the advice printed after a role change: what the app needs,
// and nothing that is not true for every stack (docs/connecting.md).
func Routing(c pgconf.Cluster, primary string) string {
	return fmt.Sprintf("%s is the primary now. An app that connects through understudy's router (one host, the router's) follows by itself: no redeploy.\n"+
		"An app without the router follows only if its settings are what `understudy connect --stack ...` prints for its framework (node-postgres and Prisma never do);\n"+
		"one that names a single node's address needs it changed to %s and a redeploy.", primary, primary)
}

// prepare proves, where the control has steps of its own that can fail,
// that they work on these nodes before anything is stopped.
func prepare(ctx context.Context, t Target, nodes ...string) error {
	var named []string
	for _, n := range nodes {
		if n != "" {
			named = append(named, n)
		}
	}
	nodes = named
	if p, ok := t.Control.(RoleChangePreparer); ok {
		return p.PrepareRoleChange(ctx, nodes...)
	}
	return nil
}
