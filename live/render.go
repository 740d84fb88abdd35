package live

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"
)

// StatusText renders a Status as one screen: a row per node, then the
// slots and any clone in progress.
func StatusText(st *Status) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tROLE\tTIMELINE\tWAL POSITION\tLAG\tCONNECTION")
	for _, n := range st.Nodes {
		if !n.Reachable {
			state := "unreachable"
			if n.Running != nil && !*n.Running {
				state = "not running"
			}
			fmt.Fprintf(w, "%s\tdown\t-\t-\t-\t%s: %s\n", n.Name, state, firstLine(n.Error))
			continue
		}
		f := n.Facts
		lsn, lag, conn := f.CurrentLSN, "-", ""
		switch n.Role {
		case RolePrimary:
			var parts []string
			for _, r := range n.Replication {
				parts = append(parts, fmt.Sprintf("%s %s", r.Name, r.State))
			}
			conn = "sending to: " + strings.Join(parts, ", ")
			if len(parts) == 0 {
				conn = "no standby connected"
			}
		case RoleStandby:
			lsn = f.ReplayLSN + " replayed"
			if n.LagBytes != nil {
				lag = fmt.Sprintf("%s / %s", bytesText(*n.LagBytes), (time.Duration(*n.LagSeconds * float64(time.Second))).Round(time.Millisecond))
			}
			conn = "no WAL receiver"
			if r := f.Receiver; r != nil {
				conn = fmt.Sprintf("%s from %s:%d", r.Status, r.SenderHost, r.SenderPort)
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\n", n.Name, n.Role, f.Timeline, lsn, lag, conn)
	}
	w.Flush()
	if p := st.Node(st.Primary); p != nil && len(p.Slots) > 0 {
		fmt.Fprintf(&b, "\nslots on %s (WAL cap %s):\n", p.Name, st.WALCap)
		w = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "  SLOT\tIN USE\tWAL STATUS\tRETAINED\tROOM LEFT")
		for _, s := range p.Slots {
			room := "unlimited"
			if s.SafeWALBytes != nil {
				room = bytesText(*s.SafeWALBytes)
			}
			inUse := "no"
			if s.Active {
				inUse = "yes"
			}
			fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\n", s.Name, inUse, s.WALStatus, bytesText(s.RetainedBytes), room)
		}
		w.Flush()
		for _, bb := range p.Basebackups {
			fmt.Fprintf(&b, "\nclone in progress from %s: %s\n", p.Name, ProgressLine(bb, 0))
		}
	}
	if st.Primary == "" {
		b.WriteString("\nno single writable primary: run `understudy check` for what to do\n")
	}
	return b.String()
}

// FindingsText renders check's findings, worst first.
func FindingsText(fs []Finding) string {
	if len(fs) == 0 {
		return "all checks passed\n"
	}
	var b strings.Builder
	for _, f := range fs {
		where := ""
		if f.Node != "" {
			where = " [" + f.Node + "]"
		}
		fmt.Fprintf(&b, "%-8s %s%s: %s\n         fix: %s\n", strings.ToUpper(f.Severity.String()), f.Code, where, f.Problem, f.Fix)
	}
	return b.String()
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
