package backup

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
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
// takes base backups on schedule, and applies retention.
type Agent struct {
	cfg   AgentConfig
	store Store
	key   *Key

	mu       sync.Mutex
	st       AgentStatus
	needBase bool
	partial  map[string]time.Time // partial file → mtime uploaded
	source   *Source              // the node pg_receivewal streams from
	afterGap bool                 // WAL was lost: resume from the new slot, not from the archive's end

	uploadMu sync.Mutex     // one upload round at a time (the uploader, gap handling, the last round)
	probe    *pgconn.PgConn // under uploadMu: a replication connection to probeFor, for READ_REPLICATION_SLOT
	probeFor Source
}

// NewAgent makes an agent.
func NewAgent(cfg AgentConfig, store Store, key *Key) *Agent {
	cfg.defaults()
	now := time.Now()
	return &Agent{cfg: cfg, store: store, key: key, partial: map[string]time.Time{},
		st: AgentStatus{Started: now, Updated: now, SpoolCap: cfg.SpoolCap, Recipient: key.Recipient(), Understudy: cfg.Version}}
}

// Status is a copy of the agent's status.
func (a *Agent) Status() AgentStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st
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

// Run works until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	if err := os.MkdirAll(a.cfg.Spool, 0o700); err != nil {
		return fmt.Errorf("making the spool %s: %w", a.cfg.Spool, err)
	}
	a.logf("starting: sources %s, spool %s (cap %d MB), key %s", sourceNames(a.cfg.Sources), a.cfg.Spool, a.cfg.SpoolCap>>20, a.key.Recipient())
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); a.uploadLoop(ctx) }()
	go func() { defer wg.Done(); a.statusLoop(ctx) }()
	go func() { defer wg.Done(); a.baseLoop(ctx) }()
	if a.cfg.Drill != nil {
		wg.Add(1)
		go func() { defer wg.Done(); a.drillLoop(ctx) }()
	}
	a.receiveLoop(ctx)
	wg.Wait()
	// A last upload and status, so a clean stop leaves nothing behind.
	final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	a.uploadOnce(final, true)
	a.writeStatus(final)
	a.uploadMu.Lock()
	if a.probe != nil {
		a.probe.Close(final)
		a.probe = nil
	}
	a.uploadMu.Unlock()
	return nil
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

// Choose connects to every source and picks a standby when one answers,
// else the primary (ChooseSource, pure).
func (c *AgentConfig) Choose(ctx context.Context) (Chosen, []Source, error) {
	var found []Chosen
	var errs []string
	for _, s := range c.Sources {
		pc, err := c.replConnect(ctx, s)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", s.Name, err))
			continue
		}
		ri, err := pgops.IdentifyReplication(ctx, pc)
		pc.Close(context.WithoutCancel(ctx))
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", s.Name, err))
			continue
		}
		found = append(found, Chosen{Source: s, Info: ri})
	}
	ch, ok := ChooseSource(found)
	if !ok {
		return Chosen{}, nil, fmt.Errorf("no node answered a replication login: %s", strings.Join(errs, "; "))
	}
	if !ch.Info.Standby && len(errs) > 0 && c.Log != nil {
		fmt.Fprintf(c.Log, "%s understudy backup agent: no standby answered (%s): using the primary %s until one does\n", time.Now().UTC().Format("2006-01-02 15:04:05.000"), strings.Join(errs, "; "), ch.Source.Name)
	}
	var others []Source
	for _, f := range found {
		if f.Source.Name != ch.Source.Name {
			others = append(others, f.Source)
		}
	}
	return ch, others, nil
}

// isStandby asks a source whether it is in recovery now (false when it
// does not answer).
func (c *AgentConfig) isStandby(ctx context.Context, s Source) bool {
	pc, err := c.replConnect(ctx, s)
	if err != nil {
		return false
	}
	defer pc.Close(context.WithoutCancel(ctx))
	ri, err := pgops.IdentifyReplication(ctx, pc)
	return err == nil && ri.Standby
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

// receiveLoop runs pg_receivewal against the chosen source, again and
// again, until ctx ends.
func (a *Agent) receiveLoop(ctx context.Context) {
	backoff := time.Second
	for ctx.Err() == nil {
		if p := a.pausedFor(); p != "" {
			sleep(ctx, time.Second)
			continue
		}
		err := a.receiveOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			a.logf("%v", err)
			a.update(func(s *AgentStatus) { s.LastError, s.LastErrorAt, s.Receiving = err.Error(), time.Now(), false })
			sleep(ctx, backoff)
			backoff = min(2*backoff, 15*time.Second)
			continue
		}
		backoff = time.Second
	}
}

func (a *Agent) pausedFor() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.Paused
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (a *Agent) receiveOnce(ctx context.Context) error {
	ch, others, err := a.cfg.Choose(ctx)
	if err != nil {
		return err
	}
	pc, err := a.cfg.replConnect(ctx, ch.Source)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", ch.Source.Name, err)
	}
	created, err := pgops.CreatePhysicalSlot(ctx, pc, a.cfg.Slot)
	pc.Close(context.WithoutCancel(ctx))
	if err != nil {
		return fmt.Errorf("on %s: %w", ch.Source.Name, err)
	}
	if created {
		a.logf("created slot %s on %s", a.cfg.Slot, ch.Source.Name)
	}
	role := "primary"
	if ch.Info.Standby {
		role = "standby"
	}
	a.logf("streaming WAL from %s (%s, timeline %d)", ch.Source.Name, role, ch.Info.Timeline)
	a.update(func(s *AgentStatus) {
		s.Source, s.SourceStandby, s.Receiving = ch.Source.Name, ch.Info.Standby, true
	})
	a.setSource(&ch.Source)
	defer a.setSource(nil)
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	// While it streams: drop the slot from the other nodes (so none of them
	// keeps WAL for it), stop when the spool is full, and move to a standby
	// when one comes back while streaming from the primary.
	go func() {
		dropped := false
		// The spool is checked often: on a fast link pg_receivewal writes
		// 100 MB/s or more, and the cap should hold within a few MB.
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for n := 0; ; n++ {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
			}
			if pending := a.spoolPending(); pending > a.cfg.SpoolCap {
				a.update(func(s *AgentStatus) {
					if s.Paused == "" {
						s.Paused = pausedText(pending, a.cfg.SpoolCap)
					}
				})
			}
			if a.pausedFor() != "" {
				a.logf("pausing: %s", a.pausedFor())
				stop()
				return
			}
			if n%20 != 19 {
				continue
			}
			if !dropped && n >= 40 {
				dropped = a.dropSlotOn(rctx, others)
			}
			// Every 15 s: is another node now the better source? A standby
			// came back while this is the primary, or this standby was
			// promoted (a switchover: pg_receivewal follows the new timeline
			// on the same server, which would leave the slot on the primary).
			if n%300 == 299 && !a.cfg.isStandby(rctx, ch.Source) {
				if c2, _, err := a.cfg.Choose(rctx); err == nil && c2.Info.Standby && c2.Source.Name != ch.Source.Name {
					a.logf("%s is a standby and %s is not: moving there", c2.Source.Name, ch.Source.Name)
					stop()
					return
				}
			}
		}
	}()
	if err := a.ensureResumePoint(); err != nil {
		return err
	}
	args := []string{"-D", a.cfg.Spool, "-S", a.cfg.Slot, "--synchronous", "--no-loop", "-d", a.cfg.replConninfo(ch.Source, "understudy-backup")}
	cmd := exec.CommandContext(rctx, filepath.Join(a.cfg.BinDir, "pg_receivewal"), args...)
	cmd.Env = append(os.Environ(), a.cfg.Env...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = 10 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &limited{w: &stderr, n: 64 << 10}
	err = cmd.Run()
	if rctx.Err() != nil {
		return nil
	}
	msg := lastLines(stderr.String(), 3)
	if strings.Contains(msg, "has already been removed") || strings.Contains(msg, "invalidated") {
		return a.gap(ctx, ch.Source, msg)
	}
	return fmt.Errorf("pg_receivewal from %s stopped: %v: %s", ch.Source.Name, err, msg)
}

// gap handles WAL the source no longer has: the archive has a hole from
// here, so the slot is made again and a new base backup starts a new
// recovery window.
func (a *Agent) gap(ctx context.Context, s Source, msg string) error {
	last := a.Status().LastArchived
	what := fmt.Sprintf("WAL after %s was removed from %s before it was archived (%s): restores cannot cross this point; a new base backup starts a new recovery window", orNone(last), s.Name, msg)
	a.logf("%s", what)
	a.uploadOnce(ctx, true)
	entries, _ := os.ReadDir(a.cfg.Spool)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), partialSuffix) {
			os.Remove(filepath.Join(a.cfg.Spool, e.Name()))
		}
	}
	if pc, err := a.cfg.replConnect(ctx, s); err == nil {
		pgops.DropPhysicalSlot(ctx, pc, a.cfg.Slot)
		pc.Close(context.WithoutCancel(ctx))
	}
	a.mu.Lock()
	a.st.Gap, a.st.GapAt, a.needBase, a.afterGap = what, time.Now(), true, true
	a.st.LastGap, a.st.LastGapAt = what, a.st.GapAt
	a.mu.Unlock()
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "the start"
	}
	return s
}

// ensureResumePoint makes pg_receivewal start where the archive ends.
// With no WAL file in its directory it would start at the slot's
// restart_lsn, or, when the slot was invalidated, at the server's current
// position, silently skipping what was never archived. So when the spool
// is empty the agent leaves a zero-filled partial file of the segment that
// holds ArchivedLSN: pg_receivewal resumes at that segment's start (it
// always starts at a segment boundary, pg_receivewal docs), and fails with
// "requested WAL segment has already been removed" when the server no
// longer has it, which the agent reports as a gap.
func (a *Agent) ensureResumePoint() error {
	if len(a.readSpool()) > 0 {
		return nil
	}
	a.mu.Lock()
	afterGap := a.afterGap
	a.mu.Unlock()
	if afterGap {
		return nil // the new slot's position is the new start
	}
	st := a.Status()
	if st.ArchivedLSN == 0 || st.ArchivedTLI == 0 {
		return nil // nothing archived yet: the slot's position is the start
	}
	seg := pgops.SegmentOf(st.ArchivedTLI, st.ArchivedLSN, a.segSize())
	p := filepath.Join(a.cfg.Spool, seg.Name(a.segSize())+partialSuffix)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("writing the resume point %s: %w", p, err)
	}
	err = f.Truncate(int64(a.segSize()))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	// The uploader must not replace the archived partial with these zeros:
	// it is marked as uploaded until pg_receivewal writes to it.
	if info, err := os.Stat(p); err == nil {
		a.mu.Lock()
		a.partial = map[string]time.Time{filepath.Base(p): info.ModTime()}
		a.mu.Unlock()
	}
	a.logf("resuming at %s, where the archive ends", seg.Name(a.segSize()))
	return nil
}

func (a *Agent) setSource(s *Source) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.source = s // the uploader replaces its probe connection when it sees the change
}

// flushed is what pg_receivewal has flushed into the spool, as the
// source's slot says. Only uploadOnce calls it (under uploadMu), so the
// probe connection is used by one goroutine at a time.
func (a *Agent) flushed(ctx context.Context) (pgops.LSN, pgops.Timeline, bool) {
	a.mu.Lock()
	src := a.source
	a.mu.Unlock()
	if a.probe != nil && (src == nil || a.probeFor != *src) {
		a.probe.Close(ctx)
		a.probe = nil
	}
	if src == nil {
		return 0, 0, false
	}
	if a.probe == nil {
		pc, err := a.cfg.replConnect(ctx, *src)
		if err != nil {
			return 0, 0, false
		}
		a.probe, a.probeFor = pc, *src
	}
	lsn, tli, err := pgops.ReadReplicationSlot(ctx, a.probe, a.cfg.Slot)
	if err != nil {
		a.probe.Close(ctx)
		a.probe = nil // the next round opens another
		return 0, 0, false
	}
	return lsn, tli, true
}

// checkCaughtUp records when the archive held everything the source has:
// the partial segment is uploaded unchanged, and what the receiver has
// flushed (the slot) is at the source's own position (IDENTIFY_SYSTEM: a
// standby's flushed WAL, a primary's written WAL).
func (a *Agent) checkCaughtUp(ctx context.Context) {
	at := time.Now()
	lsn, tli, ok := a.flushed(ctx)
	if !ok || a.probe == nil {
		return
	}
	ri, err := pgops.IdentifyReplication(ctx, a.probe)
	if err != nil || ri.Timeline != tli || ri.XLogPos > lsn {
		return
	}
	a.update(func(s *AgentStatus) {
		s.CaughtUpAt, s.CaughtUpLSN, s.CaughtUpTLI = at, lsn, tli
		if tli > s.ArchivedTLI || tli == s.ArchivedTLI && lsn > s.ArchivedLSN {
			s.ArchivedLSN, s.ArchivedTLI = lsn, tli
		}
	})
}

func (a *Agent) dropSlotOn(ctx context.Context, others []Source) bool {
	all := true
	for _, o := range others {
		pc, err := a.cfg.replConnect(ctx, o)
		if err != nil {
			all = false
			continue
		}
		if err := pgops.DropPhysicalSlot(ctx, pc, a.cfg.Slot); err != nil {
			all = false
		}
		pc.Close(context.WithoutCancel(ctx))
	}
	return all
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

// spoolFile is one file in the spool.
type spoolFile struct {
	name    string
	seg     pgops.Segment
	history bool
	partial bool
	size    int64
	mtime   time.Time
}

func (a *Agent) readSpool() []spoolFile {
	entries, _ := os.ReadDir(a.cfg.Spool)
	var out []spoolFile
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		name := e.Name()
		base, partial := strings.CutSuffix(name, partialSuffix)
		f := spoolFile{name: name, partial: partial, size: info.Size(), mtime: info.ModTime()}
		if tli, ok := pgops.ParseHistoryFileName(base); ok && !partial {
			f.history, f.seg = true, pgops.Segment{TLI: tli}
		} else if seg, ok := pgops.ParseSegmentName(base, a.segSize()); ok {
			f.seg = seg
		} else {
			continue
		}
		out = append(out, f)
	}
	// History files first (a restore needs them before the new timeline's
	// WAL), then segments in order.
	sort.Slice(out, func(i, j int) bool {
		if out[i].history != out[j].history {
			return out[i].history
		}
		if out[i].seg.No != out[j].seg.No {
			return out[i].seg.No < out[j].seg.No
		}
		return out[i].seg.TLI < out[j].seg.TLI
	})
	return out
}

func pausedText(pending, limit int64) string {
	return fmt.Sprintf("%d MB of WAL is waiting for the storage (cap %d MB): receiving stopped; the source's slot keeps the rest, up to its max_slot_wal_keep_size", pending>>20, limit>>20)
}

// spoolPending is the size of the finished WAL files waiting for upload.
func (a *Agent) spoolPending() int64 {
	var n int64
	for _, f := range a.readSpool() {
		if !f.partial {
			n += f.size
		}
	}
	return n
}

func (a *Agent) segSize() uint64 { return pgops.DefaultSegSize }

func (a *Agent) uploadLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.PartialEvery / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.uploadOnce(ctx, false)
	}
}

// uploadOnce uploads what the spool holds: finished files (then removes
// them), and the segment being written when it changed and PartialEvery
// has passed (or force).
func (a *Agent) uploadOnce(ctx context.Context, force bool) {
	a.uploadMu.Lock()
	defer a.uploadMu.Unlock()
	files := a.readSpool()
	if len(files) > 0 {
		a.mu.Lock()
		a.afterGap = false
		a.mu.Unlock()
	}
	var pending int64
	var newestPartial = -1
	for i, f := range files {
		if f.partial {
			newestPartial = i
		}
	}
	var uploadErr error
	for i, f := range files {
		if uploadErr != nil {
			if !f.partial {
				pending += f.size
			}
			continue
		}
		p := filepath.Join(a.cfg.Spool, f.name)
		switch {
		case !f.partial:
			if err := a.putFile(ctx, p, walKey(f.name)); err != nil {
				uploadErr = err
				pending += f.size
				continue
			}
			os.Remove(p)
			if !f.history {
				a.store.Delete(ctx, walKey(f.name+partialSuffix))
				end := pgops.LSN((f.seg.No + 1) * a.segSize())
				a.update(func(s *AgentStatus) {
					s.LastArchived, s.LastArchivedAt = f.name, time.Now()
					if f.seg.TLI > s.ArchivedTLI || f.seg.TLI == s.ArchivedTLI && end > s.ArchivedLSN {
						s.ArchivedLSN, s.ArchivedTLI = end, f.seg.TLI
					}
				})
			}
		case i != newestPartial:
			// A partial that is no longer written (the end of an old
			// timeline): upload it once more, final, and let it go.
			if err := a.putFile(ctx, p, walKey(f.name)); err != nil {
				uploadErr = err
				continue
			}
			os.Remove(p)
		default:
			a.mu.Lock()
			last, seen := a.partial[f.name]
			a.mu.Unlock()
			if seen && !f.mtime.After(last) {
				if time.Since(a.Status().CaughtUpAt) >= a.cfg.PartialEvery {
					a.checkCaughtUp(ctx)
				}
				continue
			}
			if !force && seen && time.Since(a.Status().LastPartialAt) < a.cfg.PartialEvery {
				continue
			}
			readAt := time.Now()
			lsn, tli, known := a.flushed(ctx)
			// Only a position inside this segment is proof of what it holds.
			known = known && tli == f.seg.TLI && (uint64(lsn)/a.segSize() == f.seg.No || uint64(lsn) == (f.seg.No+1)*a.segSize())
			if info, err := os.Stat(p); err == nil {
				f.mtime = info.ModTime()
			} else {
				continue // finished meanwhile: the next round uploads it
			}
			if err := a.putFile(ctx, p, walKey(f.name)); err != nil {
				if errors.Is(err, os.ErrNotExist) {
					continue
				}
				uploadErr = err
				continue
			}
			a.mu.Lock()
			a.partial = map[string]time.Time{f.name: f.mtime}
			a.mu.Unlock()
			a.update(func(s *AgentStatus) {
				s.LastPartialAt = readAt
				if known && (tli > s.ArchivedTLI || tli == s.ArchivedTLI && lsn >= s.ArchivedLSN) {
					s.ArchivedLSN, s.ArchivedTLI, s.ArchivedAt = lsn, tli, readAt
				}
			})
		}
	}
	if newestPartial < 0 && pending == 0 && uploadErr == nil && time.Since(a.Status().CaughtUpAt) >= a.cfg.PartialEvery {
		a.checkCaughtUp(ctx) // nothing written since the last segment ended
	}
	a.update(func(s *AgentStatus) {
		s.SpoolBytes = pending
		if uploadErr != nil {
			s.UploadError = uploadErr.Error()
			s.LastError, s.LastErrorAt = uploadErr.Error(), time.Now()
		} else {
			s.UploadError = ""
		}
		switch {
		case pending > a.cfg.SpoolCap && s.Paused == "":
			s.Paused = pausedText(pending, a.cfg.SpoolCap)
		case pending <= a.cfg.SpoolCap/2 && s.Paused != "":
			s.Paused = ""
		}
	})
}

// putFile seals a spool file in memory (a segment is at most 16 MB by
// default; the memory is bounded by the segment size) and stores it.
func (a *Agent) putFile(ctx context.Context, p, key string) error {
	f, err := os.Open(p)
	if err != nil {
		return err // os.ErrNotExist when pg_receivewal renamed it meanwhile
	}
	defer f.Close()
	var buf bytes.Buffer
	w, err := a.key.Seal(&buf)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, bufio.NewReaderSize(f, 1<<20)); err != nil {
		return fmt.Errorf("reading %s: %w", p, err)
	}
	if err := w.Close(); err != nil {
		return err
	}
	return a.store.Put(ctx, key, &buf, int64(buf.Len()))
}

func (a *Agent) statusLoop(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		a.writeStatus(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *Agent) writeStatus(ctx context.Context) {
	st := a.Status()
	b, _ := jsonIndent(st)
	writeLocal(filepath.Join(a.cfg.Spool, "..", "agent-status.json"), b)
	if err := putJSON(ctx, a.store, statusKey, st); err != nil && ctx.Err() == nil {
		a.update(func(s *AgentStatus) { s.UploadError = err.Error() })
	}
}

// baseLoop takes a base backup when none is recent enough, or after a gap.
func (a *Agent) baseLoop(ctx context.Context) {
	sleep(ctx, 2*time.Second) // let the WAL stream start first
	for ctx.Err() == nil {
		a.mu.Lock()
		need := a.needBase
		a.mu.Unlock()
		if !need {
			cat, err := ReadCatalog(ctx, a.store)
			if err == nil {
				need = len(cat.Bases) == 0 || time.Since(cat.Bases[len(cat.Bases)-1].Finished) > a.cfg.BaseEvery
			}
		}
		if need {
			bi, err := TakeBase(ctx, &a.cfg, a.store, a.key, nil)
			a.mu.Lock()
			if err != nil {
				a.st.LastBaseError = err.Error()
				a.logf("base backup failed: %v", err)
			} else {
				a.st.LastBase, a.st.LastBaseError, a.needBase = bi.ID, "", false
				if a.st.Gap != "" {
					a.st.Gap = ""
				}
				a.logf("base backup %s: %d MB in %.1f s from %s", bi.ID, bi.Bytes>>20, bi.Duration().Seconds(), bi.Source)
			}
			a.mu.Unlock()
			if err == nil {
				if n, err := ApplyRetention(ctx, a.store, a.cfg.Policy, time.Now()); err != nil {
					a.logf("retention: %v", err)
				} else if n > 0 {
					a.logf("retention deleted %d objects", n)
				}
			}
		}
		sleep(ctx, 30*time.Second)
	}
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
