package live

import (
	"context"
	"io"
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
		{"storage slow", func(s *Status) { s.Backup.Took = 4 * time.Second }, "warning:backup-storage-slow"},
		{"storage hung", func(s *Status) {
			s.Backup.Error, s.Backup.NoAnswerIn, s.Backup.Agent = "storage: no answer in 10 s", 10*time.Second, nil
		}, "critical:backup-storage"},
		{"spool disk full", func(s *Status) {
			s.Backup.Agent.Paused, s.Backup.Agent.PausedFor = "the spool's disk is full", backup.PausedSpoolDisk
		}, "critical:backup-spool-disk"},
		{"streaming from the primary", func(s *Status) {
			a := s.Backup.Agent
			a.Source, a.Receiving, a.SourceStandby = "db", true, false
			s.Nodes[0].Slots = append(s.Nodes[0].Slots, s.Nodes[1].Slots[0])
			s.Nodes[1].Slots = nil
		}, "warning:backup-from-primary"},
		{"not receiving", func(s *Status) {
			a := s.Backup.Agent
			a.LastError, a.LastErrorAt = "pg_receivewal from db-replica stopped", now.Add(-5*time.Second)
		}, "warning:backup-not-receiving"},
	}
	for _, c := range cases {
		st := backupHealthy(now)
		c.edit(st)
		if got := codes(CheckBackup(st, 1<<30, DefaultBackupThresholds, 0.25)); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

// hungStore answers nothing until the caller gives up.
type hungStore struct{}

func (hungStore) Put(ctx context.Context, _ string, _ io.Reader, _ int64) error {
	<-ctx.Done()
	return ctx.Err()
}
func (hungStore) Get(ctx context.Context, _ string) (io.ReadCloser, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
func (hungStore) List(ctx context.Context, _ string) ([]backup.Object, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
func (hungStore) Delete(ctx context.Context, _ string) error { <-ctx.Done(); return ctx.Err() }

// With the storage hung, the backup section of status and check comes back
// within its own deadline and says so; check names it.
func TestGatherBackupReturnsWithinItsDeadline(t *testing.T) {
	start := time.Now()
	bs := gatherBackupWithin(context.Background(), &BackupAccess{Store: hungStore{}, Where: "http://s3/b/p/"}, 300*time.Millisecond)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %s with a 300 ms deadline", took)
	}
	if bs.Error != "storage: no answer in 0 s" || bs.NoAnswerIn != 300*time.Millisecond {
		t.Errorf("error %q, no answer in %s", bs.Error, bs.NoAnswerIn)
	}
	bs = gatherBackupWithin(context.Background(), &BackupAccess{Store: hungStore{}, Where: "http://s3/b/p/"}, 1500*time.Millisecond)
	if !strings.Contains(BackupText(bs, time.Now()), "storage: no answer in 2 s") {
		t.Errorf("status says:\n%s", BackupText(bs, time.Now()))
	}
	st := &Status{Taken: time.Now(), Backup: bs}
	if got := codes(CheckBackup(st, 1<<30, DefaultBackupThresholds, 0.25)); got != "critical:backup-storage" {
		t.Errorf("check: %s", got)
	}
	// A store that answers: the section is read, and the time it took kept.
	m := backup.NewMemStore()
	bs = gatherBackupWithin(context.Background(), &BackupAccess{Store: m, Where: "mem"}, time.Second)
	if bs.Error != "" || bs.NoAnswerIn != 0 || bs.Took <= 0 || bs.AgentError == "" {
		t.Errorf("an empty store: %+v", bs)
	}
}
