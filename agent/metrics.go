package agent

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/understudy-dev/understudy/backup"
)

// MetricsInput is everything /metrics renders: the agent's readings, at one
// instant.
type MetricsInput struct {
	Now     time.Time
	View    NodeView
	Answer  RoleAnswer
	Details Details
	Peers   []PeerView
	Counts  counters
	// Backup is the backup agent's report when it runs on this server
	// (nil otherwise); BackupErr says why it could not be read.
	Backup    *backup.AgentStatus
	BackupErr string
	// Failover is the failover loop's metrics ("": failover off).
	Failover string
}

// Metrics renders /metrics now.
func (a *Agent) Metrics(now time.Time) string {
	v, peers, d, c := a.snapshot()
	in := MetricsInput{Now: now, View: v, Answer: Answer(v, peers, a.lease(), now), Details: d, Peers: peers, Counts: c}
	if a.cfg.BackupReport != "" {
		in.Backup, in.BackupErr = ReadBackupReport(a.cfg.BackupReport)
	}
	if a.cfg.Failover != nil {
		in.Failover = a.cfg.Failover.MetricsText()
	}
	return RenderMetrics(in)
}

// ReadBackupReport reads the backup agent's local report
// (agent-status.json, backup.AgentStatus), at most 1 MiB.
func ReadBackupReport(path string) (*backup.AgentStatus, string) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "cannot read the backup agent's report: " + err.Error()
	}
	defer f.Close()
	var st backup.AgentStatus
	if err := json.NewDecoder(io.LimitReader(f, 1<<20)).Decode(&st); err != nil {
		return nil, "the backup agent's report " + path + " is not valid: " + err.Error()
	}
	return &st, ""
}

// metricsWriter writes the Prometheus text exposition format (version
// 0.0.4): a HELP and TYPE line once per family, then its samples.
type metricsWriter struct {
	b strings.Builder
}

func (m *metricsWriter) family(name, typ, help string) {
	fmt.Fprintf(&m.b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

func (m *metricsWriter) sample(name string, v float64, labels ...string) {
	m.b.WriteString(name)
	if len(labels) > 0 {
		m.b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				m.b.WriteByte(',')
			}
			fmt.Fprintf(&m.b, "%s=\"%s\"", labels[i], escapeLabel(labels[i+1]))
		}
		m.b.WriteByte('}')
	}
	m.b.WriteByte(' ')
	m.b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
	m.b.WriteByte('\n')
}

func (m *metricsWriter) gauge(name, help string, v float64, labels ...string) {
	m.family(name, "gauge", help)
	m.sample(name, v, labels...)
}

func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`).Replace(s)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// RenderMetrics renders the metrics: postgres_exporter's names where it
// has one (pg_up, pg_replication_*, pg_stat_replication_pg_wal_lsn_diff,
// pg_replication_slot_*), understudy_* for the rest. Pure.
func RenderMetrics(in MetricsInput) string {
	m := &metricsWriter{}
	v, ans := in.View, in.Answer
	up := ans.Role != RoleDown
	node := []string{"node", v.Node}
	m.gauge("pg_up", "Whether the last observation of the local PostgreSQL succeeded (1) or not (0).", b2f(up))
	if up {
		m.gauge("pg_replication_is_replica", "Indicates if the server is a replica.", b2f(v.Role == RoleStandby))
		m.gauge("pg_replication_lag_seconds", "Replication lag behind the primary in seconds (0 once all that was received is replayed).", v.LagSeconds)
	}
	if len(in.Details.Replication) > 0 {
		m.family("pg_stat_replication_pg_wal_lsn_diff", "gauge", "Lag in bytes between this primary and a standby's replay position.")
		for _, r := range in.Details.Replication {
			m.sample("pg_stat_replication_pg_wal_lsn_diff", float64(r.LagBytes), "application_name", r.Name, "client_addr", r.ClientAddr, "state", r.State)
		}
	}
	if len(in.Details.Slots) > 0 {
		m.family("pg_replication_slot_slot_is_active", "gauge", "Whether the replication slot is active or not.")
		for _, s := range in.Details.Slots {
			m.sample("pg_replication_slot_slot_is_active", b2f(s.Active), "slot_name", s.Name, "slot_type", "physical")
		}
		m.family("pg_replication_slot_safe_wal_size_bytes", "gauge", "Number of bytes that can be written to WAL such that this slot is not in danger of getting in state lost.")
		for _, s := range in.Details.Slots {
			if s.SafeWALBytes != nil {
				m.sample("pg_replication_slot_safe_wal_size_bytes", float64(*s.SafeWALBytes), "slot_name", s.Name, "slot_type", "physical")
			}
		}
		m.family("pg_replication_slot_wal_status", "gauge", "Availability of WAL files claimed by this slot.")
		for _, s := range in.Details.Slots {
			m.sample("pg_replication_slot_wal_status", 1, "slot_name", s.Name, "slot_type", "physical", "wal_status", s.WALStatus)
		}
		m.family("understudy_replication_slot_retained_bytes", "gauge", "WAL kept for the slot, in bytes.")
		for _, s := range in.Details.Slots {
			m.sample("understudy_replication_slot_retained_bytes", float64(s.RetainedBytes), "slot_name", s.Name)
		}
	}

	m.family("understudy_role", "gauge", "The node's role as the agent last saw it: 1 for the current one.")
	for _, r := range []Role{RolePrimary, RoleStandby, RoleDown} {
		m.sample("understudy_role", b2f(ans.Role == r), append(node, "role", string(r))...)
	}
	m.family("understudy_check_ok", "gauge", "What the agent answers its checks: 1 for 200, 0 for 503 (/replica without a lag limit).")
	m.sample("understudy_check_ok", b2f(ans.Primary.OK), append(node, "check", "primary")...)
	m.sample("understudy_check_ok", b2f(ans.Replica.OK), append(node, "check", "replica")...)
	m.sample("understudy_check_ok", b2f(ans.Health.OK), append(node, "check", "health")...)
	if up {
		m.gauge("understudy_timeline", "The timeline the server writes (primary) or replays (standby).", float64(v.Timeline), node...)
		m.gauge("understudy_wal_position_bytes", "The newest WAL position the server knows: written (primary) or received/replayed (standby).", float64(v.Position()), node...)
		if ans.LagBytes != nil {
			m.gauge("understudy_replica_lag_bytes", "A standby's replay position behind the primary's (from its agent), or behind what it received.", float64(*ans.LagBytes), node...)
		}
	}
	m.gauge("understudy_fenced", "1 when the node is fenced (replaced as the primary; it may only run as a standby).", b2f(v.Fenced), node...)
	m.gauge("understudy_draining", "1 while a switchover drains this primary.", b2f(v.Draining), node...)
	if !in.Details.TimelineStarted.IsZero() {
		m.gauge("understudy_last_switchover_timestamp_seconds", "When the current timeline began (the last switchover or promote), from its history file in pg_wal.", unix(in.Details.TimelineStarted), node...)
	}
	m.gauge("understudy_observation_age_seconds", "Age of the agent's last observation of PostgreSQL.", max(0, in.Now.Sub(v.At).Seconds()), node...)
	m.gauge("understudy_observation_duration_seconds", "How long the last observation took.", v.Took.Seconds(), node...)
	m.family("understudy_observations_total", "counter", "Observations of the local PostgreSQL made.")
	m.sample("understudy_observations_total", float64(in.Counts.Observations), node...)
	m.family("understudy_observation_failures_total", "counter", "Observations in which PostgreSQL did not answer.")
	m.sample("understudy_observation_failures_total", float64(in.Counts.Failures), node...)
	m.family("understudy_checks_total", "counter", "Checks (/primary, /replica, /health) answered.")
	m.sample("understudy_checks_total", float64(in.Counts.Checks), node...)
	if len(in.Peers) > 0 {
		m.family("understudy_peer_up", "gauge", "Whether a peer's agent answered its last /status read.")
		peers := append([]PeerView(nil), in.Peers...)
		sort.Slice(peers, func(i, j int) bool { return peers[i].Node < peers[j].Node })
		for _, p := range peers {
			m.sample("understudy_peer_up", b2f(p.View != nil), "node", v.Node, "peer", p.Node)
		}
	}

	if in.Backup != nil || in.BackupErr != "" {
		m.gauge("understudy_backup_report_up", "Whether the backup agent's report on this server could be read.", b2f(in.Backup != nil), node...)
	}
	if b := in.Backup; b != nil {
		m.gauge("understudy_backup_report_age_seconds", "Age of the backup agent's report.", max(0, in.Now.Sub(b.Updated).Seconds()), node...)
		m.gauge("understudy_backup_receiving", "1 while the backup agent streams WAL.", b2f(b.Receiving), node...)
		if !b.LastArchivedAt.IsZero() {
			m.gauge("understudy_wal_archive_last_archived_timestamp_seconds", "When the backup agent last stored a complete WAL segment.", unix(b.LastArchivedAt), node...)
			m.gauge("understudy_wal_archive_age_seconds", "Seconds since the backup agent last stored a complete WAL segment.", max(0, in.Now.Sub(b.LastArchivedAt).Seconds()), node...)
		}
		if b.LastArchived != "" {
			m.gauge("understudy_wal_archive_last_segment_info", "The last complete WAL segment stored, as a label.", 1, append(node, "segment", b.LastArchived)...)
		}
		if !b.CaughtUpAt.IsZero() {
			m.gauge("understudy_recovery_window_end_timestamp_seconds", "The latest time a restore can reach: when the archive last held everything the source had.", unix(b.CaughtUpAt), node...)
		}
		if t, err := time.Parse("20060102T150405.000Z", b.LastBase); err == nil {
			m.gauge("understudy_backup_last_base_timestamp_seconds", "When the backup agent's last base backup began.", unix(t), node...)
		}
		m.gauge("understudy_backup_spool_bytes", "WAL in the backup agent's spool, not yet stored.", float64(b.SpoolBytes), node...)
		m.gauge("understudy_backup_gap", "1 while the archive has a hole no base backup has closed yet.", b2f(b.Gap != ""), node...)
		m.gauge("understudy_backup_error", "1 when the backup agent's last stream, upload or base backup failed.", b2f(b.LastError != "" || b.UploadError != "" || b.LastBaseError != ""), node...)
	}
	m.b.WriteString(in.Failover)
	return m.b.String()
}
