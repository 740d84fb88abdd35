package live

import (
	"fmt"
	"net"
	"strconv"
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
		lsn, lag, conn := f.CurrentLSN.String(), "-", ""
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
			lsn = f.ReplayLSN.String() + " replayed"
			if n.LagBytes != nil {
				lag = fmt.Sprintf("%s / %s", bytesText(*n.LagBytes), (time.Duration(*n.LagSeconds * float64(time.Second))).Round(time.Millisecond))
			}
			conn = "no WAL receiver"
			if r := f.Receiver; r != nil {
				conn = fmt.Sprintf("%s from %s", r.Status, net.JoinHostPort(r.SenderHost, strconv.Itoa(r.SenderPort)))
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
	b.WriteString(RoutingText(st))
	b.WriteString(FailoverText(st, st.Lease != nil)) // read only when failover is on
	if st.Backup != nil {
		b.WriteString("\n" + BackupText(st.Backup, st.Taken))
	}
	return b.String()
}

// BackupText renders the backup section of status.
func BackupText(bs *BackupStatus, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "backups in %s:\n", bs.Where)
	switch {
	case bs.NoAnswerIn > 0:
		fmt.Fprintf(&b, "  %s\n", bs.Error)
		return b.String()
	case bs.Error != "":
		fmt.Fprintf(&b, "  storage: UNREACHABLE: %s\n", firstLine(bs.Error))
		return b.String()
	}
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format("2006-01-02 15:04:05") + " UTC (" + now.Sub(t).Round(time.Second).String() + " ago)"
	}
	if w := bs.Window; w.OK {
		fmt.Fprintf(&b, "  recovery window: %s to %s\n", w.Earliest.UTC().Format("2006-01-02 15:04:05"), w.Latest.UTC().Format("2006-01-02 15:04:05 UTC"))
	} else {
		fmt.Fprintf(&b, "  recovery window: none yet%s\n", orSuffix(w.Gap))
	}
	fmt.Fprintf(&b, "  base backups: %d", len(bs.Bases))
	if n := len(bs.Bases); n > 0 {
		last := bs.Bases[n-1]
		fmt.Fprintf(&b, ", newest %s (%s, from %s)", ago(last.Finished), bytesText(last.Bytes), last.Source)
	}
	b.WriteString("\n")
	if a := bs.Agent; a != nil {
		state := "archiving"
		switch {
		case a.Paused != "":
			state = "PAUSED: " + a.Paused
		case !a.Receiving:
			state = "NOT RECEIVING"
		}
		// A report older than check's limit says what was, not what is.
		if age := now.Sub(a.Updated); age > DefaultBackupThresholds.AgentSilent {
			state = fmt.Sprintf("STALE REPORT (%s old: the agent is down or cannot write; it last said %s)", age.Round(time.Second), state)
		}
		// The last complete segment with its own upload time; a later
		// upload of the segment being filled is named as such.
		last := "last complete segment " + orDash(a.LastArchived)
		if !a.LastArchivedAt.IsZero() {
			last += " at " + ago(a.LastArchivedAt)
		}
		if a.LastPartialAt.After(a.LastArchivedAt) {
			last += "; newer WAL (the segment being filled) uploaded " + ago(a.LastPartialAt)
		}
		fmt.Fprintf(&b, "  WAL archiving: %s, from %s; %s; report %s\n", state, orDash(a.Source), last, ago(a.Updated))
		if a.LastError != "" {
			fmt.Fprintf(&b, "  last failure: %s: %s\n", ago(a.LastErrorAt), firstLine(a.LastError))
		}
		if a.Gap != "" {
			fmt.Fprintf(&b, "  GAP: %s\n", a.Gap)
		} else if a.LastGap != "" {
			fmt.Fprintf(&b, "  last gap (closed by a newer base backup) %s: %s\n", ago(a.LastGapAt), a.LastGap)
		}
	} else {
		fmt.Fprintf(&b, "  agent: %s\n", bs.AgentError)
	}
	if d := bs.Drill; d != nil {
		res := "passed"
		if !d.OK {
			res = "FAILED: " + d.Error
		}
		fmt.Fprintf(&b, "  last drill: %s, %s, restore took %s\n", ago(d.Started), res, d.Total.Round(100*time.Millisecond))
	} else {
		b.WriteString("  last drill: never (understudy restore drill)\n")
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func orSuffix(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
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
