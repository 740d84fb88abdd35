package backup

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
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
