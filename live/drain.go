package live

import (
	"context"
	"fmt"
	"time"

	"github.com/understudy-dev/understudy/pgops"
)

// A switchover with node agents drains the old primary before it stops it
// and announces the new one as soon as it is promoted, so the routers stop
// sending writes to the old node before writes pause, and send them to
// the new one at their next check.
//
// Drain: a superuser session on the old primary holds understudy's drain
// lock (pgops.DrainLockKey); the node's agent sees it in its next
// observation and answers /primary 503, and the routers mark the node down
// and cut its sessions. The lock is the session's: it ends with it, when
// the node stops, when the switchover rolls back, or when understudy's
// process dies, so nothing can leave a node drained by mistake. No agent
// endpoint changes anything: they stay read-only and unauthenticated.
//
// Announce: the new primary's agent is asked for a fresh answer
// (/primary?fresh observes at once), so it answers 200 from the moment of
// the promotion instead of at its next ~100 ms observation.

// The switchover's steps at the agents.
const (
	StepDrain    StepKind = "drain"    // at the old primary's agent, before the stop
	StepAnnounce StepKind = "announce" // at the new primary's agent, after the promote
)

// AgentPrimaryReader asks a node's agent for a fresh /primary answer.
type AgentPrimaryReader interface {
	AgentPrimary(ctx context.Context, node string) (ok bool, reason string, err error)
}

// drainLimit is how long the drain waits for the old primary's agent.
const drainLimit = 3 * time.Second

// drain takes the drain lock on the old primary in a session of its own
// and waits until its agent answers /primary 503. The returned release
// ends the session (and with it the lock). A missing or silent agent does
// not stop the switchover: the routers cannot reach it either, so they do
// not send it writes; that is said.
func drain(ctx context.Context, t Target, node string, o RoleOptions) (release func(), err error) {
	c, err := t.Control.Conn(ctx, node)
	if err != nil {
		return nil, err
	}
	release = func() { c.Close(context.WithoutCancel(ctx)) }
	if err := pgops.HoldDrainLock(ctx, c); err != nil {
		release()
		return nil, err
	}
	start := time.Now()
	r, ok := t.Routing.(AgentPrimaryReader)
	if !ok {
		return release, nil
	}
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		up, reason, err := r.AgentPrimary(actx, node)
		cancel()
		switch {
		case err != nil && time.Since(start) > drainLimit:
			say(o, "  ! %s's agent did not answer (%v): the routers cannot reach it either, so they send it nothing", node, err)
			return release, nil
		case err == nil && !up:
			say(o, "  ✓ %s drained: its agent answers /primary 503 (%s; %d ms), the routers stop sending it writes", node, reason, time.Since(start).Milliseconds())
			return release, nil
		case err == nil && time.Since(start) > drainLimit:
			release()
			return nil, fmt.Errorf("%s's agent still answers /primary 200 %s after the drain lock was taken (%s): is it an older understudy? Run `understudy apply` to update the agents", node, drainLimit, reason)
		}
		select {
		case <-ctx.Done():
			release()
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// announce asks the new primary's agent for a fresh answer until it is
// 200. It never fails the switchover (the promotion is done): it says so.
func announce(ctx context.Context, t Target, node string, o RoleOptions) {
	r, ok := t.Routing.(AgentPrimaryReader)
	if !ok {
		return
	}
	start := time.Now()
	var last string
	for time.Since(start) < drainLimit {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		up, reason, err := r.AgentPrimary(actx, node)
		cancel()
		if err == nil && up {
			say(o, "  ✓ %s's agent answers /primary 200 (%d ms after the promotion): the routers send writes there at their next check", node, time.Since(start).Milliseconds())
			return
		}
		last = reason
		if err != nil {
			last = err.Error()
		}
		time.Sleep(10 * time.Millisecond)
	}
	say(o, "  ! %s's agent does not answer /primary 200 yet (%s): the routers will not send it writes until it does; see `understudy status`", node, last)
}
