package live

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/understudy-dev/understudy/backup"
)

// The backup commands' output, shared by the operator's machine, the lab
// and the backup accessory (where `backup` and `restore drill` print for
// the operator over SSH).

// MB renders a size in MB.
func MB(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/(1<<20)) }

// ProgressText renders a transfer's progress: done, share, rate.
func ProgressText(p backup.Progress) string {
	rate := float64(p.Done) / max(p.Elapsed.Seconds(), 0.001) / (1 << 20)
	if p.Total > 0 {
		return fmt.Sprintf("%s of %s (%.0f%%), %.1f MB/s", MB(p.Done), MB(p.Total), 100*float64(p.Done)/float64(p.Total), rate)
	}
	return fmt.Sprintf("%s, %.1f MB/s", MB(p.Done), rate)
}

// RestoreProgress writes a restore's progress to out, once a second at
// most.
func RestoreProgress(out io.Writer) func(string, backup.Progress) {
	last := time.Time{}
	return func(stage string, p backup.Progress) {
		if time.Since(last) < time.Second && p.Done != p.Total {
			return
		}
		last = time.Now()
		switch stage {
		case "base":
			fmt.Fprintf(out, "  base backup: %s\n", ProgressText(p))
		case "WAL":
			fmt.Fprintf(out, "  WAL: %d of %d files\n", p.Done, p.Total)
		}
	}
}

// TimeText renders a time in UTC, "none" for the zero time.
func TimeText(t time.Time) string {
	if t.IsZero() {
		return "none"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000000 UTC")
}

// RestoredText says what a restore into a node's directory brought back.
func RestoredText(res backup.Restored) string {
	return fmt.Sprintf("✓ restored base backup %s and %d WAL files; recovery ended at %s (last transaction %s)\n", res.Base, res.Segments, res.Reached, TimeText(res.LastCommit))
}

// DrillText renders a drill's record.
func DrillText(r backup.DrillRecord) string {
	var b strings.Builder
	if r.OK {
		fmt.Fprintf(&b, "✓ drill %s passed: base %s + %d WAL files restored in %.1f s (fetch %.1f s, recovery %.1f s)\n", r.ID, r.Base, r.Segments, r.Total.Seconds(), r.Fetch.Seconds(), r.Replay.Seconds())
	} else {
		fmt.Fprintf(&b, "✗ drill %s FAILED: %s\n", r.ID, r.Error)
	}
	fmt.Fprintf(&b, "  reached %s (expected at least %s); last transaction %s\n", r.Reached, r.Expected, TimeText(r.LastCommit))
	if r.Check != "" {
		fmt.Fprintf(&b, "  check %q → %s\n", r.Check, r.CheckResult)
	}
	b.WriteString("  record stored in the bucket under drills/" + r.ID + ".json\n")
	return b.String()
}

// TakeBaseHere takes a base backup from this process (the lab's machine,
// or inside the backup accessory) and applies retention, saying what it
// did on out.
func TakeBaseHere(ctx context.Context, cfg *backup.AgentConfig, store backup.Store, where string, key *backup.Key, policy backup.Policy, out io.Writer) error {
	fmt.Fprintf(out, "base backup into %s\n", where)
	bi, err := backup.TakeBase(ctx, cfg, store, key, func(p backup.Progress) {
		fmt.Fprintf(out, "  %s\n", ProgressText(p))
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "✓ base backup %s: %s from %s in %.1f s (%s stored), WAL %s to %s on timeline %d\n", bi.ID, MB(bi.Bytes), bi.Source, bi.Duration().Seconds(), MB(bi.Stored), bi.StartLSN, bi.EndLSN, bi.Timeline)
	n, err := backup.ApplyRetention(ctx, store, policy, time.Now())
	if err != nil {
		return fmt.Errorf("the backup is stored, but retention failed: %w", err)
	}
	if n > 0 {
		fmt.Fprintf(out, "retention removed %d objects (policy: keep %d base backups)\n", n, policy.KeepBases)
	}
	return nil
}
