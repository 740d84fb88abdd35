package backup

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/understudy-dev/understudy/pgops"
)

// DrillRecord is the evidence a restore drill leaves, in the bucket
// (drills/<id>.json) and printed. It holds no secret and no data beyond
// the check query's first value.
type DrillRecord struct {
	ID          string         `json:"id"`
	Started     time.Time      `json:"started"`
	OK          bool           `json:"ok"`
	Error       string         `json:"error,omitempty"`
	Base        string         `json:"base,omitempty"`
	Expected    pgops.LSN      `json:"expected_lsn,omitempty"` // the primary's position when the drill began
	ExpectedTLI pgops.Timeline `json:"expected_timeline,omitempty"`
	Reached     pgops.LSN      `json:"reached_lsn,omitempty"`
	LastCommit  time.Time      `json:"last_commit,omitzero"`
	Fetch       time.Duration  `json:"fetch_ns"`
	Replay      time.Duration  `json:"replay_ns"`
	Total       time.Duration  `json:"total_ns"`
	Bytes       int64          `json:"base_bytes,omitempty"`
	Segments    int            `json:"wal_files,omitempty"`
	Check       string         `json:"check_query,omitempty"`
	CheckResult string         `json:"check_result,omitempty"`
}

// DrillRequest is a drill: a restore of the latest point into a scratch
// directory, a proof that it reached Expected, and the user's check query.
type DrillRequest struct {
	RestoreRequest
	Expected    pgops.LSN
	ExpectedTLI pgops.Timeline
	Check       string
}

// Drill runs a drill, stops the scratch server, removes the scratch
// directory (the drill made it, and it holds only the drill's copy) and
// stores the record. The record says whether it passed; the error is only
// for a record that could not be stored.
func Drill(ctx context.Context, req DrillRequest) (DrillRecord, error) {
	start := time.Now().UTC()
	rec := DrillRecord{ID: start.Format("20060102T150405Z"), Started: start, Expected: req.Expected, ExpectedTLI: req.ExpectedTLI, Check: req.Check}
	req.Target = Target{Latest: true}
	res, srv, err := Restore(ctx, req.RestoreRequest)
	rec.Base, rec.Fetch, rec.Replay, rec.Bytes, rec.Segments = res.Base, res.Fetch, res.Replay, res.Bytes, res.Segments
	rec.Reached, rec.LastCommit = res.Reached, res.LastCommit
	switch {
	case err != nil:
		rec.Error = err.Error()
	case req.Expected != 0 && res.Reached < req.Expected:
		rec.Error = fmt.Sprintf("the restore ended at %s, before %s, where the primary was when the drill began: the archive is missing WAL", res.Reached, req.Expected)
	case req.Check != "":
		c, cerr := srv.Conn(ctx)
		if cerr != nil {
			rec.Error = "connecting to the restored server: " + cerr.Error()
			break
		}
		var v any
		qerr := c.QueryRow(ctx, req.Check).Scan(&v)
		c.Close(context.WithoutCancel(ctx))
		if qerr != nil {
			rec.Error = "the check query failed on the restored copy: " + qerr.Error()
		} else {
			rec.CheckResult = fmt.Sprint(v)
			if len(rec.CheckResult) > 200 {
				rec.CheckResult = rec.CheckResult[:200]
			}
		}
	}
	if srv != nil {
		srv.Stop(context.WithoutCancel(ctx))
	}
	// The scratch copy goes: the drill made these directories itself.
	os.RemoveAll(req.WALDir())
	if req.Dir != "" && strings.Contains(filepath.Base(req.Dir), "drill") {
		os.RemoveAll(req.Dir)
		os.Remove(req.Dir + ".restore.log")
	}
	rec.OK = rec.Error == ""
	rec.Total = time.Since(start)
	if err := putJSON(context.WithoutCancel(ctx), req.Store, drillKey(rec.ID), rec); err != nil {
		return rec, fmt.Errorf("storing the drill's record: %w", err)
	}
	return rec, nil
}

// LastDrill reads the newest drill record (nil when none).
func LastDrill(ctx context.Context, s Store) (*DrillRecord, error) {
	objs, err := s.List(ctx, drillDir)
	if err != nil {
		return nil, err
	}
	if len(objs) == 0 {
		return nil, nil
	}
	sort.Slice(objs, func(i, j int) bool { return objs[i].Key < objs[j].Key })
	var d DrillRecord
	if err := getJSON(ctx, s, objs[len(objs)-1].Key, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// DrillSchedule makes the agent run restore drills itself (in the backup
// accessory, where PostgreSQL's programs are those of the nodes' image).
type DrillSchedule struct {
	Every  time.Duration
	Check  string              // the user's check query, or ""
	BinDir string              // postgres, pg_ctl, pg_verifybackup
	Dir    string              // scratch space: a drill restores a whole copy here, then removes it
	Cred   *syscall.Credential // postgres refuses root
	User   string              // a role of the cluster (the image's POSTGRES_USER)
}

// DrillDue is whether a scheduled drill should run now: a base backup
// exists and the last drill is older than every (or there is none). Pure.
func DrillDue(last *DrillRecord, bases int, every time.Duration, now time.Time) bool {
	if every <= 0 || bases == 0 {
		return false
	}
	return last == nil || now.Sub(last.Started) >= every
}

// DrillRoom is whether a drill fits in the scratch space: the base
// backup's size and its WAL, with a quarter to spare. Pure.
func DrillRoom(free, baseBytes int64, walFiles int, segSize uint64) bool {
	need := baseBytes + int64(walFiles)*int64(segSize)
	return free >= need+need/4
}

// runDrill runs a scheduled drill. Where the primary is comes from a
// replication login to it (IDENTIFY_SYSTEM), so the drill proves the
// archive reached a point the agent did not choose.
func (a *Agent) runDrill(ctx context.Context) {
	archived := func(context.Context) (pgops.LSN, pgops.Timeline, error) {
		st := a.Status()
		return st.ArchivedLSN, st.ArchivedTLI, nil
	}
	cctx, cancel := context.WithTimeout(ctx, catalogTimeout)
	cat, err := ReadCatalog(cctx, a.store)
	cancel()
	if err != nil {
		a.logf("restore drill: %v", waited(err, cctx, "reading the catalogue", catalogTimeout))
		return
	}
	a.logf("restore drill: restoring the latest backup into %s", a.cfg.Drill.Dir)
	rec, err := DrillNow(ctx, &a.cfg, a.store, a.key, *a.cfg.Drill, cat, archived)
	switch {
	case err != nil:
		a.logf("restore drill: %v", err)
	case rec.OK:
		a.logf("restore drill %s passed: base %s + %d WAL files in %.1f s, reached %s%s", rec.ID, rec.Base, rec.Segments, rec.Total.Seconds(), rec.Reached, checkText(rec))
	default:
		a.logf("restore drill %s FAILED: %s", rec.ID, rec.Error)
	}
	if err == nil {
		a.mu.Lock()
		a.drill.Last, a.drill.ReadAt = &rec, time.Now()
		a.mu.Unlock()
	}
}

// DrillNow runs one drill with a schedule's settings: it checks the
// scratch space has room, reads where the primary is (a replication login
// to it: IDENTIFY_SYSTEM), waits until archived says the archive holds
// that point, then restores (Drill). A drill that cannot start is recorded
// as failed too, so check sees it.
func DrillNow(ctx context.Context, cfg *AgentConfig, store Store, key *Key, d DrillSchedule, cat Catalog,
	archived func(context.Context) (pgops.LSN, pgops.Timeline, error)) (DrillRecord, error) {
	fail := func(msg string) (DrillRecord, error) {
		start := time.Now().UTC()
		rec := DrillRecord{ID: start.Format("20060102T150405Z"), Started: start, Error: msg, Check: d.Check}
		if err := putJSON(context.WithoutCancel(ctx), store, drillKey(rec.ID), rec); err != nil {
			return rec, fmt.Errorf("storing the drill's record: %w", err)
		}
		return rec, nil
	}
	if len(cat.Bases) == 0 {
		return fail("there is no base backup to restore yet")
	}
	if err := os.MkdirAll(d.Dir, 0o755); err != nil {
		return fail("making the drill's scratch directory: " + err.Error())
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(d.Dir, &fs); err == nil {
		b := cat.Bases[len(cat.Bases)-1]
		wal := 0
		for _, w := range cat.WAL {
			if !w.History && w.Seg.StartLSN(b.SegSize) >= b.StartLSN-pgops.LSN(b.SegSize) {
				wal++
			}
		}
		free := int64(fs.Bavail) * int64(fs.Bsize)
		if !DrillRoom(free, b.Bytes, wal, b.SegSize) {
			return fail(fmt.Sprintf("not enough disk for a drill in %s: %d MB free, a copy of the newest base backup and its WAL needs about %d MB with room to spare; free space there, or turn scheduled drills off (drill_every in backup.json, `init --backup-drill-every 0`) and run drills where there is room", d.Dir, free>>20, (b.Bytes+int64(wal)*int64(b.SegSize))>>20))
		}
	}
	expected, tli, err := cfg.PrimaryPosition(ctx)
	if err != nil {
		return fail("reading where the primary is: " + err.Error())
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		lsn, atli, err := archived(ctx)
		if err == nil && lsn >= expected && atli >= tli {
			break
		}
		if time.Now().After(deadline) {
			return fail(fmt.Sprintf("the archive did not reach %s (where the primary was) within 2 minutes", expected))
		}
		if sleep(ctx, time.Second); ctx.Err() != nil {
			return DrillRecord{}, ctx.Err()
		}
	}
	scratch, err := os.MkdirTemp(d.Dir, "understudy-drill-")
	if err != nil {
		return fail(err.Error())
	}
	defer os.RemoveAll(scratch)
	os.Chmod(scratch, 0o755)
	return Drill(ctx, DrillRequest{RestoreRequest: RestoreRequest{Store: store, Key: key, BinDir: d.BinDir,
		Dir: filepath.Join(scratch, "drill"), Port: 5432, User: d.User, Cred: d.Cred}, Expected: expected, ExpectedTLI: tli, Check: d.Check})
}

func checkText(r DrillRecord) string {
	if r.Check == "" {
		return ""
	}
	return fmt.Sprintf("; check %q → %s", r.Check, r.CheckResult)
}

// PrimaryPosition asks the sources which is the primary and where its WAL is.
func (c *AgentConfig) PrimaryPosition(ctx context.Context) (pgops.LSN, pgops.Timeline, error) {
	var errs []string
	for _, s := range c.Sources {
		ri, err := c.identify(ctx, s)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if !ri.Standby {
			return ri.XLogPos, ri.Timeline, nil
		}
	}
	return 0, 0, fmt.Errorf("no primary answered (%s)", strings.Join(errs, "; "))
}
