package backup

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/understudy-dev/understudy/pgops"
)

// The agent works as the live commands do: it observes (AgentView), a pure
// function decides (DecideAgent), and a thin executor runs the typed steps
// it returns (agentexec.go). Each step belongs to a lane; a lane runs one
// batch of steps at a time in its own goroutine, so a slow storage holds up
// the uploads but never the decision to stop receiving, and a hung node
// holds up its own probe but never the uploads.

// Lane is where a step runs.
type Lane int

const (
	LaneNow      Lane = iota // in the decision loop itself: no outside call
	LaneReceiver             // starting pg_receivewal (a slot on the source first)
	LaneSlots                // dropping the slot on nodes the agent left
	LaneWAL                  // uploads of the spool, in order
	LaneBase                 // the catalogue, base backups, retention
	LaneStatus               // the report in the bucket
	LaneDrill                // scheduled restore drills
	laneCount
)

func (l Lane) String() string {
	return [...]string{"now", "receiver", "slots", "wal", "base", "status", "drill"}[l]
}

// AgentStep is one thing the executor does.
type AgentStep interface {
	Lane() Lane
	String() string
}

// The steps.
type (
	// SetPaused stops (Text set) or resumes (Text empty) receiving.
	SetPaused struct {
		Kind PauseKind
		Text string
	}
	// StopReceiver asks pg_receivewal to stop (SIGINT); its exit is seen later.
	StopReceiver struct{ Why string }
	// StartReceiver creates the slot on Source and runs pg_receivewal there;
	// Resume, when set, is the segment where the archive ends (a zeroed
	// partial file of it makes pg_receivewal start there).
	StartReceiver struct {
		Source   Source
		Standby  bool
		Timeline pgops.Timeline
		Resume   *pgops.Segment
	}
	// DropSlot drops the agent's slot on a node it does not stream from.
	DropSlot struct{ Node Source }
	// NoteError records an error in the report (LastError) and the log.
	NoteError struct{ Text string }
	// ClearAfterGap: WAL arrived from the new slot after a gap.
	ClearAfterGap struct{}
	// UploadWAL uploads a finished segment or a history file, then removes
	// it from the spool (and a segment's .partial object from the bucket).
	UploadWAL struct{ File SpoolFile }
	// UploadPartial uploads the segment being written. It reads where the
	// receiver has flushed (the slot) before it reads the file, and records
	// that position as archived when it lies in this segment. Final: an old
	// timeline's last partial, uploaded once more and removed.
	UploadPartial struct {
		File  SpoolFile
		Final bool
	}
	// CheckCaughtUp asks the source whether the receiver has all it has
	// (the partial in the bucket is the file as it is now).
	CheckCaughtUp struct{}
	// RecordGap: the source no longer has WAL the archive needs. Partial
	// files go, the slot is made again, and a new base backup follows.
	RecordGap struct {
		Source string
		Text   string
	}
	// RefreshCatalog lists the bucket for the base backup schedule.
	RefreshCatalog struct{}
	// BaseBackup takes a base backup from Source.
	BaseBackup struct{ Source Source }
	// PruneArchive deletes what the policy no longer keeps.
	PruneArchive struct{}
	// WriteStatus writes the report, locally and to the bucket.
	WriteStatus struct{}
	// ReadDrills reads the last drill record and the catalogue.
	ReadDrills struct{}
	// RunDrill restores the latest backup into scratch space and checks it.
	RunDrill struct{}
)

func (SetPaused) Lane() Lane      { return LaneNow }
func (StopReceiver) Lane() Lane   { return LaneNow }
func (NoteError) Lane() Lane      { return LaneNow }
func (ClearAfterGap) Lane() Lane  { return LaneNow }
func (StartReceiver) Lane() Lane  { return LaneReceiver }
func (DropSlot) Lane() Lane       { return LaneSlots }
func (UploadWAL) Lane() Lane      { return LaneWAL }
func (UploadPartial) Lane() Lane  { return LaneWAL }
func (CheckCaughtUp) Lane() Lane  { return LaneWAL }
func (RecordGap) Lane() Lane      { return LaneWAL }
func (RefreshCatalog) Lane() Lane { return LaneBase }
func (BaseBackup) Lane() Lane     { return LaneBase }
func (PruneArchive) Lane() Lane   { return LaneBase }
func (WriteStatus) Lane() Lane    { return LaneStatus }
func (ReadDrills) Lane() Lane     { return LaneDrill }
func (RunDrill) Lane() Lane       { return LaneDrill }

func (s SetPaused) String() string {
	if s.Text == "" {
		return "resume receiving"
	}
	return "pause receiving: " + s.Text
}
func (s StopReceiver) String() string { return "stop pg_receivewal: " + s.Why }
func (s StartReceiver) String() string {
	role := "primary"
	if s.Standby {
		role = "standby"
	}
	r := ""
	if s.Resume != nil {
		r = fmt.Sprintf(", resuming at segment %d of timeline %d", s.Resume.No, s.Resume.TLI)
	}
	return fmt.Sprintf("stream WAL from %s (%s, timeline %d)%s", s.Source.Name, role, s.Timeline, r)
}
func (s DropSlot) String() string    { return "drop the backup slot on " + s.Node.Name }
func (s NoteError) String() string   { return "note: " + s.Text }
func (ClearAfterGap) String() string { return "WAL flows from the new slot" }
func (s UploadWAL) String() string   { return "upload " + s.File.Name }
func (s UploadPartial) String() string {
	if s.Final {
		return "upload the last of " + s.File.Name
	}
	return "upload " + s.File.Name
}
func (CheckCaughtUp) String() string  { return "check the archive has all the source has" }
func (s RecordGap) String() string    { return "record a gap: " + s.Text }
func (RefreshCatalog) String() string { return "read the catalogue" }
func (s BaseBackup) String() string   { return "take a base backup from " + s.Source.Name }
func (PruneArchive) String() string   { return "apply retention" }
func (WriteStatus) String() string    { return "write the report" }
func (ReadDrills) String() string     { return "read the last drill" }
func (RunDrill) String() string       { return "run a restore drill" }

// PauseKind says why receiving stopped.
type PauseKind string

const (
	PausedSpoolCap  PauseKind = "spool-cap"  // too much WAL waits for the storage
	PausedSpoolDisk PauseKind = "spool-disk" // the spool's file system is nearly full
)

// SpoolFile is one WAL file in the spool.
type SpoolFile struct {
	Name    string
	Seg     pgops.Segment
	History bool
	Partial bool
	Size    int64
	MTime   time.Time
}

// SlotSeen is whether a node holds the agent's slot.
type SlotSeen int

const (
	SlotUnknown SlotSeen = iota // the node could not say (READ_REPLICATION_SLOT needs PostgreSQL 15)
	SlotAbsent
	SlotPresent
)

// NodeSeen is what the last probe of one source said.
type NodeSeen struct {
	Source   Source
	At       time.Time // when it last answered (zero: never)
	Err      string    // the last failed probe, when it failed after At
	ErrAt    time.Time
	Standby  bool
	SystemID string
	Timeline pgops.Timeline
	XLogPos  pgops.LSN
	SegSize  uint64
	Slot     SlotSeen
}

// Answering: the node answered its last probe, recently.
func (n NodeSeen) Answering(now time.Time, fresh time.Duration) bool {
	return !n.At.IsZero() && now.Sub(n.At) <= fresh && !n.ErrAt.After(n.At)
}

// ReceiverSeen is pg_receivewal as the executor last saw it.
type ReceiverSeen struct {
	Running  bool
	Source   string
	Standby  bool // the source was a standby when streaming began
	Timeline pgops.Timeline
	Since    time.Time
	Stopping bool // asked to stop, not exited yet

	Failures     int // consecutive starts or runs that failed
	LastExit     time.Time
	LastExitText string
	FailedOn     map[string]time.Time // source → when it last failed there
	DroppedOn    map[string]bool      // slots dropped elsewhere during this run
	DropFailedAt map[string]time.Time // node → when dropping the slot there last failed
	Gap          string               // pg_receivewal said WAL it needs is gone (not yet recorded)
}

// CatalogSeen is what the last listing for the schedule said.
type CatalogSeen struct {
	ReadAt time.Time
	Err    string
	ErrAt  time.Time
	Bases  int
	Newest time.Time // the newest base backup's finish
}

// DrillSeen is what the last read of the drill records said.
type DrillSeen struct {
	ReadAt time.Time
	Err    string
	Last   *DrillRecord
	Bases  int
}

// AgentView is everything DecideAgent decides on.
type AgentView struct {
	Now       time.Time
	Stopping  bool // the last round: upload everything now
	Nodes     []NodeSeen
	Receiver  ReceiverSeen
	Spool     []SpoolFile // history files first, then segments in order
	SpoolFree int64       // bytes free on the spool's file system; -1 unknown
	// The newest partial uploaded, and its modification time then.
	UploadedPartial      string
	UploadedPartialMTime time.Time
	Status               AgentStatus
	NeedBase, AfterGap   bool
	Rechoose             bool
	Busy                 [laneCount]bool
	UploadFailures       int
	UploadFailedAt       time.Time
	CaughtUpCheckedAt    time.Time // the last CheckCaughtUp, whatever it found
	Catalog              CatalogSeen
	BaseTriedAt          time.Time
	BaseErr              string
	StatusWrittenAt      time.Time
	Drill                DrillSeen
}

// AgentPolicy is the agent's configuration as the decisions need it.
type AgentPolicy struct {
	SpoolCap     int64
	PartialEvery time.Duration
	BaseEvery    time.Duration
	DrillEvery   time.Duration // 0: no scheduled drills
	SegSize      uint64

	ProbeFresh   time.Duration // a probe this old still counts
	SourceStall  time.Duration // a source silent this long is left
	SettleFor    time.Duration // streaming this long before slots elsewhere are dropped and a base backup starts
	FailedFor    time.Duration // a source that failed is avoided this long
	BaseRetry    time.Duration
	CatalogEvery time.Duration
	StatusEvery  time.Duration
	DrillAfter   time.Duration // after the agent starts, the first drill check
	DrillCheck   time.Duration
	UploadRetry  time.Duration // the first retry after a failed upload; doubles up to UploadRetryMax
	UploadRetryMax,
	ReceiveRetryMax time.Duration
}

func (c *AgentConfig) policy() AgentPolicy {
	p := AgentPolicy{SpoolCap: c.SpoolCap, PartialEvery: c.PartialEvery, BaseEvery: c.BaseEvery, SegSize: pgops.DefaultSegSize,
		ProbeFresh: 3 * time.Second, SourceStall: 10 * time.Second, SettleFor: 2 * time.Second, FailedFor: 30 * time.Second,
		BaseRetry: 30 * time.Second, CatalogEvery: 30 * time.Second, StatusEvery: 2 * time.Second,
		DrillAfter: time.Minute, DrillCheck: time.Minute, UploadRetry: 500 * time.Millisecond, UploadRetryMax: 5 * time.Second,
		ReceiveRetryMax: 15 * time.Second}
	if c.Drill != nil {
		p.DrillEvery = c.Drill.Every
	}
	return p
}

// Disk room the spool keeps: receiving pauses below two segments free (a
// new segment is created at full size), and resumes at four.
func (p AgentPolicy) diskLow() int64    { return 2 * int64(p.SegSize) }
func (p AgentPolicy) diskResume() int64 { return 4 * int64(p.SegSize) }

func backoff(first, most time.Duration, failures int) time.Duration {
	d := first
	for i := 1; i < failures && d < most; i++ {
		d *= 2
	}
	return min(d, most)
}

// pending is the size of the finished WAL files waiting for upload.
func pending(spool []SpoolFile) int64 {
	var n int64
	for _, f := range spool {
		if !f.Partial {
			n += f.Size
		}
	}
	return n
}

func pausedText(pending, limit int64) string {
	return fmt.Sprintf("%d MB of WAL is waiting for the storage (cap %d MB): receiving stopped; the source's slot keeps the rest, up to its max_slot_wal_keep_size", pending>>20, limit>>20)
}

func diskText(free int64) string {
	return fmt.Sprintf("the spool's disk is full (%d MB free): receiving stopped; the source's slot keeps the WAL, up to its max_slot_wal_keep_size, until there is room", free>>20)
}

// DecideAgent is the agent's next steps. Pure: the same view gives the same
// steps. Steps of a lane that is busy are not returned.
func DecideAgent(v AgentView, p AgentPolicy) []AgentStep {
	var out []AgentStep
	add := func(s AgentStep) {
		if !v.Busy[s.Lane()] {
			out = append(out, s)
		}
	}
	spoolWaiting := pending(v.Spool)

	// Pausing: the spool's cap and its disk.
	paused := v.Status.Paused != ""
	switch {
	case !paused && spoolWaiting > p.SpoolCap:
		add(SetPaused{PausedSpoolCap, pausedText(spoolWaiting, p.SpoolCap)})
		paused = true
	case !paused && v.SpoolFree >= 0 && v.SpoolFree < p.diskLow():
		add(SetPaused{PausedSpoolDisk, diskText(v.SpoolFree)})
		paused = true
	case paused && v.Status.PausedFor == PausedSpoolDisk && (v.SpoolFree < 0 || v.SpoolFree >= p.diskResume()):
		add(SetPaused{})
		paused = false
	case paused && v.Status.PausedFor != PausedSpoolDisk && spoolWaiting <= p.SpoolCap/2:
		add(SetPaused{})
		paused = false
	}

	out = append(out, decideReceiver(v, p, paused)...)
	if v.AfterGap && len(v.Spool) > 0 {
		add(ClearAfterGap{})
	}
	if !v.Busy[LaneWAL] {
		out = append(out, decideUploads(v, p)...)
	}
	if !v.Busy[LaneBase] {
		out = append(out, decideBase(v, p)...)
	}
	if !v.Busy[LaneStatus] && (v.Stopping || v.Now.Sub(v.StatusWrittenAt) >= p.StatusEvery) {
		out = append(out, WriteStatus{})
	}
	if !v.Busy[LaneDrill] && p.DrillEvery > 0 && !v.Stopping && v.Now.Sub(v.Status.Started) >= p.DrillAfter {
		switch {
		case v.Now.Sub(v.Drill.ReadAt) >= p.DrillCheck:
			out = append(out, ReadDrills{})
		case v.Drill.Err == "" && DrillDue(v.Drill.Last, v.Drill.Bases, p.DrillEvery, v.Now):
			out = append(out, RunDrill{})
		}
	}
	return out
}

func (v AgentView) node(name string) (NodeSeen, bool) {
	for _, n := range v.Nodes {
		if n.Source.Name == name {
			return n, true
		}
	}
	return NodeSeen{}, false
}

// chooseFrom picks where to stream from among the nodes that answer: a
// standby on the newest timeline, else the primary (ChooseSource), leaving
// out a node that failed recently while another answers.
func chooseFrom(v AgentView, p AgentPolicy) (NodeSeen, bool) {
	var ok, fallback []Chosen
	byName := map[string]NodeSeen{}
	for _, n := range v.Nodes {
		if !n.Answering(v.Now, p.ProbeFresh) {
			continue
		}
		byName[n.Source.Name] = n
		c := Chosen{Source: n.Source, Info: pgops.ReplicationInfo{Standby: n.Standby, SystemID: n.SystemID, Timeline: n.Timeline, XLogPos: n.XLogPos, SegSize: n.SegSize}}
		if at, failed := v.Receiver.FailedOn[n.Source.Name]; failed && v.Now.Sub(at) < p.FailedFor {
			fallback = append(fallback, c)
			continue
		}
		ok = append(ok, c)
	}
	c, found := ChooseSource(ok)
	if !found {
		c, found = ChooseSource(fallback)
	}
	return byName[c.Source.Name], found
}

func decideReceiver(v AgentView, p AgentPolicy, paused bool) []AgentStep {
	r := v.Receiver
	var out []AgentStep
	if !r.Running {
		if paused || v.Stopping || v.Busy[LaneReceiver] || r.Gap != "" {
			return nil
		}
		// At the start, every node is heard from (or ProbeFresh passes)
		// before one is chosen: else the first to answer, the primary
		// maybe, would be.
		if v.Now.Sub(v.Status.Started) < p.ProbeFresh {
			for _, n := range v.Nodes {
				if n.At.IsZero() && n.ErrAt.IsZero() {
					return nil
				}
			}
		}
		if r.Failures > 0 && v.Now.Sub(r.LastExit) < backoff(time.Second, p.ReceiveRetryMax, r.Failures) {
			return nil
		}
		n, ok := chooseFrom(v, p)
		if !ok {
			var errs []string
			for _, n := range v.Nodes {
				e := n.Err
				if e == "" {
					e = "no answer yet"
				}
				errs = append(errs, n.Source.Name+": "+e)
			}
			if text := "no node answered a replication login: " + strings.Join(errs, "; "); v.Status.LastError != text {
				out = append(out, NoteError{text})
			}
			return out
		}
		return []AgentStep{StartReceiver{Source: n.Source, Standby: n.Standby, Timeline: n.Timeline, Resume: resumePoint(v, p)}}
	}
	if r.Stopping {
		return nil
	}
	stop := func(why string) []AgentStep { return []AgentStep{StopReceiver{why}} }
	switch {
	case paused:
		return stop("receiving is paused")
	case v.Stopping:
		return stop("the agent is stopping")
	case v.Rechoose:
		return stop("asked to choose its source again")
	}
	src, _ := v.node(r.Source)
	if !src.Answering(v.Now, p.ProbeFresh) {
		if last := later(src.At, r.Since); v.Now.Sub(last) >= p.SourceStall {
			return stop(fmt.Sprintf("%s has not answered for %s", r.Source, v.Now.Sub(last).Round(time.Second)))
		}
	} else if !src.Standby {
		// The source is a primary (it was promoted, or no standby answered
		// when streaming began): move as soon as a standby answers.
		if n, ok := chooseFrom(v, p); ok && n.Standby && n.Source.Name != r.Source {
			why := fmt.Sprintf("%s is a standby and %s is not: moving there", n.Source.Name, r.Source)
			if r.Standby {
				why = fmt.Sprintf("%s was promoted; %s is a standby: moving there", r.Source, n.Source.Name)
			}
			return stop(why)
		}
	}
	// Streaming settled: the slot goes from every other node.
	if v.Now.Sub(r.Since) >= p.SettleFor && !v.Busy[LaneSlots] {
		for _, n := range v.Nodes {
			if n.Source.Name == r.Source || !n.Answering(v.Now, p.ProbeFresh) {
				continue
			}
			if at, failed := r.DropFailedAt[n.Source.Name]; failed && v.Now.Sub(at) < slotDropRetry {
				continue // a node that just refused (stopping, say): not again on every tick
			}
			if n.Slot == SlotPresent || n.Slot == SlotUnknown && !r.DroppedOn[n.Source.Name] {
				out = append(out, DropSlot{n.Source})
			}
		}
	}
	return out
}

// slotDropRetry is how long a failed drop of the slot on a node waits
// before the next try: the probe may still call a node answering that has
// just stopped, and a lane that fails at once would otherwise try again on
// every turn of the loop.
const slotDropRetry = 2 * time.Second

// resumePoint is where pg_receivewal must start so nothing is skipped:
// with an empty spool it would start at the slot's restart_lsn, or, for an
// invalidated slot, at the server's current position. So the segment that
// holds what the archive has last (ArchivedLSN) is named, unless WAL was
// lost (a gap: the new slot's position is the new start) or nothing was
// archived yet (the slot's position is the start).
func resumePoint(v AgentView, p AgentPolicy) *pgops.Segment {
	if len(v.Spool) > 0 || v.AfterGap || v.Status.ArchivedLSN == 0 || v.Status.ArchivedTLI == 0 {
		return nil
	}
	s := pgops.SegmentOf(v.Status.ArchivedTLI, v.Status.ArchivedLSN, p.SegSize)
	return &s
}

func decideUploads(v AgentView, p AgentPolicy) []AgentStep {
	force := v.Stopping || v.Receiver.Gap != ""
	if !v.Stopping && v.UploadFailures > 0 && v.Now.Sub(v.UploadFailedAt) < backoff(p.UploadRetry, p.UploadRetryMax, v.UploadFailures) {
		if v.Receiver.Gap != "" {
			// The storage fails: the gap is recorded without uploading the
			// last partial (its WAL cannot be continued anyway).
			return []AgentStep{RecordGap{Source: v.Receiver.Source, Text: v.Receiver.Gap}}
		}
		return nil
	}
	var out []AgentStep
	newest := -1
	for i, f := range v.Spool {
		if f.Partial {
			newest = i
		}
	}
	for i, f := range v.Spool {
		switch {
		case !f.Partial:
			out = append(out, UploadWAL{f})
		case i != newest:
			// A partial no longer written (the end of an old timeline).
			out = append(out, UploadPartial{File: f, Final: true})
		default:
			seen := v.UploadedPartial == f.Name
			switch {
			case seen && !f.MTime.After(v.UploadedPartialMTime):
				if v.Now.Sub(v.CaughtUpCheckedAt) >= p.PartialEvery {
					out = append(out, CheckCaughtUp{})
				}
			case force || !seen || v.Now.Sub(v.Status.LastPartialAt) >= p.PartialEvery:
				out = append(out, UploadPartial{File: f})
			}
		}
	}
	if newest < 0 && len(out) == 0 && v.UploadFailures == 0 && v.Receiver.Running && v.Now.Sub(v.CaughtUpCheckedAt) >= p.PartialEvery {
		out = append(out, CheckCaughtUp{}) // nothing written since the last segment ended
	}
	if v.Receiver.Gap != "" {
		out = append(out, RecordGap{Source: v.Receiver.Source, Text: v.Receiver.Gap})
	}
	return out
}

func decideBase(v AgentView, p AgentPolicy) []AgentStep {
	if v.Stopping {
		return nil
	}
	c := v.Catalog
	need := v.NeedBase
	if !need && v.Now.Sub(later(c.ReadAt, c.ErrAt)) >= p.CatalogEvery {
		return []AgentStep{RefreshCatalog{}}
	}
	if !need && c.Err == "" && !c.ReadAt.IsZero() {
		need = c.Bases == 0 || v.Now.Sub(c.Newest) > p.BaseEvery
	}
	if !need || v.Now.Sub(v.Status.Started) < p.SettleFor || (v.BaseErr != "" && v.Now.Sub(v.BaseTriedAt) < p.BaseRetry) {
		return nil
	}
	// From the node WAL streams from, once it has streamed a moment; else
	// from the node the receiver would pick.
	src, ok := Source{}, false
	if r := v.Receiver; r.Running && !r.Stopping && v.Now.Sub(r.Since) >= p.SettleFor {
		if n, found := v.node(r.Source); found {
			src, ok = n.Source, true
		}
	} else if !r.Running && v.Status.Paused == "" {
		if n, found := chooseFrom(v, p); found {
			src, ok = n.Source, true
		}
	}
	if !ok {
		return nil
	}
	return []AgentStep{BaseBackup{src}, PruneArchive{}}
}

// raiseArchived moves the report's archived position forward, never back
// (orEqual: the same position read again at a later time moves the time).
func raiseArchived(s *AgentStatus, tli pgops.Timeline, lsn pgops.LSN, at time.Time, orEqual bool) bool {
	if tli > s.ArchivedTLI || tli == s.ArchivedTLI && (lsn > s.ArchivedLSN || orEqual && lsn == s.ArchivedLSN) {
		s.ArchivedLSN, s.ArchivedTLI = lsn, tli
		if !at.IsZero() {
			s.ArchivedAt = at
		}
		return true
	}
	return false
}

// claimable: a position read from the slot is proof of what a partial
// file holds only when it lies inside that segment (or at its end).
func claimable(seg pgops.Segment, tli pgops.Timeline, lsn pgops.LSN, segSize uint64) bool {
	return tli == seg.TLI && (uint64(lsn)/segSize == seg.No || uint64(lsn) == (seg.No+1)*segSize)
}

// sortSpool orders the spool: history files first (a restore needs them
// before the new timeline's WAL), then segments in order.
func sortSpool(out []SpoolFile) {
	sort.Slice(out, func(i, j int) bool {
		if out[i].History != out[j].History {
			return out[i].History
		}
		if out[i].Seg.No != out[j].Seg.No {
			return out[i].Seg.No < out[j].Seg.No
		}
		return out[i].Seg.TLI < out[j].Seg.TLI
	})
}

// isGapText: pg_receivewal's words for WAL the server no longer has.
func isGapText(msg string) bool {
	return strings.Contains(msg, "has already been removed") || strings.Contains(msg, "invalidated")
}
