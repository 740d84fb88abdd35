package lab

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/understudy-dev/understudy/pgops"
)

// VerifyResult is what verify measured.
type VerifyResult struct {
	Delay          time.Duration
	StandbyRefusal string
}

// Verify writes a canary on the initial primary, waits for it on the first
// standby, and proves that standby refuses writes.
func Verify(ctx context.Context, l *Lab) (VerifyResult, error) {
	var r VerifyResult
	p, err := l.Conn(ctx, l.Cluster.Nodes[0].Name)
	if err != nil {
		return r, err
	}
	defer p.Close(ctx)
	s, err := l.Conn(ctx, l.Cluster.Nodes[1].Name)
	if err != nil {
		return r, err
	}
	defer s.Close(ctx)
	if r.Delay, err = pgops.Canary(ctx, p, s, 10*time.Second); err != nil {
		return r, err
	}
	r.StandbyRefusal, err = pgops.ProveReadOnly(ctx, s)
	return r, err
}

// Status renders one line per node.
func Status(ctx context.Context, l *Lab) (string, error) {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tROLE\tTIMELINE\tLSN\tREPLICATION")
	for _, n := range l.Cluster.Nodes {
		c, err := l.Conn(ctx, n.Name)
		if err != nil {
			fmt.Fprintf(w, "%s\tdown\t\t\t%v\n", n.Name, err)
			continue
		}
		st, err := pgops.ReadNodeState(ctx, c)
		if err != nil {
			c.Close(ctx)
			return "", err
		}
		role, repl := "primary", ""
		if st.InRecovery {
			role = "standby"
		} else {
			reps, err := pgops.ReadReplicas(ctx, c)
			if err != nil {
				c.Close(ctx)
				return "", err
			}
			var parts []string
			for _, r := range reps {
				parts = append(parts, fmt.Sprintf("%s %s, %d bytes / %s behind, slot %s", r.Name, r.State, r.LagBytes, r.ReplayLag.Round(time.Millisecond), r.SlotStatus))
			}
			repl = strings.Join(parts, "; ")
		}
		c.Close(ctx)
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", n.Name, role, st.Timeline, st.LSN, repl)
	}
	w.Flush()
	return b.String(), nil
}
