package live

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/pgops"
)

// BackupStatus is the backup section of a Status: what the bucket and the
// agent's last report say. It holds no secret.
type BackupStatus struct {
	Where      string              `json:"where"`
	Error      string              `json:"error,omitempty"`           // the bucket could not be read
	NoAnswerIn time.Duration       `json:"no_answer_in_ns,omitempty"` // the storage did not answer within the read's deadline
	Took       time.Duration       `json:"read_took_ns"`              // how long the reads of the bucket took
	Agent      *backup.AgentStatus `json:"agent,omitempty"`
	AgentError string              `json:"agent_error,omitempty"`
	Bases      []backup.BaseInfo   `json:"base_backups"`
	Window     backup.Window       `json:"recovery_window"`
	Drill      *backup.DrillRecord `json:"last_drill,omitempty"`
	KeyError   string              `json:"key_error,omitempty"`
	KeyMatches *bool               `json:"key_matches,omitempty"` // this machine's key is the one the agent encrypts to
}

// BackupReadTimeout is how long status and check give the storage: past
// it they report "storage: no answer in N s" and go on without it.
const BackupReadTimeout = 10 * time.Second

// GatherBackup reads the bucket: the agent's report, the catalogue and
// the window, the last drill. It returns within BackupReadTimeout (or
// ctx's deadline, when sooner), whatever the storage does.
func GatherBackup(ctx context.Context, a *BackupAccess) *BackupStatus {
	return gatherBackupWithin(ctx, a, BackupReadTimeout)
}

func gatherBackupWithin(ctx context.Context, a *BackupAccess, d time.Duration) *BackupStatus {
	bs := &BackupStatus{Where: a.Where, Bases: []backup.BaseInfo{}}
	if a.KeyErr != nil {
		bs.KeyError = a.KeyErr.Error()
	}
	if a.Err != nil {
		bs.Error = a.Err.Error()
		return bs
	}
	gctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	done := make(chan *BackupStatus, 1)
	go func() {
		r := *bs
		readBackup(gctx, a, &r)
		done <- &r
	}()
	select {
	case r := <-done:
		r.Took = time.Since(start)
		if r.Error != "" && errors.Is(gctx.Err(), context.DeadlineExceeded) {
			r.Error, r.NoAnswerIn = noAnswer(d), d
		}
		return r
	case <-gctx.Done():
		// The reads were given gctx and end with it; this does not wait.
		bs.Error, bs.NoAnswerIn, bs.Took = noAnswer(d), d, time.Since(start)
		return bs
	}
}

func noAnswer(d time.Duration) string {
	return fmt.Sprintf("storage: no answer in %d s", int(d.Round(time.Second).Seconds()))
}

func readBackup(ctx context.Context, a *BackupAccess, bs *BackupStatus) {
	var drill *backup.DrillRecord
	drillDone := make(chan struct{})
	go func() {
		defer close(drillDone)
		if d, err := backup.LastDrill(ctx, a.Store); err == nil {
			drill = d
		}
	}()
	cat, err := backup.ReadCatalog(ctx, a.Store)
	<-drillDone
	if err != nil {
		bs.Error = err.Error()
		return
	}
	bs.Bases = cat.Bases
	if cat.Agent == nil {
		bs.AgentError = cat.AgentErr.Error()
	} else {
		bs.Agent = cat.Agent
		if a.Key != nil {
			m := cat.Agent.Recipient == a.Key.Recipient()
			bs.KeyMatches = &m
		}
	}
	var steps []pgops.TimelineStep
	if a.Key != nil {
		steps, _ = backup.HistorySteps(ctx, a.Store, a.Key, backup.NewestTimeline(cat))
	}
	bs.Window = backup.RecoveryWindow(cat, steps)
	bs.Drill = drill
}

// BackupThresholds for the backup checks.
type BackupThresholds struct {
	ArchiveLagBytes int64         // warn when the archive is this far behind the primary
	ArchiveLagTime  time.Duration // warn when nothing was uploaded for this long while behind
	AgentSilent     time.Duration // the agent's report is this old: it is down or cannot write
	BaseMaxAge      time.Duration // the newest base backup is older
	DrillMaxAge     time.Duration // the last restore drill is older
	StorageSlow     time.Duration // status's reads of the bucket took longer
}

// DefaultBackupThresholds: a base backup a day (the agent's default) with
// slack, a drill a week.
var DefaultBackupThresholds = BackupThresholds{ArchiveLagBytes: 64 << 20, ArchiveLagTime: time.Minute, AgentSilent: time.Minute,
	BaseMaxAge: 36 * time.Hour, DrillMaxAge: 8 * 24 * time.Hour, StorageSlow: 3 * time.Second}

// The backup finding codes.
const (
	CodeBackupStorage     FindingCode = "backup-storage"
	CodeBackupAgent       FindingCode = "backup-agent"
	CodeBackupArchiveLag  FindingCode = "backup-archive-lag"
	CodeBackupPaused      FindingCode = "backup-paused"
	CodeBackupGap         FindingCode = "backup-gap"
	CodeBackupNoBase      FindingCode = "backup-no-base"
	CodeBackupBaseOld     FindingCode = "backup-base-old"
	CodeBackupSlotNearCap FindingCode = "backup-slot-near-cap"
	CodeBackupSlotLost    FindingCode = "backup-slot-lost"
	CodeBackupKey         FindingCode = "backup-key"
	CodeBackupDrill       FindingCode = "backup-drill"
	CodeBackupStorageSlow FindingCode = "backup-storage-slow"
	CodeBackupSpoolDisk   FindingCode = "backup-spool-disk"
	CodeBackupFromPrimary FindingCode = "backup-from-primary"
	CodeBackupReceiving   FindingCode = "backup-not-receiving"
)

// CheckBackup is the backup part of check: pure, over a Status.
func CheckBackup(st *Status, capBytes int64, th BackupThresholds, slotHeadroom float64) []Finding {
	bs := st.Backup
	if bs == nil {
		return nil
	}
	var out []Finding
	add := func(sev Severity, code FindingCode, node, problem, fix string) {
		out = append(out, Finding{sev, code, node, problem, fix})
	}
	now := st.Taken
	if bs.KeyError != "" {
		add(Warning, CodeBackupKey, "", "this machine has no usable backup key: "+bs.KeyError,
			"restores and drills need BACKUP_ENCRYPTION_KEY; keep it in your password manager and reference it from .kamal/secrets")
	}
	// The backup slot, wherever the agent made it.
	for _, n := range st.Nodes {
		for _, s := range n.Slots {
			if s.Name != backup.DefaultSlot {
				continue
			}
			switch {
			case s.WALStatus == "lost" || s.WALStatus == "unreserved":
				add(Critical, CodeBackupSlotLost, n.Name, fmt.Sprintf("the backup slot on %s has passed its cap (%s): WAL the archive did not get is being removed, so the recovery window will have a gap", n.Name, s.WALStatus),
					"bring the backup storage back; the agent then takes a new base backup and says so (`understudy status`)")
			case s.SafeWALBytes != nil && capBytes > 0 && float64(*s.SafeWALBytes) < slotHeadroom*float64(capBytes):
				add(Warning, CodeBackupSlotNearCap, n.Name, fmt.Sprintf("the backup slot on %s retains %s; only %s is left before its cap", n.Name, bytesText(s.RetainedBytes), bytesText(*s.SafeWALBytes)),
					"the archive is not keeping up: see the agent's last error in `understudy status`")
			}
		}
	}
	if bs.Error != "" {
		add(Critical, CodeBackupStorage, "", "cannot read the backup storage "+bs.Where+": "+bs.Error,
			"check the endpoint, the bucket and the credentials (BACKUP_S3_ACCESS_KEY_ID, BACKUP_S3_SECRET_ACCESS_KEY); while it is down, WAL waits in the agent's spool and then in its slot on the standby, never on the primary")
		return out
	}
	if th.StorageSlow > 0 && bs.Took > th.StorageSlow {
		add(Warning, CodeBackupStorageSlow, "", fmt.Sprintf("the backup storage %s took %.1f s to answer status's reads (a few small requests)", bs.Where, bs.Took.Seconds()),
			"see your storage provider's status; the archive lags while uploads are this slow (backup-archive-lag says by how much)")
	}
	ag := bs.Agent
	if ag == nil {
		add(Critical, CodeBackupAgent, "", bs.AgentError, "start the backup agent (`understudy apply` boots its accessory; lab: `understudy lab up --backup`)")
	} else {
		if age := now.Sub(ag.Updated); age > th.AgentSilent {
			add(Critical, CodeBackupAgent, "", fmt.Sprintf("the backup agent's last report is %s old: it is down, or cannot write to the storage", age.Round(time.Second)),
				"look at the agent's log (Kamal: kamal accessory logs backup; lab: <lab>/agent.log)")
		}
		if ag.Gap != "" {
			add(Critical, CodeBackupGap, "", ag.Gap, "nothing to do if a new base backup follows (the agent takes one); `understudy backups` shows the recovery window")
		}
		switch {
		case ag.Paused != "" && ag.PausedFor == backup.PausedSpoolDisk:
			add(Critical, CodeBackupSpoolDisk, "", ag.Paused, "free space on the disk that holds the agent's spool (Kamal: the backup accessory's state directory; lab: <lab>/backup/spool); the agent resumes by itself")
		case ag.Paused != "":
			add(Critical, CodeBackupPaused, "", ag.Paused, "bring the storage back or fix its credentials: "+orText(ag.UploadError, ag.LastError))
		case ag.UploadError != "":
			add(Warning, CodeBackupStorage, "", "the agent cannot upload: "+ag.UploadError, "check the storage and its credentials; WAL waits in the agent's spool meanwhile")
		}
		switch {
		case ag.Receiving && !ag.SourceStandby && ag.Source != "":
			add(Warning, CodeBackupFromPrimary, ag.Source, fmt.Sprintf("the backup agent streams WAL from the primary %s: no standby answered it, so the primary keeps WAL for the backups (up to its max_slot_wal_keep_size)", ag.Source),
				"bring the standby back (`understudy status` shows why it is down); the agent moves to it by itself")
		case !ag.Receiving && ag.Paused == "" && ag.Gap == "" && ag.LastError != "" && now.Sub(ag.LastErrorAt) < th.AgentSilent:
			add(Warning, CodeBackupReceiving, "", "the backup agent is not receiving WAL: "+ag.LastError, "see the agent's log; it retries by itself")
		}
		if p := st.Node(st.Primary); p != nil && p.Facts != nil && p.Facts.CurrentLSN != 0 && ag.ArchivedTLI == p.Facts.Timeline {
			if cur := p.Facts.CurrentLSN; cur > ag.ArchivedLSN {
				behind := int64(cur - ag.ArchivedLSN)
				last := later(ag.LastPartialAt, ag.LastArchivedAt)
				stale := now.Sub(last)
				if behind > th.ArchiveLagBytes || (behind > 0 && stale > th.ArchiveLagTime) {
					add(Warning, CodeBackupArchiveLag, "", fmt.Sprintf("the archive is %s behind the primary; the last upload was %s ago", bytesText(behind), stale.Round(time.Second)),
						"a restore now would miss that much: see the agent's last error in `understudy status`")
				}
			}
		}
		if bs.KeyMatches != nil && !*bs.KeyMatches {
			add(Critical, CodeBackupKey, "", "the agent encrypts to "+ag.Recipient+", which is not this machine's BACKUP_ENCRYPTION_KEY: restores with this key would fail",
				"use the same key everywhere (.kamal/secrets), then `understudy apply`")
		}
	}
	if len(bs.Bases) == 0 {
		add(Critical, CodeBackupNoBase, "", "the archive has no base backup: nothing can be restored yet", "take one: `understudy backup`")
	} else if age := now.Sub(bs.Bases[len(bs.Bases)-1].Finished); age > th.BaseMaxAge {
		add(Warning, CodeBackupBaseOld, "", fmt.Sprintf("the newest base backup is %s old", age.Round(time.Minute)), "take one (`understudy backup`), and see why the agent's schedule did not (its last_base_error)")
	}
	switch d := bs.Drill; {
	case d == nil:
		add(Warning, CodeBackupDrill, "", "no restore drill has run: nothing proves the backups restore", "run `understudy restore drill`; on Kamal the backup accessory runs one every drill_every (backup.json; init's --backup-drill-every), on a lab schedule it from cron")
	case !d.OK:
		add(Critical, CodeBackupDrill, "", fmt.Sprintf("the last restore drill (%s) failed: %s", d.Started.Format(time.RFC3339), d.Error), "run `understudy restore drill` again and read its report")
	case now.Sub(d.Started) > th.DrillMaxAge:
		add(Warning, CodeBackupDrill, "", fmt.Sprintf("the last restore drill is %s old", now.Sub(d.Started).Round(time.Hour)), "run `understudy restore drill`, and see why the schedule did not (the backup accessory's log: kamal accessory logs; or your cron)")
	}
	return out
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func orText(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
