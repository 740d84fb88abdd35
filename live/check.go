package live

import (
	"fmt"
	"github.com/understudy-dev/understudy/backup"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/understudy-dev/understudy/pgconf"
)

// Severity of a finding. check exits with the highest: 0 none, 1 warning, 2 critical.
type Severity int

const (
	Info Severity = iota
	Warning
	Critical
)

func (s Severity) String() string { return [...]string{"info", "warning", "critical"}[s] }

// MarshalText makes Severity read as a word in JSON.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// FindingCode names a kind of finding; docs/status-json.md lists them.
type FindingCode string

// The finding codes.
const (
	CodeCatchingUp          FindingCode = "catching-up"
	CodeHbaError            FindingCode = "hba-error"
	CodeHbaMissing          FindingCode = "hba-missing"
	CodeHotStandby          FindingCode = "hot-standby"
	CodeLag                 FindingCode = "lag"
	CodeNoPrimary           FindingCode = "no-primary"
	CodeNotStreaming        FindingCode = "not-streaming"
	CodeOtherCluster        FindingCode = "other-cluster"
	CodeParity              FindingCode = "parity"
	CodePendingRestart      FindingCode = "pending-restart"
	CodeRewindImpossible    FindingCode = "rewind-impossible"
	CodeSlotAbandoned       FindingCode = "slot-abandoned"
	CodeBackupSlotOnPrimary FindingCode = "backup-slot-on-primary"
	CodeSlotCapUnlimited    FindingCode = "slot-cap-unlimited"
	CodeSlotInactive        FindingCode = "slot-inactive"
	CodeSlotLost            FindingCode = "slot-lost"
	CodeSlotMissing         FindingCode = "slot-missing"
	CodeSlotNearCap         FindingCode = "slot-near-cap"
	CodeSlotUnreserved      FindingCode = "slot-unreserved"
	CodeSplitBrain          FindingCode = "split-brain"
	CodeSyncSingle          FindingCode = "sync-single"
	CodeTimeline            FindingCode = "timeline"
	CodeTlsOff              FindingCode = "tls-off"
	CodeUnreachable         FindingCode = "unreachable"
	CodeWalLevel            FindingCode = "wal-level"
)

// Finding is one problem check found, and the exact fix.
type Finding struct {
	Severity Severity    `json:"severity"`
	Code     FindingCode `json:"code"`
	Node     string      `json:"node,omitempty"`
	Problem  string      `json:"problem"`
	Fix      string      `json:"fix"`
}

// Thresholds for the checks that need one.
type Thresholds struct {
	MaxLagBytes  int64         // warn above this replay lag in bytes
	MaxLag       time.Duration // warn above this replay lag in time
	SlotHeadroom float64       // warn when a slot has less than this share of the cap left
}

// DefaultThresholds are check's defaults.
var DefaultThresholds = Thresholds{MaxLagBytes: 64 << 20, MaxLag: 30 * time.Second, SlotHeadroom: 0.25}

// ParitySettings must be no smaller on a standby than on its primary
// (PostgreSQL docs, hot-standby.html).
var ParitySettings = []string{"max_connections", "max_prepared_transactions", "max_locks_per_transaction", "max_wal_senders", "max_worker_processes"}

// Check judges a Status. It is pure: every finding comes from the
// reading, so each can be provoked and tested on real servers.
func Check(st *Status, c pgconf.Cluster, th Thresholds) []Finding {
	var out []Finding
	add := func(sev Severity, code FindingCode, node, problem, fix string) {
		out = append(out, Finding{sev, code, node, problem, fix})
	}
	var primaries []string
	for _, n := range st.Nodes {
		if n.Role == RolePrimary {
			primaries = append(primaries, n.Name)
		}
	}
	for _, n := range st.Nodes {
		if n.Reachable {
			continue
		}
		fix := "start it with `understudy apply`, then run check again"
		if n.Running != nil && *n.Running {
			fix = "it is running but does not answer: read its log (lab: <lab>/" + n.Name + ".log; Kamal: kamal accessory logs " + n.Name + ")"
		}
		add(Critical, CodeUnreachable, n.Name, fmt.Sprintf("cannot reach %s: %s", n.Where, n.Error), fix)
	}
	switch {
	case len(primaries) > 1:
		add(Critical, CodeSplitBrain, "", fmt.Sprintf("more than one node accepts writes: %s", strings.Join(primaries, ", ")),
			"stop the app's writes now; keep the node the app has been writing to, stop the other and bring it back as a standby with `understudy rejoin`")
	case len(primaries) == 0 && reachableCount(st) > 0:
		add(Critical, CodeNoPrimary, "", "no reachable node accepts writes",
			"start the primary (`understudy apply`); if its server is lost for good, promote a standby with `understudy promote`")
	}
	p := st.Node(st.Primary)
	if p != nil {
		out = append(out, primaryFindings(st, p, c, th)...)
	}
	for i := range st.Nodes {
		n := &st.Nodes[i]
		if !n.Reachable {
			continue
		}
		out = append(out, checkNode(n, c)...)
		if n.Role == RoleStandby && p != nil {
			out = append(out, checkStandby(n, p, th)...)
		}
	}
	capBytes, _ := pgconf.ParseSize(c.WALCap, "MB")
	out = append(out, CheckBackup(st, capBytes, DefaultBackupThresholds, th.SlotHeadroom)...)
	out = append(out, CheckVersions(st)...)
	out = append(out, MajorFindings(st, c)...)
	out = append(out, CheckRouting(st)...)
	out = append(out, CheckFailover(st, c.Failover != nil)...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Severity > out[j].Severity })
	return out
}

func reachableCount(st *Status) int {
	k := 0
	for _, n := range st.Nodes {
		if n.Reachable {
			k++
		}
	}
	return k
}

// primaryFindings: slots for every standby, peers allowed in, abandoned slots.
func primaryFindings(st *Status, p *NodeStatus, c pgconf.Cluster, th Thresholds) []Finding {
	var out []Finding
	add := func(sev Severity, code FindingCode, node, problem, fix string) {
		out = append(out, Finding{sev, code, node, problem, fix})
	}
	capBytes, capErr := pgconf.ParseSize(p.Facts.Settings["max_slot_wal_keep_size"], "MB")
	owned := map[string]bool{}
	for _, n := range c.Nodes {
		owned[n.Slot()] = true
		if n.Name == p.Name {
			continue
		}
		if v, ok := p.HBA[n.Name]; ok && !v.Allowed {
			add(Critical, CodeHbaMissing, p.Name, fmt.Sprintf("%s's pg_hba does not let %s (%s) connect for replication as %s (%s)",
				p.Name, n.Name, n.Addr, c.ReplUser, describeVerdict(v)),
				"mount understudy's pg_hba file (hba_file) on "+p.Name+" and reload: `understudy apply`; or re-run `understudy init` if the node's address changed")
		}
		var slot *slotView
		for _, s := range p.Slots {
			if s.Name == n.Slot() {
				slot = &slotView{s.Active, s.WALStatus, s.RetainedBytes, s.SafeWALBytes}
			}
		}
		if slot == nil {
			add(Critical, CodeSlotMissing, n.Name, fmt.Sprintf("the primary %s has no replication slot %s for %s, so it may remove WAL the standby still needs", p.Name, n.Slot(), n.Name),
				"create it: `understudy apply` (it creates the slot before anything else)")
			continue
		}
		switch slot.walStatus {
		case "lost":
			add(Critical, CodeSlotLost, n.Name, fmt.Sprintf("slot %s was invalidated: %s fell more than max_slot_wal_keep_size (%s) behind and the WAL it needs is gone", n.Slot(), n.Name, p.Facts.Settings["max_slot_wal_keep_size"]+"MB"),
				"re-clone "+n.Name+": stop it, move its data directory aside, drop the slot, then `understudy apply`")
		case "unreserved":
			add(Critical, CodeSlotUnreserved, n.Name, fmt.Sprintf("slot %s holds more WAL than the cap allows; the next checkpoint will invalidate it", n.Slot()),
				"bring "+n.Name+" back to streaming now (`understudy apply`), or raise --wal-cap if the disk has room")
		default:
			if slot.safe != nil && capErr == nil && capBytes > 0 && float64(*slot.safe) < th.SlotHeadroom*float64(capBytes) {
				add(Warning, CodeSlotNearCap, n.Name, fmt.Sprintf("slot %s retains %s; only %s is left before it hits the %s cap and %s must re-clone",
					n.Slot(), bytesText(slot.retained), bytesText(*slot.safe), bytesText(capBytes), n.Name),
					"get "+n.Name+" streaming again (`understudy status` shows why it is not), or raise --wal-cap if the disk has room")
			}
		}
		if !slot.active {
			add(Warning, CodeSlotInactive, n.Name, fmt.Sprintf("slot %s is not in use: %s is not replicating, and the primary keeps WAL for it (%s so far)", n.Slot(), n.Name, bytesText(slot.retained)),
				"start "+n.Name+" (`understudy apply`); if it is gone for good, drop the slot: SELECT pg_drop_replication_slot('"+n.Slot()+"') on "+p.Name)
		}
	}
	for _, s := range p.Slots {
		if !owned[s.Name] && !s.Active && !(s.Name == backup.DefaultSlot && st.Backup != nil) { // with backups, CheckBackup reports it
			add(Warning, CodeSlotAbandoned, p.Name, fmt.Sprintf("slot %s belongs to no node and keeps %s of WAL on %s", s.Name, bytesText(s.RetainedBytes), p.Name),
				"if nothing uses it, drop it: SELECT pg_drop_replication_slot('"+s.Name+"')")
		}
	}
	// The backup agent streams from the primary only while no standby runs;
	// role changes move its slot in their own steps, so one left here while
	// a standby streams is WAL kept for nobody (or streamed from the wrong
	// node).
	if hasSlot(p, BackupSlot) {
		for _, n := range st.Nodes {
			if n.Role == RoleStandby && streamingFrom(p, n.Name) {
				add(Warning, CodeBackupSlotOnPrimary, p.Name, fmt.Sprintf("the backup agent's slot %s is on the primary %s while %s streams as a standby: the primary keeps WAL for the backups, which should come from the standby", BackupSlot, p.Name, n.Name),
					"the backup agent moves to the standby by itself within a minute; if the slot stays, end its session and drop it on "+p.Name+": SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '"+BackupSlot+"'; SELECT pg_drop_replication_slot('"+BackupSlot+"') (the agent makes it again on "+n.Name+")")
				break
			}
		}
	}
	if v := p.Facts.Settings["synchronous_standby_names"]; v != "" && countStandbys(st) < 2 {
		add(Warning, CodeSyncSingle, p.Name, fmt.Sprintf("synchronous_standby_names is %q with fewer than two standbys: every commit waits while the standby is down", v),
			"unset synchronous_standby_names, or run two standbys with ANY 1 (...)")
	}
	return out
}

type slotView struct {
	active    bool
	walStatus string
	retained  int64
	safe      *int64
}

func countStandbys(st *Status) int {
	k := 0
	for _, n := range st.Nodes {
		if n.Role == RoleStandby {
			k++
		}
	}
	return k
}

// checkNode: settings every node needs whatever its role.
func checkNode(n *NodeStatus, c pgconf.Cluster) []Finding {
	var out []Finding
	add := func(sev Severity, code FindingCode, problem, fix string) {
		out = append(out, Finding{sev, code, n.Name, problem, fix})
	}
	s := n.Facts.Settings
	if s["wal_level"] == "minimal" {
		add(Critical, CodeWalLevel, "wal_level is minimal: no standby can follow this node", "start it with understudy's settings file: `understudy apply --yes` (restarts it)")
	}
	if s["hot_standby"] == "off" {
		add(Warning, CodeHotStandby, "hot_standby is off: as a standby this node answers no queries, and verify cannot read from it", "`understudy apply --yes` (restarts it)")
	}
	if s["max_slot_wal_keep_size"] == "-1" {
		add(Warning, CodeSlotCapUnlimited, "max_slot_wal_keep_size is -1: a standby that stays away can fill this node's disk with WAL", "`understudy apply` sets the cap ("+c.WALCap+") and reloads")
	}
	if s["wal_log_hints"] == "off" && !n.Facts.DataChecksums {
		add(Warning, CodeRewindImpossible, "neither wal_log_hints nor data checksums are on: after a crash failover this node cannot be rewound and must be re-cloned in full",
			"`understudy apply --yes` turns wal_log_hints on (restarts it); it protects divergences from then on")
	}
	if len(n.Facts.PendingRestart) > 0 {
		add(Warning, CodePendingRestart, "settings changed in the files but waiting for a restart: "+strings.Join(n.Facts.PendingRestart, ", "),
			"`understudy apply --yes` restarts the node to take them")
	}
	for _, e := range n.HBAErrors {
		add(Critical, CodeHbaError, "its pg_hba file has an invalid "+e+"; the server keeps the rules it loaded last and refuses to reload new ones",
			"fix the line (re-run `understudy init` to restore the managed file), then `understudy apply`")
	}
	if n.Role == RoleStandby {
		for peer, v := range n.HBA {
			if !v.Allowed {
				add(Warning, CodeHbaMissing, fmt.Sprintf("%s's pg_hba does not let %s connect for replication (%s): a switchover to %s would leave %s unable to follow",
					n.Name, peer, describeVerdict(v), n.Name, peer),
					"mount understudy's pg_hba file (hba_file) on "+n.Name+" and reload: `understudy apply`")
			}
		}
	}
	return out
}

// checkStandby: is it following the primary, closely, over a private or TLS link.
func checkStandby(n, p *NodeStatus, th Thresholds) []Finding {
	var out []Finding
	add := func(sev Severity, code FindingCode, problem, fix string) {
		out = append(out, Finding{sev, code, n.Name, problem, fix})
	}
	if n.Facts.SystemIdentifier != p.Facts.SystemIdentifier {
		add(Critical, CodeOtherCluster, fmt.Sprintf("%s holds a different database cluster (system id %s) from the primary %s (%s): it can never follow it",
			n.Name, n.Facts.SystemIdentifier, p.Name, p.Facts.SystemIdentifier),
			"re-clone it: stop "+n.Name+", move its data directory aside (do not delete it until you know what it holds), then `understudy apply`")
		return out
	}
	var rep *struct{ state string }
	for _, r := range p.Replication {
		if r.Name == n.Name {
			rep = &struct{ state string }{r.State}
		}
	}
	switch {
	case rep == nil:
		why := "no WAL receiver is running"
		if n.Facts.Receiver != nil {
			why = fmt.Sprintf("its WAL receiver is %s (%s)", n.Facts.Receiver.Status, net.JoinHostPort(n.Facts.Receiver.SenderHost, strconv.Itoa(n.Facts.Receiver.SenderPort)))
		}
		add(Critical, CodeNotStreaming, fmt.Sprintf("%s is a standby but is not replicating from %s: %s", n.Name, p.Name, why),
			"read "+n.Name+"'s log for the replication error; `understudy apply` fixes a missing slot, role or pg_hba line")
	case rep.state != "streaming":
		add(Warning, CodeCatchingUp, fmt.Sprintf("%s is connected to %s but %s, not streaming yet", n.Name, p.Name, rep.state), "wait, then run check again; if it stays so, compare its lag in `understudy status`")
	}
	if n.Facts.Timeline < p.Facts.Timeline && rep == nil {
		add(Critical, CodeTimeline, fmt.Sprintf("%s is on timeline %d but the primary %s is on timeline %d", n.Name, n.Facts.Timeline, p.Name, p.Facts.Timeline),
			"make sure recovery_target_timeline is latest (`understudy apply`); if its log says it diverged, bring it back with `understudy rejoin "+n.Name+"`")
	}
	if n.LagBytes != nil && *n.LagBytes > th.MaxLagBytes || n.LagSeconds != nil && *n.LagSeconds > th.MaxLag.Seconds() {
		add(Warning, CodeLag, fmt.Sprintf("%s is %s / %.1f s behind %s (thresholds %s / %s)", n.Name, bytesText(deref(n.LagBytes)), deref(n.LagSeconds), p.Name, bytesText(th.MaxLagBytes), th.MaxLag),
			"look for long queries on "+n.Name+" (max_standby_streaming_delay), its disk or network; a failover now would lose up to this much")
	}
	for _, name := range ParitySettings {
		pv, sv := p.Facts.Settings[name], n.Facts.Settings[name]
		if pv == sv {
			continue
		}
		pi, _ := strconv.Atoi(pv)
		si, _ := strconv.Atoi(sv)
		sev, what := Warning, "after a switchover the roles would be unequal"
		if si < pi {
			sev, what = Critical, "a standby with a smaller value pauses replay when the primary uses more"
		}
		add(sev, CodeParity, fmt.Sprintf("%s is %s on %s but %s on the primary %s: %s", name, sv, n.Name, pv, p.Name, what),
			"set "+name+" to the same value on every node (in each cluster's postgresql.conf, or a -c flag in the accessory cmd), then restart the standby first")
	}
	if !privateLink(n.Addr) || !privateLink(p.Addr) {
		ssl := false
		for _, r := range p.Replication {
			if r.Name == n.Name {
				ssl = r.SSL
			}
		}
		if !ssl {
			add(Warning, CodeTlsOff, fmt.Sprintf("replication from %s (%s) to %s (%s) crosses a public address without TLS: WAL (every row written) travels in clear text", p.Name, p.Addr, n.Name, n.Addr),
				"give the nodes private IPs (re-run `understudy init --replica-ip ... --primary-ip ...`), or put them on a private network or WireGuard")
		}
	}
	return out
}

// privateLink reports whether an address is loopback, RFC 1918, CGNAT,
// link-local or IPv6 unique-local.
func privateLink(addr string) bool {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return false // a name: unknown, so treated as public
	}
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || netip.MustParsePrefix("100.64.0.0/10").Contains(a)
}

func describeVerdict(v HBAVerdict) string {
	if v.Line == 0 {
		return "no line matches"
	}
	return fmt.Sprintf("line %d says %s", v.Line, v.Method)
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f kB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// Worst is the highest severity among findings; check's exit code.
func Worst(fs []Finding) Severity {
	w := Info
	for _, f := range fs {
		w = max(w, f.Severity)
	}
	return w
}

// UnmarshalText reads a severity word back.
func (s *Severity) UnmarshalText(b []byte) error {
	for _, v := range []Severity{Info, Warning, Critical} {
		if v.String() == string(b) {
			*s = v
			return nil
		}
	}
	return fmt.Errorf("unknown severity %q", b)
}
