package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/understudy-dev/understudy/internal/version"
	"github.com/understudy-dev/understudy/pgops"
)

// Source is a node the agent may stream from.
type Source struct {
	Name string `json:"name"`
	Host string `json:"host"` // an address, or a socket directory
	Port int    `json:"port"`
}

// DefaultSlot is the agent's replication slot, created on the node it
// streams from (a standby when one is up, so the primary keeps nothing).
// A role change that makes that standby a primary should drop it there
// once the agent has moved (the agent drops it too, within seconds of
// streaming from the new standby; Agent.Rechoose makes it move at once).
const DefaultSlot = "understudy_backup"

// AgentConfig is what the agent runs with. Secrets are not in it: the
// password reaches PostgreSQL's tools through PGPASSFILE in Env.
type AgentConfig struct {
	Sources      []Source
	User         string   // a role with REPLICATION
	Env          []string // extra environment for pg_receivewal/pg_basebackup (PGPASSFILE=...)
	BinDir       string   // where pg_receivewal and pg_basebackup are
	Spool        string   // local directory for WAL not yet uploaded
	Slot         string
	SpoolCap     int64         // stop receiving when this much is waiting for upload
	PartialEvery time.Duration // how often the segment being written is uploaded (with one upload, the RPO); default 500 ms
	BaseEvery    time.Duration // a new base backup when the newest is older
	Policy       Policy
	Drill        *DrillSchedule // scheduled restore drills, or nil
	Log          io.Writer
	Version      version.Build // reported in AgentStatus; default: this process's build
	// BaseStall: a base backup whose pg_basebackup sends nothing this long
	// is stopped; default 2 minutes.
	BaseStall time.Duration
}

func (c *AgentConfig) defaults() {
	if c.Slot == "" {
		c.Slot = DefaultSlot
	}
	if c.SpoolCap == 0 {
		c.SpoolCap = 1 << 30
	}
	if c.PartialEvery == 0 {
		c.PartialEvery = 500 * time.Millisecond // the RPO is this plus one upload
	}
	if c.BaseEvery == 0 {
		c.BaseEvery = 24 * time.Hour
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	if c.Version.IsZero() {
		c.Version = version.Info()
	}
	if c.BaseStall == 0 {
		c.BaseStall = 2 * time.Minute
	}
}

// AgentStatus is what the agent reports, to the bucket (agent/status.json)
// and to its spool directory. It holds no secret.
type AgentStatus struct {
	Updated        time.Time `json:"updated"`
	Started        time.Time `json:"started"`
	Source         string    `json:"source,omitempty"`
	SourceStandby  bool      `json:"source_standby,omitempty"`
	Receiving      bool      `json:"receiving"`
	Paused         string    `json:"paused,omitempty"`
	LastArchived   string    `json:"last_archived,omitempty"`
	LastArchivedAt time.Time `json:"last_archived_at,omitzero"`
	LastPartialAt  time.Time `json:"last_partial_at,omitzero"`
	// ArchivedLSN: the archive holds all WAL up to here (on the source's
	// timeline), measured before the upload that holds it was read.
	ArchivedLSN pgops.LSN      `json:"archived_lsn,omitempty"`
	ArchivedTLI pgops.Timeline `json:"archived_timeline,omitempty"`
	ArchivedAt  time.Time      `json:"archived_at,omitzero"` // when the upload that proved ArchivedLSN read its file
	// CaughtUpAt: at this time the archive held all the source had
	// (CaughtUpLSN): a restore can reach it even when nothing was written since.
	CaughtUpAt    time.Time      `json:"caught_up_at,omitzero"`
	CaughtUpLSN   pgops.LSN      `json:"caught_up_lsn,omitempty"`
	CaughtUpTLI   pgops.Timeline `json:"caught_up_timeline,omitempty"`
	PausedFor     PauseKind      `json:"paused_for,omitempty"`
	SpoolBytes    int64          `json:"spool_bytes"`
	SpoolCap      int64          `json:"spool_cap"`
	LastError     string         `json:"last_error,omitempty"`
	LastErrorAt   time.Time      `json:"last_error_at,omitzero"`
	UploadError   string         `json:"upload_error,omitempty"`
	Gap           string         `json:"gap,omitempty"` // a hole not yet closed by a new base backup
	GapAt         time.Time      `json:"gap_at,omitzero"`
	LastGap       string         `json:"last_gap,omitempty"` // the most recent hole, kept after it closed
	LastGapAt     time.Time      `json:"last_gap_at,omitzero"`
	LastBase      string         `json:"last_base,omitempty"`
	LastBaseError string         `json:"last_base_error,omitempty"`
	Recipient     string         `json:"recipient"`
	Understudy    version.Build  `json:"understudy,omitzero"` // the agent's build
}

// Agent streams WAL with pg_receivewal into a spool, uploads it sealed,
// takes base backups on schedule, and applies retention. It observes
// (observe), decides (DecideAgent, pure) and runs the steps (agentexec.go).
type Agent struct {
	cfg   AgentConfig
	pol   AgentPolicy
	store Store
	key   *Key
	wake  chan struct{}

	mu        sync.Mutex
	st        AgentStatus
	nodes     []NodeSeen // one per cfg.Sources, in order
	recv      ReceiverSeen
	proc      *receiverProc
	upName    string    // the partial uploaded last
	upMTime   time.Time // and its modification time then
	upEnd     pgops.LSN // and the WAL position its upload ends at (0: the whole file)
	checkedAt time.Time // the last CheckCaughtUp
	needBase  bool
	afterGap  bool // WAL was lost: resume from the new slot, not from the archive's end
	rechoose  bool
	busy      [laneCount]bool
	upFails   int
	upFailAt  time.Time
	walErr    string // the last failed upload round ("" after one that worked)
	statusErr string // the last failed report write
	catalog   CatalogSeen
	baseTried time.Time
	baseErr   string
	statusAt  time.Time
	drill     DrillSeen

	probe    *pgconn.PgConn // the WAL lane's: a replication connection to probeFor, for READ_REPLICATION_SLOT
	probeFor Source
	segGen   int                   // under mu: bumped when a receiver starts or a gap is recorded
	segs     map[string]*segSealer // the WAL lane's: segments sealed in part
	scratch  []byte                // the WAL lane's
	sealBuf  bytes.Buffer          // the WAL lane's
}

// NewAgent makes an agent.
func NewAgent(cfg AgentConfig, store Store, key *Key) *Agent {
	cfg.defaults()
	now := time.Now()
	a := &Agent{cfg: cfg, pol: cfg.policy(), store: store, key: key, wake: make(chan struct{}, 1),
		st: AgentStatus{Started: now, Updated: now, SpoolCap: cfg.SpoolCap, Recipient: key.Recipient(), Understudy: cfg.Version}}
	for _, s := range cfg.Sources {
		a.nodes = append(a.nodes, NodeSeen{Source: s})
	}
	a.recv.FailedOn = map[string]time.Time{}
	a.recv.DropFailedAt = map[string]time.Time{}
	a.segs = map[string]*segSealer{}
	return a
}

// Status is a copy of the agent's status.
func (a *Agent) Status() AgentStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st
}

// Rechoose makes the agent choose its source again now (a role change has
// made the node it streams from a primary, say): it stops pg_receivewal and
// starts it on the node DecideAgent picks, which then loses nothing (the
// spool holds where it was). The `backup agent` command calls it on SIGHUP.
func (a *Agent) Rechoose() {
	a.mu.Lock()
	a.rechoose = true
	a.mu.Unlock()
	a.poke()
}

func (a *Agent) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *Agent) update(f func(*AgentStatus)) {
	a.mu.Lock()
	f(&a.st)
	a.st.Updated = time.Now()
	a.mu.Unlock()
}

func (a *Agent) logf(format string, args ...any) {
	fmt.Fprintf(a.cfg.Log, "%s understudy backup agent: %s\n", time.Now().UTC().Format("2006-01-02 15:04:05.000"), fmt.Sprintf(format, args...))
}

// agentTick is how often the agent observes and decides (and sooner when a
// lane ends or a probe sees a change): the spool is checked often, since on
// a fast link pg_receivewal writes 100 MB/s or more and the cap should hold
// within ten or so MB.
const agentTick = 100 * time.Millisecond

// agentQuietTick is the loop's pace while no WAL has been written for a
// second: what comes due then (a check that the archive is caught up, the
// report) comes every 500 ms or more, and the first write after a quiet
// spell waits at most this long.
const agentQuietTick = 250 * time.Millisecond

func nextTick(v AgentView) time.Duration {
	for _, f := range v.Spool {
		if v.Now.Sub(f.MTime) < time.Second {
			return agentTick
		}
	}
	return agentQuietTick
}

// Run works until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	if err := os.MkdirAll(a.cfg.Spool, 0o700); err != nil {
		return fmt.Errorf("making the spool %s: %w", a.cfg.Spool, err)
	}
	a.logf("starting: sources %s, spool %s (cap %d MB), key %s", sourceNames(a.cfg.Sources), a.cfg.Spool, a.cfg.SpoolCap>>20, a.key.Recipient())
	var probes, lanes sync.WaitGroup
	for i := range a.cfg.Sources {
		probes.Add(1)
		go func() { defer probes.Done(); a.probeLoop(ctx, i) }()
	}
	t := time.NewTimer(agentTick)
	defer t.Stop()
	for ctx.Err() == nil {
		v := a.observe(false)
		a.dispatch(ctx, DecideAgent(v, a.pol), &lanes)
		t.Reset(nextTick(v))
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-a.wake:
		}
	}
	// A last round, so a clean stop leaves nothing behind: pg_receivewal
	// stops first (its partial file is then complete), the lanes end (their
	// calls were given ctx), then the spool is uploaded and the report written.
	a.stopReceiver("the agent is stopping")
	a.waitReceiver(15 * time.Second)
	lanes.Wait()
	probes.Wait()
	final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	steps := DecideAgent(a.observe(true), a.pol)
	for _, lane := range []Lane{LaneWAL, LaneStatus} {
		var batch []AgentStep
		for _, s := range steps {
			if s.Lane() == lane {
				batch = append(batch, s)
			}
		}
		a.runBatch(final, lane, batch)
	}
	if a.probe != nil {
		a.probe.Close(final)
		a.probe = nil
	}
	return nil
}

// dispatch runs LaneNow steps here and starts one goroutine per other lane
// with its batch; DecideAgent returned nothing for a busy lane.
func (a *Agent) dispatch(ctx context.Context, steps []AgentStep, lanes *sync.WaitGroup) {
	var batches [laneCount][]AgentStep
	for _, s := range steps {
		if s.Lane() == LaneNow {
			a.execNow(s)
			continue
		}
		batches[s.Lane()] = append(batches[s.Lane()], s)
	}
	for lane, batch := range batches {
		if len(batch) == 0 {
			continue
		}
		a.mu.Lock()
		a.busy[lane] = true
		a.mu.Unlock()
		lanes.Add(1)
		go func() {
			defer lanes.Done()
			a.runBatch(ctx, Lane(lane), batch)
			a.mu.Lock()
			a.busy[lane] = false
			a.mu.Unlock()
			a.poke()
		}()
	}
}

// observe reads the spool and its disk, and copies what the executor and
// the probes recorded: an AgentView for DecideAgent.
func (a *Agent) observe(stopping bool) AgentView {
	spool := a.readSpool()
	free := int64(-1)
	var fs syscall.Statfs_t
	if err := syscall.Statfs(a.cfg.Spool, &fs); err == nil {
		free = int64(fs.Bavail) * int64(fs.Bsize)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.st.SpoolBytes = pending(spool)
	r := a.recv
	r.FailedOn = cloneMap(a.recv.FailedOn)
	r.DroppedOn = cloneMap(a.recv.DroppedOn)
	r.DropFailedAt = cloneMap(a.recv.DropFailedAt)
	return AgentView{Now: time.Now(), Stopping: stopping, Nodes: append([]NodeSeen(nil), a.nodes...), Receiver: r,
		Spool: spool, SpoolFree: free, UploadedPartial: a.upName, UploadedPartialMTime: a.upMTime, Status: a.st,
		NeedBase: a.needBase, AfterGap: a.afterGap, Rechoose: a.rechoose, Busy: a.busy,
		UploadFailures: a.upFails, UploadFailedAt: a.upFailAt, CaughtUpCheckedAt: a.checkedAt, Catalog: a.catalog, BaseTriedAt: a.baseTried, BaseErr: a.baseErr,
		StatusWrittenAt: a.statusAt, Drill: a.drill}
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// probeEvery: each source is asked once a second who it is (standby or
// primary, timeline, position) and whether it holds the agent's slot, over
// a replication connection held open; each probe has its own deadline, so a
// node that hangs is seen as not answering.
const (
	probeEvery   = time.Second
	probeTimeout = 3 * time.Second
	connTimeout  = 5 * time.Second
)

func (a *Agent) probeLoop(ctx context.Context, i int) {
	src := a.cfg.Sources[i]
	var pc *pgconn.PgConn
	defer func() {
		if pc != nil {
			pc.Close(context.WithoutCancel(ctx))
		}
	}()
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	for ctx.Err() == nil {
		n, err := a.probeNode(ctx, &pc, src)
		a.mu.Lock()
		old := a.nodes[i]
		if err != nil {
			a.nodes[i].Err, a.nodes[i].ErrAt = err.Error(), time.Now()
		} else {
			a.nodes[i] = n
			if old.At.IsZero() || old.ErrAt.After(old.At) {
				// Back after failing (restarted, say): a fresh candidate.
				delete(a.recv.FailedOn, src.Name)
			}
			if a.recv.Running && a.recv.Source == src.Name && a.st.SourceStandby != n.Standby {
				a.st.SourceStandby, a.st.Updated = n.Standby, time.Now() // promoted while streaming
			}
		}
		changed := err == nil && (old.Standby != n.Standby || old.Timeline != n.Timeline || old.At.IsZero()) || err != nil && old.ErrAt.Before(old.At)
		a.mu.Unlock()
		if changed {
			a.poke()
		}
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
}

func (a *Agent) probeNode(ctx context.Context, pc **pgconn.PgConn, src Source) (NodeSeen, error) {
	if *pc == nil {
		cctx, cancel := context.WithTimeout(ctx, connTimeout)
		c, err := a.cfg.replConnect(cctx, src)
		cancel()
		if err != nil {
			return NodeSeen{}, waited(err, cctx, "connecting to "+src.Name, connTimeout)
		}
		*pc = c
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	a.mu.Lock()
	var segSize uint64
	for _, n := range a.nodes {
		if n.Source == src && n.ErrAt.Before(n.At) {
			segSize = n.SegSize // this connection's server said it already
		}
	}
	a.mu.Unlock()
	n, err := probe(pctx, *pc, src, a.cfg.Slot, segSize)
	if err != nil {
		(*pc).Close(context.WithoutCancel(ctx))
		*pc = nil
		return n, waited(err, pctx, "asking "+src.Name+" who it is", probeTimeout)
	}
	return n, nil
}

func probe(ctx context.Context, pc *pgconn.PgConn, src Source, slot string, segSize uint64) (NodeSeen, error) {
	at := time.Now()
	var ri pgops.ReplicationInfo
	var err error
	if segSize == 0 {
		ri, err = pgops.IdentifyReplication(ctx, pc)
	} else {
		ri, err = pgops.IdentifySystem(ctx, pc)
		ri.SegSize = segSize
	}
	if err != nil {
		return NodeSeen{}, err
	}
	standby, err := pgops.InHotStandby(ctx, pc)
	if err != nil {
		return NodeSeen{}, err
	}
	n := NodeSeen{Source: src, At: at, Standby: standby, SystemID: ri.SystemID, Timeline: ri.Timeline, XLogPos: ri.XLogPos, SegSize: ri.SegSize}
	if has, err := pgops.SlotExists(ctx, pc, slot); err == nil {
		n.Slot = SlotAbsent
		if has {
			n.Slot = SlotPresent
		}
	} else if ctx.Err() != nil {
		return NodeSeen{}, err
	}
	return n, nil
}

// waited names what a call that ran out of time waited for.
func waited(err error, ctx context.Context, what string, d time.Duration) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%s: no answer in %s", what, d)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func sourceNames(ss []Source) string {
	var n []string
	for _, s := range ss {
		n = append(n, s.Name)
	}
	return strings.Join(n, ",")
}

// replConninfo is a libpq connection string for one source. It names no
// password (PGPASSFILE does).
func (c *AgentConfig) replConninfo(s Source, app string) string {
	return fmt.Sprintf("host=%s port=%d user=%s application_name=%s connect_timeout=5", quoteConn(s.Host), s.Port, quoteConn(c.User), app)
}

func quoteConn(v string) string {
	if v != "" && !strings.ContainsAny(v, ` '\`) {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// Chosen is the node the agent streams from, and what it said.
type Chosen struct {
	Source Source
	Info   pgops.ReplicationInfo
}

// identify asks one source who it is, within connTimeout.
func (c *AgentConfig) identify(ctx context.Context, s Source) (pgops.ReplicationInfo, error) {
	ictx, cancel := context.WithTimeout(ctx, connTimeout)
	defer cancel()
	pc, err := c.replConnect(ictx, s)
	if err != nil {
		return pgops.ReplicationInfo{}, waited(err, ictx, "connecting to "+s.Name, connTimeout)
	}
	defer pc.Close(context.WithoutCancel(ctx))
	ri, err := pgops.IdentifyReplication(ictx, pc)
	if err != nil {
		return ri, waited(err, ictx, "asking "+s.Name+" who it is", connTimeout)
	}
	if standby, err := pgops.InHotStandby(ictx, pc); err == nil {
		ri.Standby = standby
	}
	return ri, nil
}

// Choose connects to every source and picks a standby when one answers,
// else the primary (ChooseSource, pure).
func (c *AgentConfig) Choose(ctx context.Context) (Chosen, []Source, error) {
	var found []Chosen
	var errs []string
	for _, s := range c.Sources {
		ri, err := c.identify(ctx, s)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		found = append(found, Chosen{Source: s, Info: ri})
	}
	ch, ok := ChooseSource(found)
	if !ok {
		return Chosen{}, nil, fmt.Errorf("no node answered a replication login: %s", strings.Join(errs, "; "))
	}
	var others []Source
	for _, f := range found {
		if f.Source.Name != ch.Source.Name {
			others = append(others, f.Source)
		}
	}
	return ch, others, nil
}

// ChooseSource prefers a standby on the newest timeline, then the primary.
func ChooseSource(found []Chosen) (Chosen, bool) {
	if len(found) == 0 {
		return Chosen{}, false
	}
	best := found[0]
	for _, f := range found[1:] {
		if f.Info.Standby && !best.Info.Standby || f.Info.Standby == best.Info.Standby && f.Info.Timeline > best.Info.Timeline {
			best = f
		}
	}
	return best, true
}

// replConnect opens a physical replication connection (replication=true)
// to a source. The password comes from the same passfile the tools get
// (PGPASSFILE in Env), which pgconn reads as libpq does; dbname is
// "replication", the name libpq matches passfile lines against for such
// a connection.
func (c *AgentConfig) replConnect(ctx context.Context, s Source) (*pgconn.PgConn, error) {
	conninfo := c.replConninfo(s, "understudy-backup-probe") + " replication=true dbname=replication"
	for _, kv := range c.Env {
		if f, ok := strings.CutPrefix(kv, "PGPASSFILE="); ok {
			conninfo += " passfile=" + quoteConn(f)
		}
	}
	cfg, err := pgconn.ParseConfig(conninfo)
	if err != nil {
		return nil, err
	}
	return pgconn.ConnectConfig(ctx, cfg)
}

type limited struct {
	w io.Writer
	n int
}

func (l *limited) Write(p []byte) (int, error) {
	if l.n <= 0 {
		return len(p), nil
	}
	q := p
	if len(q) > l.n {
		q = q[:l.n]
	}
	l.n -= len(q)
	l.w.Write(q)
	return len(p), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " / ")
}

func (a *Agent) readSpool() []SpoolFile {
	entries, _ := os.ReadDir(a.cfg.Spool)
	var out []SpoolFile
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		name := e.Name()
		base, partial := strings.CutSuffix(name, partialSuffix)
		f := SpoolFile{Name: name, Partial: partial, Size: info.Size(), MTime: info.ModTime()}
		if tli, ok := pgops.ParseHistoryFileName(base); ok && !partial {
			f.History, f.Seg = true, pgops.Segment{TLI: tli}
		} else if seg, ok := pgops.ParseSegmentName(base, a.segSize()); ok {
			f.Seg = seg
		} else {
			continue
		}
		out = append(out, f)
	}
	sortSpool(out)
	return out
}

func (a *Agent) segSize() uint64 { return pgops.DefaultSegSize }

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func orNone(s string) string {
	if s == "" {
		return "the start"
	}
	return s
}

// ApplyRetention reads the catalogue, decides with Retain and deletes.
func ApplyRetention(ctx context.Context, s Store, p Policy, now time.Time) (int, error) {
	cat, err := ReadCatalog(ctx, s)
	if err != nil {
		return 0, err
	}
	_, del := Retain(cat, p, now)
	for i, k := range del {
		if err := s.Delete(ctx, k); err != nil {
			return i, err
		}
	}
	return len(del), nil
}

// ReadAgentStatus reads the status the agent last stored.
func ReadAgentStatus(ctx context.Context, s Store) (AgentStatus, error) {
	var st AgentStatus
	err := getJSON(ctx, s, statusKey, &st)
	if errors.Is(err, ErrNotFound) {
		return st, fmt.Errorf("the backup agent has not reported yet (no %s in the bucket): is it running?", statusKey)
	}
	return st, err
}
