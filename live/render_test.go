package live

import (
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/backup"
)

// Issue 18: status's archiving line. The last complete segment is named
// with its own upload time (not a later partial upload's), and a report
// older than check's limit is marked stale instead of saying "archiving".
func TestBackupTextArchivingLine(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	a := &backup.AgentStatus{Updated: now.Add(-5 * time.Second), Source: "db-replica", Receiving: true,
		LastArchived: "000000010000000000000005", LastArchivedAt: now.Add(-4 * time.Minute), LastPartialAt: now.Add(-10 * time.Second)}
	bs := &BackupStatus{Where: "s3://b", Agent: a}
	line := archivingLine(t, BackupText(bs, now))
	for _, want := range []string{"WAL archiving: archiving, from db-replica", "last complete segment 000000010000000000000005 at 2026-12-03 09:56:00 UTC (4m0s ago)", "newer WAL (the segment being filled) uploaded 2026-12-03 09:59:50 UTC (10s ago)"} {
		if !strings.Contains(line, want) {
			t.Errorf("lacks %q:\n%s", want, line)
		}
	}
	// The agent ended (demo --keep used to leave it so) five minutes ago.
	line = archivingLine(t, BackupText(bs, now.Add(5*time.Minute)))
	if !strings.Contains(line, "STALE REPORT (5m5s old") || strings.Contains(line, "WAL archiving: archiving") {
		t.Errorf("a 5-minute-old report:\n%s", line)
	}
	// No partial upload since the last segment: nothing about one.
	a.LastPartialAt = a.LastArchivedAt.Add(-time.Second)
	if line := archivingLine(t, BackupText(bs, now)); strings.Contains(line, "newer WAL") {
		t.Errorf("an older partial upload is mentioned:\n%s", line)
	}
}

func archivingLine(t *testing.T, text string) string {
	t.Helper()
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, "WAL archiving:") {
			return l
		}
	}
	t.Fatalf("no archiving line:\n%s", text)
	return ""
}
