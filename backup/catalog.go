package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/understudy-dev/understudy/pgops"
)

// BaseInfo describes one base backup; it is stored in plain JSON beside
// the sealed data, so a listing needs no key. It holds no secret.
type BaseInfo struct {
	ID          string         `json:"id"`
	SystemID    string         `json:"system_id"`
	Major       int            `json:"major,omitempty"`
	Timeline    pgops.Timeline `json:"timeline"`
	StartLSN    pgops.LSN      `json:"start_lsn"`
	EndLSN      pgops.LSN      `json:"end_lsn"`
	SegSize     uint64         `json:"wal_segment_size"`
	Started     time.Time      `json:"started"`
	Finished    time.Time      `json:"finished"`
	Source      string         `json:"source"` // node it was taken from
	FromStandby bool           `json:"from_standby"`
	Bytes       int64          `json:"bytes"`     // the tar, uncompressed
	Stored      int64          `json:"stored"`    // the sealed object
	SHA256      string         `json:"sha256"`    // of the sealed object
	Recipient   string         `json:"recipient"` // the key's public half
}

// Duration is how long the backup took.
func (b BaseInfo) Duration() time.Duration { return b.Finished.Sub(b.Started) }

// WALFile is one archived WAL object.
type WALFile struct {
	Name     string // segment or history file name, without .partial
	Seg      pgops.Segment
	History  bool
	Partial  bool
	Size     int64
	Modified time.Time
}

// Catalog is what the bucket holds, read from one listing.
type Catalog struct {
	Bases   []BaseInfo // oldest first
	WAL     []WALFile  // sorted by timeline, then segment
	SegSize uint64
	Broken  []string // base backups whose info.json cannot be read
	// From the agent's report: at CaughtUpAt the archive held all WAL up to
	// CaughtUpLSN on CaughtUpTLI.
	CaughtUpAt  time.Time
	CaughtUpLSN pgops.LSN
	CaughtUpTLI pgops.Timeline
	// ... and at ArchivedAt it read the WAL up to ArchivedLSN for upload.
	ArchivedAt  time.Time
	ArchivedLSN pgops.LSN
	ArchivedTLI pgops.Timeline
	// The agent's report itself, or why it could not be read.
	Agent    *AgentStatus
	AgentErr error
}

// ReadCatalog lists the bucket and reads every base backup's info. The
// listings, the agent's report and the infos are read side by side (eight
// at a time), so a slow storage costs a few round trips, not one per object.
func ReadCatalog(ctx context.Context, s Store) (Catalog, error) {
	var cat Catalog
	var bases, objs []Object
	var baseErr, walErr, agentErr error
	var agent AgentStatus
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); bases, baseErr = s.List(ctx, baseDir) }()
	go func() { defer wg.Done(); objs, walErr = s.List(ctx, walDir) }()
	go func() { defer wg.Done(); agent, agentErr = ReadAgentStatus(ctx, s) }()
	wg.Wait()
	if baseErr != nil {
		return cat, baseErr
	}
	if walErr != nil {
		return cat, walErr
	}
	hasData := map[string]bool{}
	var infos []string
	for _, o := range bases {
		switch path.Base(o.Key) {
		case "info.json":
			infos = append(infos, o.Key)
		case "data.tar.zst.age":
			hasData[path.Dir(o.Key)] = true
		}
	}
	read := make([]BaseInfo, len(infos))
	ok := make([]bool, len(infos))
	sem := make(chan struct{}, 8)
	for i, k := range infos {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ok[i] = getJSON(ctx, s, k, &read[i]) == nil && hasData[path.Dir(k)]
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return cat, fmt.Errorf("reading the base backups' info: %w", err)
	}
	for i, k := range infos {
		if !ok[i] {
			cat.Broken = append(cat.Broken, path.Base(path.Dir(k)))
			continue
		}
		cat.Bases = append(cat.Bases, read[i])
	}
	sort.Slice(cat.Bases, func(i, j int) bool { return cat.Bases[i].Started.Before(cat.Bases[j].Started) })
	cat.SegSize = pgops.DefaultSegSize
	if n := len(cat.Bases); n > 0 && cat.Bases[n-1].SegSize != 0 {
		cat.SegSize = cat.Bases[n-1].SegSize
	}
	cat.WAL = ParseWAL(objs, cat.SegSize)
	if agentErr == nil {
		cat.Agent = &agent
		cat.CaughtUpAt, cat.CaughtUpLSN, cat.CaughtUpTLI = agent.CaughtUpAt, agent.CaughtUpLSN, agent.CaughtUpTLI
		cat.ArchivedAt, cat.ArchivedLSN, cat.ArchivedTLI = agent.ArchivedAt, agent.ArchivedLSN, agent.ArchivedTLI
	} else {
		cat.AgentErr = agentErr
	}
	return cat, nil
}

// ParseWAL reads a wal/ listing; names that are not WAL are left out.
func ParseWAL(objs []Object, segSize uint64) []WALFile {
	var out []WALFile
	for _, o := range objs {
		name := strings.TrimPrefix(o.Key, walDir)
		f := WALFile{Size: o.Size, Modified: o.Modified}
		base, partial := strings.CutSuffix(name, partialSuffix)
		f.Partial = partial
		f.Name = base
		if tli, ok := pgops.ParseHistoryFileName(base); ok && !partial {
			f.History, f.Seg = true, pgops.Segment{TLI: tli}
		} else if seg, ok := pgops.ParseSegmentName(base, segSize); ok {
			f.Seg = seg
		} else {
			continue
		}
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Seg.TLI != b.Seg.TLI {
			return a.Seg.TLI < b.Seg.TLI
		}
		if a.History != b.History {
			return a.History
		}
		if a.Seg.No != b.Seg.No {
			return a.Seg.No < b.Seg.No
		}
		return !a.Partial && b.Partial
	})
	return out
}

func getJSON(ctx context.Context, s Store, key string, v any) error {
	r, err := s.Get(ctx, key)
	if err != nil {
		return err
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, 4<<20))
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func putJSON(ctx context.Context, s Store, key string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return s.Put(ctx, key, strings.NewReader(string(b)+"\n"), int64(len(b)+1))
}

// TimelineSpan is one timeline on the chain that leads to a target timeline:
// for each, where it begins (0 for the first) and ends (0: not ended).
type TimelineSpan struct {
	TLI        pgops.Timeline
	Begin, End pgops.LSN
}

// PathTo builds the span list for target from its history file's steps.
func PathTo(target pgops.Timeline, steps []pgops.TimelineStep) []TimelineSpan {
	var out []TimelineSpan
	var begin pgops.LSN
	for _, s := range steps {
		out = append(out, TimelineSpan{TLI: s.Parent, Begin: begin, End: s.Switch})
		begin = s.Switch
	}
	return append(out, TimelineSpan{TLI: target, Begin: begin})
}

// spanFor is the timeline on the path that holds segment no (the newest
// one whose span covers its start; a switch segment is read from the new
// timeline, whose file begins with a copy of the old one).
func spanFor(path []TimelineSpan, no uint64, segSize uint64) (pgops.Timeline, bool) {
	for i := len(path) - 1; i >= 0; i-- {
		sp := path[i]
		first := uint64(sp.Begin) / segSize
		if no < first {
			continue
		}
		if sp.End != 0 && no > uint64(sp.End-1)/segSize {
			return 0, false
		}
		return sp.TLI, true
	}
	return 0, false
}

// switchParent: when segment no holds a timeline switch on the path (the
// new timeline begins inside it), the timeline it switched from.
func switchParent(path []TimelineSpan, no uint64, segSize uint64) (pgops.Timeline, bool) {
	for i := len(path) - 1; i > 0; i-- {
		if uint64(path[i].Begin)/segSize == no {
			return path[i-1].TLI, true
		}
	}
	return 0, false
}

// Target is where a restore should end.
type Target struct {
	Latest   bool
	Time     time.Time
	Timeline pgops.Timeline // 0: the newest timeline in the archive
}

func (t Target) String() string {
	s := "the latest archived WAL"
	if !t.Latest {
		s = t.Time.UTC().Format(time.RFC3339Nano)
	}
	if t.Timeline != 0 {
		s += fmt.Sprintf(" on timeline %d", t.Timeline)
	}
	return s
}

// objectTimeGrain: object storage reports modification times in whole
// seconds, so a time within a second of the newest upload is let through
// (PostgreSQL itself refuses a target that the WAL does not pass).
const objectTimeGrain = time.Second

// RestorePlan is what a restore fetches, decided from the catalogue alone.
type RestorePlan struct {
	Base      BaseInfo
	Timeline  pgops.Timeline
	Histories []string  // history file names to fetch
	Segments  []WALFile // in replay order; the last may be partial
	Target    Target
	Reach     time.Time // the newest point the fetched WAL can reach (upload time of its last file)
}

// RestoreError is a refusal to restore, with what the user can do instead.
type RestoreError struct {
	What, Fix string
	err       error // what it is, for errors.Is (may be nil)
}

func (e *RestoreError) Error() string { return e.What + "\n  fix: " + e.Fix }

func (e *RestoreError) Unwrap() error { return e.err }

// PlanRestore decides, from the catalogue and the target timeline's
// history, which base backup to start from and which WAL files a restore
// needs, or refuses. steps is the target timeline's history (nil for
// timeline 1); hist reads a history file when the target is newer.
func PlanRestore(cat Catalog, target Target, steps []pgops.TimelineStep) (RestorePlan, error) {
	rp := RestorePlan{Target: target, Timeline: target.Timeline}
	if rp.Timeline == 0 {
		rp.Timeline = NewestTimeline(cat)
	}
	if len(cat.Bases) == 0 {
		return rp, &RestoreError{What: "the archive holds no base backup", Fix: "take one with `understudy backup` (the agent takes one when it starts)"}
	}
	path := PathTo(rp.Timeline, steps)
	segSize := cat.SegSize
	files, partials, hist := indexWAL(cat)
	rp.Histories = hist
	// Newest base backup on the path that finished before the target.
	var candidates []BaseInfo
	for _, b := range cat.Bases {
		if _, ok := spanFor(path, uint64(b.StartLSN)/segSize, segSize); !ok {
			continue
		}
		if !target.Latest && b.Finished.After(target.Time) {
			continue
		}
		candidates = append(candidates, b)
	}
	if len(candidates) == 0 {
		earliest := cat.Bases[0].Finished
		if !target.Latest {
			return rp, &RestoreError{What: fmt.Sprintf("no base backup on timeline %d's history finished before %s (the earliest finished at %s)", rp.Timeline, target.Time.UTC().Format(time.RFC3339), earliest.UTC().Format(time.RFC3339)),
				Fix: "pick a time inside the recovery window that `understudy backups` prints"}
		}
		return rp, &RestoreError{What: fmt.Sprintf("no base backup belongs to timeline %d's history", rp.Timeline), Fix: "name another timeline with --timeline, or take a base backup"}
	}
	var lastErr error
	for i := len(candidates) - 1; i >= 0; i-- {
		b := candidates[i]
		segs, reach, gap := walFrom(b, path, files, partials, segSize)
		// The agent's reports are more precise than object times (S3 keeps
		// seconds): the upload that read WAL up to ArchivedLSN at ArchivedAt,
		// and its word that nothing newer existed at CaughtUpAt.
		if n := len(segs); gap == nil && n > 0 {
			last := segs[n-1].Seg
			holds := func(tli pgops.Timeline, lsn pgops.LSN) bool {
				at := uint64(lsn)
				return lsn != 0 && last.TLI == tli && (last.No == at/segSize || at == (last.No+1)*segSize)
			}
			if holds(cat.ArchivedTLI, cat.ArchivedLSN) {
				reach = later(reach, cat.ArchivedAt)
			}
			if holds(cat.CaughtUpTLI, cat.CaughtUpLSN) {
				reach = later(reach, cat.CaughtUpAt)
			}
		}
		end := uint64(b.EndLSN-1) / segSize
		if gap != nil && gap.No <= end {
			lastErr = &RestoreError{What: fmt.Sprintf("base backup %s needs WAL segment %s, which is missing from the archive", b.ID, gap.Name(segSize)), Fix: "restore from an older base backup, or take a new base backup (`understudy backup`)"}
			continue
		}
		if gap != nil {
			if target.Latest {
				return rp, &RestoreError{What: fmt.Sprintf("WAL segment %s is missing from the archive: a restore cannot go past %s", gap.Name(segSize), reach.UTC().Format(time.RFC3339)),
					Fix: fmt.Sprintf("restore to an earlier time (--to %s), or take a new base backup so the window starts again after the gap", reach.UTC().Format(time.RFC3339))}
			}
			if target.Time.After(reach) {
				return rp, &RestoreError{What: fmt.Sprintf("WAL segment %s is missing from the archive: %s cannot be reached (the WAL before the gap ends by %s)", gap.Name(segSize), target.Time.UTC().Format(time.RFC3339), reach.UTC().Format(time.RFC3339)),
					Fix: "restore to an earlier time, or from a base backup taken after the gap"}
			}
		}
		if !target.Latest && target.Time.After(reach.Add(objectTimeGrain)) {
			return rp, &RestoreError{What: fmt.Sprintf("%s is after the newest archived WAL (%s)", target.Time.UTC().Format(time.RFC3339), reach.UTC().Format(time.RFC3339)),
				Fix: "use --to latest, or wait for the archive to catch up (understudy status shows its lag)"}
		}
		rp.Base, rp.Segments, rp.Reach = b, segs, reach
		return rp, nil
	}
	return rp, lastErr
}

// indexWAL splits the archive's WAL into complete segments, partial ones,
// and every history file. All of them are fetched, not only those on the
// target's path: at the end of recovery PostgreSQL takes the first
// timeline after the target's that has no history file (xlogrecovery.c,
// findNewestTimeLine), so a restore that follows an older timeline must
// see the newer ones to branch a timeline no node has used.
func indexWAL(cat Catalog) (files, partials map[pgops.Segment]WALFile, hist []string) {
	files, partials = map[pgops.Segment]WALFile{}, map[pgops.Segment]WALFile{}
	for _, f := range cat.WAL {
		switch {
		case f.History:
			if f.Seg.TLI != 1 {
				hist = append(hist, f.Name)
			}
		case f.Partial:
			partials[f.Seg] = f
		default:
			files[f.Seg] = f
		}
	}
	return files, partials, hist
}

// walFrom lists the segments from b's start along the path until the first
// missing one (returned as gap; nil when the archive simply ends).
func walFrom(b BaseInfo, path []TimelineSpan, files, partials map[pgops.Segment]WALFile, segSize uint64) ([]WALFile, time.Time, *pgops.Segment) {
	var segs []WALFile
	reach := b.Finished
	newest := uint64(0)
	for s := range files {
		newest = max(newest, s.No)
	}
	for s := range partials {
		newest = max(newest, s.No)
	}
	for no := uint64(b.StartLSN) / segSize; no <= newest; no++ {
		tli, ok := spanFor(path, no, segSize)
		if !ok {
			break
		}
		seg := pgops.Segment{TLI: tli, No: no}
		f, ok := files[seg]
		if !ok {
			if p, pok := partials[seg]; pok && isLastOnPath(seg, path, files, partials) {
				segs = append(segs, p)
				reach = later(reach, p.Modified)
				return segs, reach, nil
			}
			// A new timeline's switch segment not archived yet (right after
			// a promote): the parent's copy holds all WAL up to the
			// switchpoint, and recovery reads it when the new timeline's
			// file is missing (xlogrecovery.c, XLogFileReadAnyTLI).
			if parent, sw := switchParent(path, no, segSize); sw && isLastOnPath(seg, path, files, partials) {
				ps := pgops.Segment{TLI: parent, No: no}
				p, pok := files[ps]
				if !pok {
					p, pok = partials[ps]
				}
				if pok {
					segs = append(segs, p)
					reach = later(reach, p.Modified)
					return segs, reach, nil
				}
			}
			if no > uint64(b.EndLSN-1)/segSize && isLastOnPath(seg, path, files, partials) {
				return segs, reach, nil
			}
			return segs, reach, &seg
		}
		segs = append(segs, f)
		reach = later(reach, f.Modified)
	}
	return segs, reach, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// isLastOnPath: nothing newer on the target path than this segment.
func isLastOnPath(seg pgops.Segment, path []TimelineSpan, files, partials map[pgops.Segment]WALFile) bool {
	for s := range files {
		if s.No > seg.No && onPath(s.TLI, path) {
			return false
		}
	}
	for s := range partials {
		if s.No > seg.No && onPath(s.TLI, path) {
			return false
		}
	}
	return true
}

func onPath(tli pgops.Timeline, path []TimelineSpan) bool {
	for _, sp := range path {
		if sp.TLI == tli {
			return true
		}
	}
	return false
}

// NewestTimeline is the highest timeline the archive has WAL or history for.
func NewestTimeline(cat Catalog) pgops.Timeline {
	t := pgops.Timeline(1)
	for _, f := range cat.WAL {
		t = max(t, f.Seg.TLI)
	}
	for _, b := range cat.Bases {
		t = max(t, b.Timeline)
	}
	return t
}

// Window is the span a restore can reach: from the end of the oldest base
// backup whose WAL is complete, to the newest archived WAL.
type Window struct {
	Earliest, Latest time.Time
	OK               bool
	Gap              string // a missing segment that cuts the window, if any
}

// RecoveryWindow computes the window along the newest timeline.
func RecoveryWindow(cat Catalog, steps []pgops.TimelineStep) Window {
	var w Window
	tli := NewestTimeline(cat)
	latest, err := PlanRestore(cat, Target{Latest: true, Timeline: tli}, steps)
	if err != nil {
		var re *RestoreError
		if errors.As(err, &re) {
			w.Gap = re.What
		}
		return w
	}
	w.Latest, w.OK = latest.Reach, true
	// The window is continuous: it starts at the oldest base backup from
	// which WAL runs without a hole to the end of the archive.
	path := PathTo(tli, steps)
	files, partials, _ := indexWAL(cat)
	for _, b := range cat.Bases {
		if _, ok := spanFor(path, uint64(b.StartLSN)/cat.SegSize, cat.SegSize); !ok {
			continue
		}
		if _, _, gap := walFrom(b, path, files, partials, cat.SegSize); gap == nil {
			w.Earliest = b.Finished
			break
		}
	}
	if w.Earliest.IsZero() {
		w.Earliest = latest.Base.Finished
	}
	return w
}

// Policy is the retention policy: keep at least KeepBases base backups,
// and enough of them to restore to any time in the last Window.
type Policy struct {
	KeepBases int           `json:"keep_bases,omitempty"`
	Window    time.Duration `json:"window,omitempty"`
}

// Retain decides what retention deletes: base backups outside the policy,
// and WAL older than the oldest kept base backup's start. History files are
// never deleted, nor is anything when no base backup is complete.
func Retain(cat Catalog, p Policy, now time.Time) (keep []BaseInfo, deleteKeys []string) {
	if p.KeepBases < 1 {
		p.KeepBases = 1
	}
	n := len(cat.Bases)
	if n == 0 {
		return nil, nil
	}
	first := max(0, n-p.KeepBases)
	if p.Window > 0 {
		horizon := now.Add(-p.Window)
		// The newest base that finished at or before the horizon restores
		// the horizon itself; everything after it is needed too.
		for i := n - 1; i >= 0; i-- {
			if !cat.Bases[i].Finished.After(horizon) {
				first = min(first, i)
				break
			}
			if i == 0 {
				first = 0
			}
		}
	}
	keep = cat.Bases[first:]
	for _, b := range cat.Bases[:first] {
		deleteKeys = append(deleteKeys, baseDataKey(b.ID), baseInfoKey(b.ID))
	}
	oldest := uint64(keep[0].StartLSN) / cat.SegSize
	for _, f := range cat.WAL {
		if f.History {
			continue
		}
		if f.Seg.No < oldest {
			name := f.Name
			if f.Partial {
				name += partialSuffix
			}
			deleteKeys = append(deleteKeys, walKey(name))
		}
	}
	return keep, deleteKeys
}
