package live

import (
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/pgops"
)

func backupHealthy(now time.Time) *Status {
	safe := int64(900 << 20)
	return &Status{Taken: now, Primary: "db", Nodes: []NodeStatus{
		{Name: "db", Role: RolePrimary, Reachable: true, Facts: &pgops.Facts{Timeline: 1, CurrentLSN: 0x5000000}},
		{Name: "db-replica", Role: RoleStandby, Reachable: true, Slots: []pgops.Slot{{Name: backup.DefaultSlot, Active: true, WALStatus: "reserved", SafeWALBytes: &safe}}},
	}, Backup: &BackupStatus{Where: "s3://b/p",
		Agent: &backup.AgentStatus{Updated: now.Add(-2 * time.Second), ArchivedLSN: 0x5000000, ArchivedTLI: 1, LastPartialAt: now.Add(-time.Second), Recipient: "age1x"},
		Bases: []backup.BaseInfo{{ID: "b", Finished: now.Add(-time.Hour)}},
		Drill: &backup.DrillRecord{Started: now.Add(-24 * time.Hour), OK: true}}}
}

func codes(fs []Finding) string {
	var c []string
	for _, f := range fs {
		c = append(c, f.Severity.String()+":"+string(f.Code))
	}
	return strings.Join(c, ",")
}

func TestCheckBackupDecides(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		edit func(*Status)
		want string
	}{
		{"healthy", func(*Status) {}, ""},
		{"storage unreachable", func(s *Status) { s.Backup.Error = "dial tcp: refused" }, "critical:backup-storage"},
		{"agent silent", func(s *Status) { s.Backup.Agent.Updated = now.Add(-5 * time.Minute) }, "critical:backup-agent"},
		{"agent never reported", func(s *Status) { s.Backup.Agent, s.Backup.AgentError = nil, "not yet" }, "critical:backup-agent"},
		{"paused", func(s *Status) { s.Backup.Agent.Paused = "spool full"; s.Backup.Agent.UploadError = "503" }, "critical:backup-paused"},
		{"gap", func(s *Status) { s.Backup.Agent.Gap = "WAL after X was removed" }, "critical:backup-gap"},
		{"lag in bytes", func(s *Status) { s.Nodes[0].Facts.CurrentLSN = 0xA000000 }, "warning:backup-archive-lag"},
		{"lag in time", func(s *Status) {
			s.Nodes[0].Facts.CurrentLSN = 0x5000100
			s.Backup.Agent.LastPartialAt = now.Add(-3 * time.Minute)
		}, "warning:backup-archive-lag"},
		{"a new timeline is not lag", func(s *Status) { s.Nodes[0].Facts.Timeline, s.Nodes[0].Facts.CurrentLSN = 2, 0xA000000 }, ""},
		{"slot near cap", func(s *Status) { small := int64(10 << 20); s.Nodes[1].Slots[0].SafeWALBytes = &small }, "warning:backup-slot-near-cap"},
		{"slot lost", func(s *Status) { s.Nodes[1].Slots[0].WALStatus = "lost" }, "critical:backup-slot-lost"},
		{"no base", func(s *Status) { s.Backup.Bases = nil }, "critical:backup-no-base"},
		{"old base", func(s *Status) { s.Backup.Bases[0].Finished = now.Add(-48 * time.Hour) }, "warning:backup-base-old"},
		{"no drill", func(s *Status) { s.Backup.Drill = nil }, "warning:backup-drill"},
		{"failed drill", func(s *Status) { s.Backup.Drill.OK, s.Backup.Drill.Error = false, "boom" }, "critical:backup-drill"},
		{"old drill", func(s *Status) { s.Backup.Drill.Started = now.Add(-9 * 24 * time.Hour) }, "warning:backup-drill"},
		{"key missing here", func(s *Status) { s.Backup.KeyError = "no key" }, "warning:backup-key"},
		{"another key", func(s *Status) { f := false; s.Backup.KeyMatches = &f }, "critical:backup-key"},
	}
	for _, c := range cases {
		st := backupHealthy(now)
		c.edit(st)
		if got := codes(CheckBackup(st, 1<<30, DefaultBackupThresholds, 0.25)); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}
