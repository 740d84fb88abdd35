package backup

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/pgops"
)

// The agent's decisions as a table: each row is an observed state (two
// nodes, the spool, the receiver, the lanes, the clock) and the steps it
// must give, in order. No server runs.
func TestDecideAgent(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	const seg = pgops.DefaultSegSize
	primary := Source{Name: "db", Host: "/s/db", Port: 5432}
	replica := Source{Name: "db-replica", Host: "/s/db-replica", Port: 5433}
	p := (&AgentConfig{SpoolCap: 64 << 20, PartialEvery: 500 * time.Millisecond, BaseEvery: 24 * time.Hour}).policy()
	pDrill := p
	pDrill.DrillEvery = 7 * 24 * time.Hour

	node := func(s Source, standby bool, tli pgops.Timeline, slot SlotSeen) NodeSeen {
		return NodeSeen{Source: s, At: t0.Add(-500 * time.Millisecond), Standby: standby, SystemID: "7", Timeline: tli, XLogPos: 0x5000000, SegSize: seg, Slot: slot}
	}
	segFile := func(no uint64, partial bool, mtime time.Time) SpoolFile {
		s := pgops.Segment{TLI: 1, No: no}
		name := s.Name(seg)
		if partial {
			name += partialSuffix
		}
		size := int64(seg)
		return SpoolFile{Name: name, Seg: s, Partial: partial, Size: size, MTime: mtime}
	}
	hist := SpoolFile{Name: "00000002.history", Seg: pgops.Segment{TLI: 2}, History: true, Size: 42, MTime: t0}
	// A steady state: streaming from the standby for a minute, the partial
	// uploaded as it is, the report and the catalogue fresh.
	steady := func() AgentView {
		part := segFile(5, true, t0.Add(-time.Second))
		return AgentView{
			Now:   t0,
			Nodes: []NodeSeen{node(primary, false, 1, SlotAbsent), node(replica, true, 1, SlotPresent)},
			Receiver: ReceiverSeen{Running: true, Source: "db-replica", Standby: true, Timeline: 1, Since: t0.Add(-time.Minute),
				FailedOn: map[string]time.Time{}, DroppedOn: map[string]bool{}},
			Spool: []SpoolFile{part}, SpoolFree: 10 << 30,
			UploadedPartial: part.Name, UploadedPartialMTime: part.MTime,
			Status: AgentStatus{Started: t0.Add(-time.Hour), LastPartialAt: t0.Add(-time.Second), CaughtUpAt: t0.Add(-100 * time.Millisecond),
				ArchivedLSN: 0x5001000, ArchivedTLI: 1},
			CaughtUpCheckedAt: t0.Add(-100 * time.Millisecond),
			Catalog:           CatalogSeen{ReadAt: t0.Add(-10 * time.Second), Bases: 1, Newest: t0.Add(-time.Hour)},
			StatusWrittenAt:   t0.Add(-time.Second),
			Drill:             DrillSeen{ReadAt: t0.Add(-10 * time.Second), Last: &DrillRecord{Started: t0.Add(-time.Hour), OK: true}, Bases: 1},
		}
	}
	stopped := func(v AgentView) AgentView {
		v.Receiver.Running, v.Receiver.Source, v.Receiver.Since = false, "", time.Time{}
		return v
	}

	cases := []struct {
		name string
		p    AgentPolicy
		view func() AgentView
		want []AgentStep
	}{
		{"steady: nothing to do", p, steady, nil},
		{"start: a standby answers, so WAL comes from it", p, func() AgentView {
			v := stopped(steady())
			v.Spool, v.Status.ArchivedLSN, v.Status.ArchivedTLI = nil, 0, 0
			return v
		}, []AgentStep{StartReceiver{Source: replica, Standby: true, Timeline: 1}}},
		{"start with an empty spool: resume where the archive ends", p, func() AgentView {
			v := stopped(steady())
			v.Spool = nil
			return v
		}, []AgentStep{StartReceiver{Source: replica, Standby: true, Timeline: 1, Resume: &pgops.Segment{TLI: 1, No: 5}}}},
		{"start after a gap: the new slot's position is the start", p, func() AgentView {
			v := stopped(steady())
			v.Spool, v.AfterGap = nil, true
			return v
		}, []AgentStep{StartReceiver{Source: replica, Standby: true, Timeline: 1}}},
		{"start: only the primary answers", p, func() AgentView {
			v := stopped(steady())
			v.Nodes[1].ErrAt, v.Nodes[1].Err = t0.Add(-100*time.Millisecond), "connection refused"
			return v
		}, []AgentStep{StartReceiver{Source: primary, Timeline: 1}}},
		{"start: a probe older than ProbeFresh does not count", p, func() AgentView {
			v := stopped(steady())
			v.Nodes[1].At = t0.Add(-5 * time.Second)
			return v
		}, []AgentStep{StartReceiver{Source: primary, Timeline: 1}}},
		{"start: a standby that failed a moment ago is avoided while the primary answers", p, func() AgentView {
			v := stopped(steady())
			v.Receiver.Failures, v.Receiver.LastExit = 1, t0.Add(-5*time.Second)
			v.Receiver.FailedOn["db-replica"] = t0.Add(-5 * time.Second)
			return v
		}, []AgentStep{StartReceiver{Source: primary, Timeline: 1}}},
		{"start: no node answers; the report says why, once", p, func() AgentView {
			v := stopped(steady())
			for i := range v.Nodes {
				v.Nodes[i].Err, v.Nodes[i].ErrAt = "connecting to x: no answer in 5s", t0
			}
			return v
		}, []AgentStep{NoteError{"no node answered a replication login: db: connecting to x: no answer in 5s; db-replica: connecting to x: no answer in 5s"}}},
		{"start: backoff after failures (2 s after the second)", p, func() AgentView {
			v := stopped(steady())
			v.Receiver.Failures, v.Receiver.LastExit = 2, t0.Add(-1500*time.Millisecond)
			return v
		}, nil},
		{"start: a node not heard from yet, just after the start: wait for it", p, func() AgentView {
			v := stopped(steady())
			v.Status.Started = t0.Add(-time.Second)
			v.Nodes[1] = NodeSeen{Source: replica}
			return v
		}, nil},
		{"start: a node not heard from for ProbeFresh after the start: go without it", p, func() AgentView {
			v := stopped(steady())
			v.Status.Started = t0.Add(-4 * time.Second)
			v.Nodes[1] = NodeSeen{Source: replica}
			return v
		}, []AgentStep{StartReceiver{Source: primary, Timeline: 1}}},
		{"start: the receiver lane is busy starting it", p, func() AgentView {
			v := stopped(steady())
			v.Busy[LaneReceiver] = true
			return v
		}, nil},
		{"running: the standby was promoted and the old primary is a standby now", p, func() AgentView {
			v := steady()
			v.Nodes[0].Standby, v.Nodes[1].Standby = true, false
			v.Nodes[0].Timeline, v.Nodes[1].Timeline = 2, 2
			return v
		}, []AgentStep{StopReceiver{"db-replica was promoted; db is a standby: moving there"}}},
		{"running: promoted, and no standby answers yet: stay", p, func() AgentView {
			v := steady()
			v.Nodes[1].Standby, v.Nodes[1].Timeline = false, 2
			v.Nodes[0].Err, v.Nodes[0].ErrAt = "the database system is shutting down", t0
			return v
		}, nil},
		{"running on the primary: a standby answers again", p, func() AgentView {
			v := steady()
			v.Receiver.Source, v.Receiver.Standby = "db", false
			v.Nodes[0].Slot, v.Nodes[1].Slot = SlotPresent, SlotAbsent
			return v
		}, []AgentStep{StopReceiver{"db-replica is a standby and db is not: moving there"}}},
		{"running: the source has not answered for SourceStall", p, func() AgentView {
			v := steady()
			v.Nodes[1].At = t0.Add(-11 * time.Second)
			v.Nodes[1].Err, v.Nodes[1].ErrAt = "asking db-replica who it is: no answer in 3s", t0
			return v
		}, []AgentStep{StopReceiver{"db-replica has not answered for 11s"}}},
		{"running: asked to choose again", p, func() AgentView {
			v := steady()
			v.Rechoose = true
			return v
		}, []AgentStep{StopReceiver{"asked to choose its source again"}}},
		{"running: the slot is still on the primary", p, func() AgentView {
			v := steady()
			v.Nodes[0].Slot = SlotPresent
			return v
		}, []AgentStep{DropSlot{primary}}},
		{"running: a drop that just failed there waits before the next", p, func() AgentView {
			v := steady()
			v.Nodes[0].Slot = SlotPresent
			v.Receiver.DropFailedAt = map[string]time.Time{"db": t0.Add(-time.Second)}
			return v
		}, nil},
		{"running: ... and is tried again after", p, func() AgentView {
			v := steady()
			v.Nodes[0].Slot = SlotPresent
			v.Receiver.DropFailedAt = map[string]time.Time{"db": t0.Add(-3 * time.Second)}
			return v
		}, []AgentStep{DropSlot{primary}}},
		{"running: the slot elsewhere waits until streaming settles", p, func() AgentView {
			v := steady()
			v.Nodes[0].Slot, v.Receiver.Since = SlotPresent, t0.Add(-time.Second)
			return v
		}, nil},
		{"running: a node that cannot say (PostgreSQL 14) gets one drop per run", p, func() AgentView {
			v := steady()
			v.Nodes[0].Slot = SlotUnknown
			return v
		}, []AgentStep{DropSlot{primary}}},
		{"running: ... and only one", p, func() AgentView {
			v := steady()
			v.Nodes[0].Slot = SlotUnknown
			v.Receiver.DroppedOn["db"] = true
			return v
		}, nil},
		{"spool over its cap: pause and stop receiving", p, func() AgentView {
			v := steady()
			v.Spool = []SpoolFile{segFile(1, false, t0), segFile(2, false, t0), segFile(3, false, t0), segFile(4, false, t0), segFile(5, false, t0)}
			v.Busy[LaneWAL] = true
			return v
		}, []AgentStep{SetPaused{PausedSpoolCap, pausedText(80<<20, 64<<20)}, StopReceiver{"receiving is paused"}}},
		{"paused for the cap, the spool drained to half: resume and start", p, func() AgentView {
			v := stopped(steady())
			v.Status.Paused, v.Status.PausedFor = "x", PausedSpoolCap
			v.Spool = []SpoolFile{segFile(4, false, t0), segFile(5, true, t0.Add(-time.Second))}
			v.Busy[LaneWAL] = true
			return v
		}, []AgentStep{SetPaused{}, StartReceiver{Source: replica, Standby: true, Timeline: 1}}},
		{"paused for the cap, still over half: stay paused", p, func() AgentView {
			v := stopped(steady())
			v.Status.Paused, v.Status.PausedFor = "x", PausedSpoolCap
			v.Spool = []SpoolFile{segFile(3, false, t0), segFile(4, false, t0), segFile(5, false, t0)}
			v.Busy[LaneWAL] = true
			return v
		}, nil},
		{"the spool's disk nearly full: pause", p, func() AgentView {
			v := steady()
			v.SpoolFree = 20 << 20
			return v
		}, []AgentStep{SetPaused{PausedSpoolDisk, diskText(20 << 20)}, StopReceiver{"receiving is paused"}}},
		{"paused for the disk, room again: resume", p, func() AgentView {
			v := stopped(steady())
			v.Status.Paused, v.Status.PausedFor = "x", PausedSpoolDisk
			v.SpoolFree = 70 << 20
			return v
		}, []AgentStep{SetPaused{}, StartReceiver{Source: replica, Standby: true, Timeline: 1}}},
		{"paused for the disk, not room enough yet", p, func() AgentView {
			v := stopped(steady())
			v.Status.Paused, v.Status.PausedFor = "x", PausedSpoolDisk
			v.SpoolFree = 40 << 20
			return v
		}, nil},
		{"uploads: history first, then finished segments, then the changed partial", p, func() AgentView {
			v := steady()
			v.Spool = []SpoolFile{hist, segFile(4, false, t0), segFile(5, true, t0)}
			return v
		}, []AgentStep{UploadWAL{hist}, UploadWAL{segFile(4, false, t0)}, UploadPartial{File: segFile(5, true, t0)}}},
		{"the partial changed, but was uploaded less than PartialEvery ago", p, func() AgentView {
			v := steady()
			v.Spool[0].MTime = t0
			v.Status.LastPartialAt = t0.Add(-200 * time.Millisecond)
			return v
		}, nil},
		{"a partial not uploaded before goes at once", p, func() AgentView {
			v := steady()
			v.Spool = []SpoolFile{segFile(6, true, t0)}
			v.Status.LastPartialAt = t0.Add(-200 * time.Millisecond)
			return v
		}, []AgentStep{UploadPartial{File: segFile(6, true, t0)}}},
		{"the partial unchanged since its upload: ask whether the source has more", p, func() AgentView {
			v := steady()
			v.Status.CaughtUpAt, v.CaughtUpCheckedAt = t0.Add(-time.Second), t0.Add(-time.Second)
			return v
		}, []AgentStep{CheckCaughtUp{}}},
		{"the partial unchanged, the source ahead: ask again only after PartialEvery", p, func() AgentView {
			v := steady()
			v.Status.CaughtUpAt, v.CaughtUpCheckedAt = t0.Add(-time.Minute), t0.Add(-100*time.Millisecond)
			return v
		}, nil},
		{"an old timeline's partial is uploaded a last time", p, func() AgentView {
			v := steady()
			old := segFile(5, true, t0.Add(-time.Second))
			newer := SpoolFile{Name: pgops.Segment{TLI: 2, No: 5}.Name(seg) + partialSuffix, Seg: pgops.Segment{TLI: 2, No: 5}, Partial: true, Size: int64(seg), MTime: t0}
			v.Spool = []SpoolFile{old, newer}
			v.UploadedPartial = ""
			return v
		}, []AgentStep{UploadPartial{File: segFile(5, true, t0.Add(-time.Second)), Final: true},
			UploadPartial{File: SpoolFile{Name: pgops.Segment{TLI: 2, No: 5}.Name(seg) + partialSuffix, Seg: pgops.Segment{TLI: 2, No: 5}, Partial: true, Size: int64(seg), MTime: t0}}}},
		{"uploads failing: wait (2 s after the third failure)", p, func() AgentView {
			v := steady()
			v.Spool = []SpoolFile{segFile(4, false, t0), segFile(5, true, t0)}
			v.UploadFailures, v.UploadFailedAt = 3, t0.Add(-time.Second)
			return v
		}, nil},
		{"uploads failing: retry once the backoff has passed", p, func() AgentView {
			v := steady()
			v.Spool = []SpoolFile{segFile(4, false, t0), segFile(5, true, t0)}
			v.UploadFailures, v.UploadFailedAt = 3, t0.Add(-3*time.Second)
			return v
		}, []AgentStep{UploadWAL{segFile(4, false, t0)}, UploadPartial{File: segFile(5, true, t0)}}},
		{"the WAL lane busy: no uploads", p, func() AgentView {
			v := steady()
			v.Spool = []SpoolFile{segFile(4, false, t0), segFile(5, true, t0)}
			v.Busy[LaneWAL] = true
			return v
		}, nil},
		{"a gap: upload what is there, then record it; no restart meanwhile", p, func() AgentView {
			v := stopped(steady())
			v.Receiver.Source, v.Receiver.Gap = "db-replica", "requested WAL segment has already been removed"
			v.Spool = []SpoolFile{segFile(5, true, t0)}
			return v
		}, []AgentStep{UploadPartial{File: segFile(5, true, t0)}, RecordGap{Source: "db-replica", Text: "requested WAL segment has already been removed"}}},
		{"a gap while the storage fails: record it without the upload", p, func() AgentView {
			v := stopped(steady())
			v.Receiver.Source, v.Receiver.Gap = "db-replica", "invalidated"
			v.Spool = []SpoolFile{segFile(5, true, t0)}
			v.UploadFailures, v.UploadFailedAt = 1, t0
			return v
		}, []AgentStep{RecordGap{Source: "db-replica", Text: "invalidated"}}},
		{"the first WAL after a gap", p, func() AgentView {
			v := steady()
			v.AfterGap = true
			v.Busy[LaneWAL] = true
			return v
		}, []AgentStep{ClearAfterGap{}}},
		{"base: none in the archive, streaming settled: take one from the source", p, func() AgentView {
			v := steady()
			v.Catalog.Bases = 0
			return v
		}, []AgentStep{BaseBackup{replica}, PruneArchive{}}},
		{"base: the newest is older than BaseEvery", p, func() AgentView {
			v := steady()
			v.Catalog.Newest = t0.Add(-25 * time.Hour)
			return v
		}, []AgentStep{BaseBackup{replica}, PruneArchive{}}},
		{"base: the catalogue is stale: read it first", p, func() AgentView {
			v := steady()
			v.Catalog.ReadAt = t0.Add(-31 * time.Second)
			return v
		}, []AgentStep{RefreshCatalog{}}},
		{"base: after a gap, without waiting for the catalogue", p, func() AgentView {
			v := steady()
			v.NeedBase, v.Catalog.ReadAt = true, t0.Add(-time.Hour)
			return v
		}, []AgentStep{BaseBackup{replica}, PruneArchive{}}},
		{"base: the last attempt failed 10 s ago", p, func() AgentView {
			v := steady()
			v.NeedBase, v.BaseErr, v.BaseTriedAt = true, "pg_basebackup failed", t0.Add(-10*time.Second)
			return v
		}, nil},
		{"base: the catalogue cannot be read (storage down): no base backup", p, func() AgentView {
			v := steady()
			v.Catalog = CatalogSeen{Err: "no answer", ErrAt: t0.Add(-time.Second)}
			return v
		}, nil},
		{"status: written every StatusEvery", p, func() AgentView {
			v := steady()
			v.StatusWrittenAt = t0.Add(-2 * time.Second)
			return v
		}, []AgentStep{WriteStatus{}}},
		{"drills: read the last one a minute after the start", pDrill, func() AgentView {
			v := steady()
			v.Drill.ReadAt = t0.Add(-time.Minute)
			return v
		}, []AgentStep{ReadDrills{}}},
		{"drills: due", pDrill, func() AgentView {
			v := steady()
			v.Drill.Last.Started = t0.Add(-8 * 24 * time.Hour)
			return v
		}, []AgentStep{RunDrill{}}},
		{"stopping: everything in the spool now, then the report", p, func() AgentView {
			v := stopped(steady())
			v.Stopping = true
			v.Spool = []SpoolFile{segFile(4, false, t0), segFile(5, true, t0)}
			v.UploadFailures, v.UploadFailedAt = 3, t0
			v.Status.LastPartialAt = t0
			v.Catalog.Bases = 0
			return v
		}, []AgentStep{UploadWAL{segFile(4, false, t0)}, UploadPartial{File: segFile(5, true, t0)}, WriteStatus{}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := DecideAgent(c.view(), c.p)
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got:\n%s\nwant:\n%s", stepsText(got), stepsText(c.want))
			}
		})
	}
}

func stepsText(ss []AgentStep) string {
	var b strings.Builder
	for _, s := range ss {
		fmt.Fprintf(&b, "  [%s] %s %+v\n", s.Lane(), s, s)
	}
	if len(ss) == 0 {
		b.WriteString("  (none)\n")
	}
	return b.String()
}

// The report's archived position only moves forward; a partial's slot
// position vouches for it only inside that segment.
func TestArchivedPosition(t *testing.T) {
	const seg = pgops.DefaultSegSize
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	var s AgentStatus
	if !raiseArchived(&s, 1, 0x3000000, t0, false) || s.ArchivedLSN != 0x3000000 || !s.ArchivedAt.Equal(t0) {
		t.Errorf("first position: %+v", s)
	}
	if raiseArchived(&s, 1, 0x2000000, t0.Add(time.Second), false) || s.ArchivedLSN != 0x3000000 {
		t.Errorf("moved back: %+v", s)
	}
	if raiseArchived(&s, 1, 0x3000000, t0.Add(time.Second), false) || !raiseArchived(&s, 1, 0x3000000, t0.Add(time.Second), true) || !s.ArchivedAt.Equal(t0.Add(time.Second)) {
		t.Errorf("the same position read later: %+v", s)
	}
	if !raiseArchived(&s, 2, 0x100, t0, false) || s.ArchivedTLI != 2 {
		t.Errorf("a newer timeline: %+v", s)
	}
	in := pgops.Segment{TLI: 1, No: 3}
	for _, c := range []struct {
		tli  pgops.Timeline
		lsn  pgops.LSN
		want bool
	}{{1, 0x3000010, true}, {1, 0x4000000, true}, {1, 0x4000010, false}, {1, 0x2FFFFFF, false}, {2, 0x3000010, false}} {
		if got := claimable(in, c.tli, c.lsn, seg); got != c.want {
			t.Errorf("claimable(%v, %d, %s) = %v", in, c.tli, c.lsn, got)
		}
	}
}
