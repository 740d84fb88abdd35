package backup

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/pgops"
)

const seg = pgops.DefaultSegSize

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// at is t0 plus m minutes.
func at(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }

func segName(tli pgops.Timeline, no uint64) string {
	return pgops.Segment{TLI: tli, No: no}.Name(seg)
}

// archive builds a catalogue: bases as (id, start segment, end segment,
// finished minute), WAL as names with an upload minute each.
func archive(bases []BaseInfo, wal map[string]int) Catalog {
	var objs []Object
	for name, m := range wal {
		objs = append(objs, Object{Key: walDir + name, Modified: at(m)})
	}
	return Catalog{Bases: bases, WAL: ParseWAL(objs, seg), SegSize: seg}
}

func base(id string, startSeg, endSeg uint64, finished int) BaseInfo {
	return BaseInfo{ID: id, Timeline: 1, StartLSN: pgops.LSN(startSeg*seg + 40), EndLSN: pgops.LSN(endSeg*seg + 256), SegSize: seg, Started: at(finished - 1), Finished: at(finished)}
}

func names(fs []WALFile) []string {
	var out []string
	for _, f := range fs {
		n := f.Name
		if f.Partial {
			n += ".partial"
		}
		out = append(out, n)
	}
	return out
}

func TestPlanRestorePicksTheNewestBaseBeforeTheTarget(t *testing.T) {
	cat := archive([]BaseInfo{base("a", 2, 2, 1), base("b", 5, 5, 10)}, map[string]int{
		segName(1, 2): 2, segName(1, 3): 3, segName(1, 4): 6, segName(1, 5): 11, segName(1, 6) + ".partial": 12,
	})
	rp, err := PlanRestore(cat, Target{Time: at(8)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rp.Base.ID != "a" {
		t.Errorf("to minute 8: base %s, want a (b finished at 10)", rp.Base.ID)
	}
	want := []string{segName(1, 2), segName(1, 3), segName(1, 4), segName(1, 5), segName(1, 6) + ".partial"}
	if got := names(rp.Segments); !slices.Equal(got, want) {
		t.Errorf("segments %v, want %v", got, want)
	}
	rp, err = PlanRestore(cat, Target{Latest: true}, nil)
	if err != nil || rp.Base.ID != "b" || !rp.Reach.Equal(at(12)) {
		t.Errorf("latest: base %s reach %s err %v; want b, minute 12", rp.Base.ID, rp.Reach, err)
	}
	if _, err := PlanRestore(cat, Target{Time: at(0)}, nil); err == nil || !strings.Contains(err.Error(), "no base backup") {
		t.Errorf("before every base backup: %v", err)
	}
	if _, err := PlanRestore(cat, Target{Time: at(30)}, nil); err == nil || !strings.Contains(err.Error(), "after the newest archived WAL") {
		t.Errorf("after the archive: %v", err)
	}
	// The agent reported at minute 40 that the archive held all the source
	// had, inside segment 6: an idle database is restorable to minute 30.
	cat.CaughtUpAt, cat.CaughtUpLSN, cat.CaughtUpTLI = at(40), pgops.LSN(6*seg+100), 1
	if rp, err := PlanRestore(cat, Target{Time: at(30)}, nil); err != nil || !rp.Reach.Equal(at(40)) {
		t.Errorf("an idle archive, caught up at 40: reach %s, %v", rp.Reach, err)
	}
	// A report naming an older segment than the archive's end says nothing.
	cat.CaughtUpLSN = pgops.LSN(5 * seg)
	if _, err := PlanRestore(cat, Target{Time: at(30)}, nil); err == nil {
		t.Errorf("a stale caught-up report extended the reach")
	}
}

func TestPlanRestoreRefusesAMissingSegment(t *testing.T) {
	cat := archive([]BaseInfo{base("a", 2, 3, 2)}, map[string]int{
		segName(1, 2): 2, segName(1, 3): 3, segName(1, 5): 6, segName(1, 6): 7,
	})
	var re *RestoreError
	_, err := PlanRestore(cat, Target{Latest: true}, nil)
	if !errors.As(err, &re) || !strings.Contains(re.What, segName(1, 4)+" is missing") || !strings.Contains(re.Fix, "--to") {
		t.Fatalf("latest across a gap: %v", err)
	}
	if _, err := PlanRestore(cat, Target{Time: at(5)}, nil); err == nil {
		t.Errorf("a time after the gap was accepted")
	}
	if rp, err := PlanRestore(cat, Target{Time: at(3)}, nil); err != nil || len(rp.Segments) != 2 {
		t.Errorf("a time before the gap: %v, %v", names(rp.Segments), err)
	}
	// A segment inside the base backup itself is missing: that base is unusable.
	cat = archive([]BaseInfo{base("a", 2, 3, 2)}, map[string]int{segName(1, 2): 2, segName(1, 4): 3})
	if _, err := PlanRestore(cat, Target{Latest: true}, nil); err == nil || !strings.Contains(err.Error(), "base backup a needs WAL segment "+segName(1, 3)) {
		t.Errorf("a base missing its own WAL: %v", err)
	}
}

func TestPlanRestoreFollowsTheTimelineItIsGiven(t *testing.T) {
	// Timeline 2 branched from 1 at segment 4 (the switch segment exists on
	// both); timeline 1 went on to segment 6 elsewhere.
	sw := pgops.LSN(4*seg + 0x500)
	steps := []pgops.TimelineStep{{Parent: 1, Switch: sw}}
	cat := archive([]BaseInfo{base("a", 2, 2, 1)}, map[string]int{
		segName(1, 2): 2, segName(1, 3): 3, segName(1, 4) + ".partial": 4,
		"00000002.history": 4, segName(2, 4): 5, segName(2, 5): 6,
	})
	rp, err := PlanRestore(cat, Target{Latest: true, Timeline: 2}, steps)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{segName(1, 2), segName(1, 3), segName(2, 4), segName(2, 5)}
	if got := names(rp.Segments); !slices.Equal(got, want) || !slices.Equal(rp.Histories, []string{"00000002.history"}) {
		t.Errorf("timeline 2: segments %v histories %v, want %v", got, rp.Histories, want)
	}
	rp, err = PlanRestore(cat, Target{Latest: true, Timeline: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Timeline 1's restore fetches timeline 2's history file too, so that
	// PostgreSQL branches timeline 3 at its end, not a second timeline 2.
	want = []string{segName(1, 2), segName(1, 3), segName(1, 4) + ".partial"}
	if got := names(rp.Segments); !slices.Equal(got, want) || !slices.Equal(rp.Histories, []string{"00000002.history"}) {
		t.Errorf("timeline 1: %v (histories %v), want %v and timeline 2's history", got, rp.Histories, want)
	}
	if NewestTimeline(cat) != 2 {
		t.Errorf("newest timeline %d, want 2", NewestTimeline(cat))
	}
}

func TestRetainKeepsWhatKeptBasesNeed(t *testing.T) {
	bases := []BaseInfo{base("a", 2, 2, 1), base("b", 5, 5, 10), base("c", 8, 8, 20)}
	wal := map[string]int{"00000002.history": 1}
	for no := uint64(2); no <= 9; no++ {
		wal[segName(1, no)] = int(no) * 2
	}
	wal[segName(1, 3)+".partial"] = 5
	cat := archive(bases, wal)

	keep, del := Retain(cat, Policy{KeepBases: 2}, at(30))
	if len(keep) != 2 || keep[0].ID != "b" {
		t.Fatalf("kept %v", keep)
	}
	want := []string{"base/a/data.tar.zst.age", "base/a/info.json", walKey(segName(1, 2)), walKey(segName(1, 3)), walKey(segName(1, 3) + ".partial"), walKey(segName(1, 4))}
	slices.Sort(want)
	slices.Sort(del)
	if !slices.Equal(del, want) {
		t.Errorf("deletes\n %v\nwant\n %v", del, want)
	}
	// A window of 25 minutes at minute 30 reaches back to minute 5: base a
	// (finished at 1) is the one that restores minute 5, so nothing goes.
	if _, del := Retain(cat, Policy{KeepBases: 1, Window: 25 * time.Minute}, at(30)); len(del) != 0 {
		t.Errorf("the window needs every base; deleted %v", del)
	}
	// 15 minutes reaches minute 15: b restores it, a may go.
	if keep, _ := Retain(cat, Policy{KeepBases: 1, Window: 15 * time.Minute}, at(30)); len(keep) != 2 || keep[0].ID != "b" {
		t.Errorf("15 minute window kept %v", keep)
	}
	// One base kept at least, even with a zero policy.
	if keep, _ := Retain(cat, Policy{}, at(30)); len(keep) != 1 || keep[0].ID != "c" {
		t.Errorf("zero policy kept %v", keep)
	}
	if keep, del := Retain(Catalog{SegSize: seg}, Policy{}, at(30)); keep != nil || del != nil {
		t.Errorf("an empty archive: %v %v", keep, del)
	}
}

func TestRecoveryWindow(t *testing.T) {
	cat := archive([]BaseInfo{base("a", 2, 2, 1), base("b", 5, 5, 10)}, map[string]int{
		segName(1, 2): 2, segName(1, 3): 3, segName(1, 4): 6, segName(1, 5): 11, segName(1, 6) + ".partial": 12,
	})
	w := RecoveryWindow(cat, nil)
	if !w.OK || !w.Earliest.Equal(at(1)) || !w.Latest.Equal(at(12)) {
		t.Errorf("window %+v, want minute 1 to 12", w)
	}
	cat = archive([]BaseInfo{base("a", 2, 2, 1), base("b", 5, 5, 10)}, map[string]int{
		segName(1, 2): 2, segName(1, 4): 6, segName(1, 5): 11, segName(1, 6): 12,
	})
	// a's WAL has a hole at 3: the window starts at b.
	if w := RecoveryWindow(cat, nil); !w.OK || !w.Earliest.Equal(at(10)) {
		t.Errorf("window with a hole before b: %+v", w)
	}
}

func TestSegmentNames(t *testing.T) {
	for _, c := range []struct {
		tli  pgops.Timeline
		lsn  pgops.LSN
		name string
	}{{1, 0x2000028, "000000010000000000000002"}, {2, 0x1_FF000000, "0000000200000001000000FF"}, {0x1A, 0x3_00000000, "0000001A0000000300000000"}} {
		s := pgops.SegmentOf(c.tli, c.lsn, seg)
		if got := s.Name(seg); got != c.name {
			t.Errorf("%s: %s, want %s", c.lsn, got, c.name)
		}
		if back, ok := pgops.ParseSegmentName(c.name, seg); !ok || back != s {
			t.Errorf("parse %s: %+v %v", c.name, back, ok)
		}
	}
	for _, bad := range []string{"00000001000000000000002", "0000000100000000000001000", "000000010000000000000100", "00000001000000000000000g", "00000001000000000000000a"} {
		if _, ok := pgops.ParseSegmentName(bad, seg); ok {
			t.Errorf("%q parsed as a segment", bad)
		}
	}
	steps, err := pgops.ParseHistory("1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tafter switchover\n")
	if err != nil || len(steps) != 2 || steps[1].Parent != 2 || steps[1].Switch != 0x5000000 {
		t.Errorf("history: %+v %v", steps, err)
	}
	if _, err := pgops.ParseHistory("2\t0/5000000\n1\t0/3000000\n"); err == nil {
		t.Errorf("a history going backwards was accepted")
	}
	// What a restore that stopped on timeline 2 while following 3 writes.
	if steps, err := pgops.ParseHistory("1\t0/5000000\tx\n\n2\t0/9000000\ty\n\n3\t0/7000000\tbefore T\n"); err != nil || len(steps) != 3 {
		t.Errorf("an earlier last switchpoint: %v %v", steps, err)
	}
}

// Issue 18: right after a promote the archive has timeline 2's history
// file but not yet its first segment (the switch segment, which begins
// with the old timeline's WAL up to the switchpoint). The window must not
// fall back to the last complete segment before it: the old timeline's
// copy of the switch segment holds everything up to the switchpoint, and
// a restore along timeline 2 reads it (PostgreSQL tries each timeline of
// the history for a segment, xlogrecovery.c XLogFileReadAnyTLI).
func TestRecoveryWindowRightAfterAPromote(t *testing.T) {
	wal := map[string]int{segName(1, 2): 2, segName(1, 3): 3, segName(1, 4): 6, segName(1, 5) + ".partial": 11}
	before := RecoveryWindow(archive([]BaseInfo{base("a", 2, 2, 1)}, wal), nil)
	if !before.OK || !before.Latest.Equal(at(11)) {
		t.Fatalf("before the promote: %+v", before)
	}
	wal["00000002.history"] = 12
	steps := []pgops.TimelineStep{{Parent: 1, Switch: pgops.LSN(5*seg + 0x3000)}}
	cat := archive([]BaseInfo{base("a", 2, 2, 1)}, wal)
	w := RecoveryWindow(cat, steps)
	if !w.OK || !w.Latest.Equal(at(11)) {
		t.Errorf("right after the promote the window ends at %s, before it at %s", w.Latest.Sub(t0), before.Latest.Sub(t0))
	}
	rp, err := PlanRestore(cat, Target{Latest: true}, steps)
	if err != nil || rp.Timeline != 2 || strings.Join(names(rp.Segments), " ") != strings.Join([]string{segName(1, 2), segName(1, 3), segName(1, 4), segName(1, 5) + ".partial"}, " ") {
		t.Errorf("restore to the latest: timeline %d, %v, %v", rp.Timeline, names(rp.Segments), err)
	}
	// Once timeline 2's own switch segment is there, it is read instead.
	wal[segName(2, 5)+".partial"] = 13
	cat = archive([]BaseInfo{base("a", 2, 2, 1)}, wal)
	if w := RecoveryWindow(cat, steps); !w.OK || !w.Latest.Equal(at(13)) {
		t.Errorf("with timeline 2's segment: %+v", w)
	}
	rp, _ = PlanRestore(cat, Target{Latest: true}, steps)
	if got := names(rp.Segments); got[len(got)-1] != segName(2, 5)+".partial" {
		t.Errorf("segments %v", got)
	}
	// A later segment of timeline 2 without its switch segment is a gap,
	// not something the old timeline's copy can stand in for.
	delete(wal, segName(2, 5)+".partial")
	wal[segName(2, 6)] = 14
	if w := RecoveryWindow(archive([]BaseInfo{base("a", 2, 2, 1)}, wal), steps); w.OK {
		t.Errorf("a hole at timeline 2's switch segment: %+v", w)
	}
}
