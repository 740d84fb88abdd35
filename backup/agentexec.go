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
	"strings"
	"syscall"
	"time"

	"github.com/understudy-dev/understudy/pgops"
)

// The agent's executor: it runs the steps DecideAgent returns and records
// what happened; it decides nothing. Every outside call has a deadline.
const (
	walPutTimeout    = 5 * time.Minute // one WAL object (the store's own stall detection ends a hung one sooner)
	statusPutTimeout = 15 * time.Second
	catalogTimeout   = time.Minute
	retentionTimeout = 5 * time.Minute
	receiverStopWait = 10 * time.Second
)

// execNow runs a step of LaneNow: bookkeeping and signals, no outside call.
func (a *Agent) execNow(s AgentStep) {
	switch s := s.(type) {
	case SetPaused:
		a.update(func(st *AgentStatus) { st.Paused, st.PausedFor = s.Text, s.Kind })
		if s.Text == "" {
			a.logf("resuming")
		} else {
			a.logf("pausing: %s", s.Text)
		}
	case StopReceiver:
		a.stopReceiver(s.Why)
	case NoteError:
		a.logf("%s", s.Text)
		a.update(func(st *AgentStatus) { st.LastError, st.LastErrorAt, st.Receiving = s.Text, time.Now(), false })
	case ClearAfterGap:
		a.mu.Lock()
		a.afterGap = false
		a.mu.Unlock()
	default:
		panic(fmt.Sprintf("backup agent: %T is not a step of LaneNow", s))
	}
}

// runBatch runs one lane's steps in order, stopping at the first failure,
// and records the outcome for the lane.
func (a *Agent) runBatch(ctx context.Context, lane Lane, batch []AgentStep) {
	uploaded := false
	for _, s := range batch {
		err := a.exec(ctx, s)
		switch s.(type) {
		case UploadWAL, UploadPartial:
			uploaded = true
		}
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return // stopping: not a failure of the storage or a node
		}
		now := time.Now()
		switch lane {
		case LaneWAL:
			a.logf("%s: %v", s, err)
			a.mu.Lock()
			a.upFails++
			a.upFailAt, a.walErr = now, err.Error()
			a.st.UploadError, a.st.LastError, a.st.LastErrorAt = a.walErr, err.Error(), now
			a.st.Updated = now
			a.mu.Unlock()
		default:
			a.logf("%s: %v", s, err)
		}
		return
	}
	if lane == LaneWAL && uploaded {
		a.mu.Lock()
		a.upFails, a.walErr = 0, ""
		a.st.UploadError = a.statusErr
		a.mu.Unlock()
	}
}

func (a *Agent) exec(ctx context.Context, s AgentStep) error {
	switch s := s.(type) {
	case StartReceiver:
		return a.startReceiver(ctx, s)
	case DropSlot:
		return a.dropSlot(ctx, s.Node)
	case UploadWAL:
		return a.uploadWAL(ctx, s.File)
	case UploadPartial:
		return a.uploadPartial(ctx, s)
	case CheckCaughtUp:
		a.checkCaughtUp(ctx)
		return nil
	case RecordGap:
		return a.recordGap(ctx, s)
	case RefreshCatalog:
		return a.readCatalog(ctx)
	case BaseBackup:
		return a.takeBase(ctx, s.Source)
	case PruneArchive:
		rctx, cancel := context.WithTimeout(ctx, retentionTimeout)
		defer cancel()
		n, err := ApplyRetention(rctx, a.store, a.cfg.Policy, time.Now())
		if err != nil {
			return waited(err, rctx, "applying retention", retentionTimeout)
		}
		if n > 0 {
			a.logf("retention deleted %d objects", n)
		}
		return nil
	case WriteStatus:
		a.writeStatus(ctx)
		return nil
	case ReadDrills:
		a.readDrills(ctx)
		return nil
	case RunDrill:
		a.runDrill(ctx)
		return nil
	}
	return fmt.Errorf("backup agent: no executor for %T", s)
}

// The receiver: pg_receivewal, started and stopped here, its exit
// recorded for the next decision.
type receiverProc struct {
	cmd      *exec.Cmd
	done     chan struct{}
	stopping bool
}

func (a *Agent) startReceiver(ctx context.Context, s StartReceiver) error {
	err := a.startReceiverProc(ctx, s)
	if err != nil {
		now := time.Now()
		a.mu.Lock()
		a.recv.Failures++
		a.recv.LastExit, a.recv.LastExitText = now, err.Error()
		a.recv.FailedOn[s.Source.Name] = now
		a.st.LastError, a.st.LastErrorAt, a.st.Receiving = err.Error(), now, false
		a.mu.Unlock()
	}
	return err
}

func (a *Agent) startReceiverProc(ctx context.Context, s StartReceiver) error {
	sctx, cancel := context.WithTimeout(ctx, connTimeout)
	pc, err := a.cfg.replConnect(sctx, s.Source)
	if err != nil {
		cancel()
		return waited(err, sctx, "connecting to "+s.Source.Name, connTimeout)
	}
	created, err := pgops.CreatePhysicalSlot(sctx, pc, a.cfg.Slot)
	pc.Close(context.WithoutCancel(ctx))
	if err != nil {
		err = waited(err, sctx, "creating the backup slot on "+s.Source.Name, connTimeout)
		cancel()
		return err
	}
	cancel()
	if created {
		a.logf("created slot %s on %s", a.cfg.Slot, s.Source.Name)
	}
	if s.Resume != nil {
		if err := a.writeResumePoint(*s.Resume); err != nil {
			return err
		}
	}
	args := []string{"-D", a.cfg.Spool, "-S", a.cfg.Slot, "--no-loop", "-d", a.cfg.replConninfo(s.Source, "understudy-backup")}
	if !canReadOffsets() {
		// The slot's position is then the only measure of what was
		// written: it must follow every write (an fsync each).
		args = append(args, "--synchronous")
	}
	cmd := exec.Command(filepath.Join(a.cfg.BinDir, "pg_receivewal"), args...)
	cmd.Env = append(os.Environ(), a.cfg.Env...)
	// When the agent dies (SIGKILL, OOM), pg_receivewal goes with it: an
	// orphan would hold the slot and write into the spool.
	cmd.SysProcAttr = dieWithParent()
	var stderr bytes.Buffer
	cmd.Stderr = &limited{w: &stderr, n: 64 << 10}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting pg_receivewal: %w", err)
	}
	p := &receiverProc{cmd: cmd, done: make(chan struct{})}
	now := time.Now()
	role := "primary"
	if s.Standby {
		role = "standby"
	}
	a.logf("streaming WAL from %s (%s, timeline %d)", s.Source.Name, role, s.Timeline)
	a.mu.Lock()
	a.proc = p
	a.segGen++
	a.recv.Running, a.recv.Stopping, a.recv.Source, a.recv.Standby, a.recv.Timeline, a.recv.Since = true, false, s.Source.Name, s.Standby, s.Timeline, now
	a.recv.DroppedOn = map[string]bool{}
	a.st.Source, a.st.SourceStandby, a.st.Receiving = s.Source.Name, s.Standby, true
	a.st.Updated = now
	a.mu.Unlock()
	go func() {
		err := cmd.Wait()
		msg := lastLines(stderr.String(), 3)
		now := time.Now()
		a.mu.Lock()
		ran := now.Sub(a.recv.Since)
		a.recv.Running, a.recv.Stopping = false, false
		a.st.Receiving, a.st.Updated = false, now
		a.proc = nil
		switch {
		case p.stopping:
			a.recv.Failures = 0
		case isGapText(msg):
			a.recv.Gap = msg
		default:
			if ran > 30*time.Second {
				a.recv.Failures = 0
			}
			a.recv.Failures++
			a.recv.LastExit, a.recv.LastExitText = now, msg
			a.recv.FailedOn[s.Source.Name] = now
			text := fmt.Sprintf("pg_receivewal from %s stopped: %v: %s", s.Source.Name, err, msg)
			a.st.LastError, a.st.LastErrorAt = text, now
			a.mu.Unlock()
			a.logf("%s", text)
			a.mu.Lock()
		}
		a.mu.Unlock()
		close(p.done)
		a.poke()
	}()
	return nil
}

// stopReceiver asks pg_receivewal to stop (SIGINT: it flushes and exits),
// and kills it if it has not within receiverStopWait.
func (a *Agent) stopReceiver(why string) {
	a.mu.Lock()
	p := a.proc
	a.rechoose = false
	if p == nil || p.stopping {
		a.mu.Unlock()
		return
	}
	p.stopping, a.recv.Stopping = true, true
	a.mu.Unlock()
	a.logf("stopping pg_receivewal: %s", why)
	p.cmd.Process.Signal(syscall.SIGINT)
	go func() {
		select {
		case <-p.done:
		case <-time.After(receiverStopWait):
			a.logf("pg_receivewal did not stop within %s of SIGINT: killing it", receiverStopWait)
			p.cmd.Process.Kill()
		}
	}()
}

func (a *Agent) waitReceiver(d time.Duration) {
	a.mu.Lock()
	p := a.proc
	a.mu.Unlock()
	if p == nil {
		return
	}
	select {
	case <-p.done:
	case <-time.After(d):
	}
}

// writeResumePoint leaves a zero-filled partial file of the segment that
// holds what the archive has last: pg_receivewal resumes at that segment's
// start (it always starts at a segment boundary, pg_receivewal docs), and
// fails with "requested WAL segment has already been removed" when the
// server no longer has it, which the agent reports as a gap.
func (a *Agent) writeResumePoint(seg pgops.Segment) error {
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
		os.Remove(p)
		return fmt.Errorf("writing the resume point %s: %w", p, err)
	}
	// The uploader must not replace the archived partial with these zeros:
	// it is marked as uploaded until pg_receivewal writes to it.
	if info, err := os.Stat(p); err == nil {
		a.mu.Lock()
		a.upName, a.upMTime, a.upEnd = filepath.Base(p), info.ModTime(), 0
		a.mu.Unlock()
	}
	a.logf("resuming at %s, where the archive ends", seg.Name(a.segSize()))
	return nil
}

func (a *Agent) dropSlot(ctx context.Context, n Source) error {
	dctx, cancel := context.WithTimeout(ctx, connTimeout)
	defer cancel()
	failed := func(err error) error {
		a.mu.Lock()
		a.recv.DropFailedAt[n.Name] = time.Now()
		a.mu.Unlock()
		return err
	}
	pc, err := a.cfg.replConnect(dctx, n)
	if err != nil {
		return failed(waited(err, dctx, "connecting to "+n.Name, connTimeout))
	}
	defer pc.Close(context.WithoutCancel(ctx))
	if err := pgops.DropPhysicalSlot(dctx, pc, a.cfg.Slot); err != nil {
		return failed(waited(err, dctx, "dropping the backup slot on "+n.Name, connTimeout))
	}
	a.mu.Lock()
	if a.recv.DroppedOn != nil {
		a.recv.DroppedOn[n.Name] = true
	}
	for i := range a.nodes {
		if a.nodes[i].Source.Name == n.Name && a.nodes[i].Slot == SlotPresent {
			a.nodes[i].Slot = SlotAbsent
		}
	}
	a.mu.Unlock()
	a.logf("dropped the backup slot on %s", n.Name)
	return nil
}

func (a *Agent) uploadWAL(ctx context.Context, f SpoolFile) error {
	p := filepath.Join(a.cfg.Spool, f.Name)
	var err error
	if ss := a.sealer(f.Name, false); ss != nil && !f.History && ss.off <= f.Size {
		err = a.putSealed(ctx, p, walKey(f.Name), ss, f.Size, false) // its partial frames and the rest
	} else {
		err = a.putFile(ctx, p, walKey(f.Name), -1) // never seen partial: a backlog
	}
	delete(a.segs, f.Name)
	if err != nil {
		return err
	}
	os.Remove(p)
	if f.History {
		return nil
	}
	dctx, cancel := context.WithTimeout(ctx, statusPutTimeout)
	a.store.Delete(dctx, walKey(f.Name+partialSuffix)) // a complete segment wins over a partial one in a restore anyway
	cancel()
	end := pgops.LSN((f.Seg.No + 1) * a.segSize())
	a.update(func(s *AgentStatus) {
		s.LastArchived, s.LastArchivedAt = f.Name, time.Now()
		raiseArchived(s, f.Seg.TLI, end, time.Time{}, false)
	})
	return nil
}

// sealer is the segment's incremental sealer (made when make is set); one
// of an older receiver run is dropped: that run's file may be rewritten.
func (a *Agent) sealer(name string, make bool) *segSealer {
	a.mu.Lock()
	gen := a.segGen
	a.mu.Unlock()
	ss := a.segs[name]
	if ss != nil && ss.gen != gen {
		delete(a.segs, name)
		ss = nil
	}
	if ss == nil && make {
		for n, old := range a.segs { // the segment before this one may stay, to be finished
			if old.gen != gen || n > name {
				delete(a.segs, n)
			}
		}
		ss = &segSealer{name: name, gen: gen}
		a.segs[name] = ss
	}
	return ss
}

// errFilling: pg_receivewal is filling a new segment with zeros; its WAL
// comes next round.
var errFilling = errors.New("the segment is being filled with zeros")

// putSealed extends a segment's frames to upTo bytes of the file and
// stores them sealed. For a partial file, the last page taken must be WAL
// (writtenPages), else errFilling.
func (a *Agent) putSealed(ctx context.Context, p, key string, ss *segSealer, upTo int64, partial bool) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	if partial && upTo > ss.off {
		if ok, werr := writtenPages(f, upTo); werr != nil || !ok {
			f.Close()
			if werr != nil {
				return werr
			}
			return errFilling
		}
	}
	err = ss.extend(f, upTo, &a.scratch)
	f.Close()
	if err != nil {
		delete(a.segs, ss.name)
		return err
	}
	a.sealBuf.Reset()
	if err := ss.sealInto(a.key, &a.sealBuf); err != nil {
		return err
	}
	return a.put(ctx, key, &a.sealBuf)
}

func (a *Agent) uploadPartial(ctx context.Context, s UploadPartial) error {
	f := s.File
	p := filepath.Join(a.cfg.Spool, f.Name)
	if s.Final {
		if err := a.putFile(ctx, p, walKey(f.Name), -1); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		os.Remove(p)
		return nil
	}
	readAt := time.Now()
	lsn, tli, known := a.received(ctx)
	known = known && claimable(f.Seg, tli, lsn, a.segSize())
	info, err := os.Stat(p)
	if err != nil {
		return nil // finished meanwhile: the next round uploads it
	}
	if known {
		// What the slot vouches for, sealed incrementally.
		ss := a.sealer(strings.TrimSuffix(f.Name, partialSuffix), true)
		upTo := int64(uint64(lsn) - f.Seg.No*a.segSize())
		if upTo < ss.off {
			ss.off, ss.frames = 0, ss.frames[:0] // the file was started again
		}
		err = a.putSealed(ctx, p, walKey(f.Name), ss, upTo, true)
	} else {
		// No position to go by (READ_REPLICATION_SLOT needs PostgreSQL 15):
		// the file up to its last written page, compressed whole.
		err = a.putFile(ctx, p, walKey(f.Name), 0)
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, errFilling) {
			return nil
		}
		return err
	}
	a.mu.Lock()
	a.upName, a.upMTime, a.upEnd = f.Name, info.ModTime(), 0
	if known {
		a.upEnd = lsn
	}
	a.st.LastPartialAt = readAt
	if known {
		raiseArchived(&a.st, tli, lsn, readAt, true)
	}
	a.st.Updated = time.Now()
	a.mu.Unlock()
	return nil
}

// received is how far pg_receivewal has written into the spool: its open
// segment's offset (writtenIn), or, where that cannot be read or between
// segments, what it has flushed as its slot says.
func (a *Agent) received(ctx context.Context) (pgops.LSN, pgops.Timeline, bool) {
	a.mu.Lock()
	var pid int
	if a.proc != nil && a.recv.Running {
		pid = a.proc.cmd.Process.Pid
	}
	a.mu.Unlock()
	if pid != 0 {
		if lsn, tli, err := writtenIn(pid, a.cfg.Spool, a.segSize()); err == nil {
			return lsn, tli, true
		}
	}
	return a.flushed(ctx)
}

// openProbe opens the WAL lane's replication connection to the source
// (reused while the source stays), and says whether there is one.
func (a *Agent) openProbe(ctx context.Context) bool {
	a.mu.Lock()
	var src *Source
	if a.recv.Running {
		for _, s := range a.cfg.Sources {
			if s.Name == a.recv.Source {
				src = &s
			}
		}
	}
	a.mu.Unlock()
	if a.probe != nil && (src == nil || a.probeFor != *src) {
		a.probe.Close(context.WithoutCancel(ctx))
		a.probe = nil
	}
	if src == nil {
		return false
	}
	if a.probe == nil {
		cctx, cancel := context.WithTimeout(ctx, connTimeout)
		pc, err := a.cfg.replConnect(cctx, *src)
		cancel()
		if err != nil {
			return false
		}
		a.probe, a.probeFor = pc, *src
	}
	return true
}

// flushed is what pg_receivewal has flushed into the spool, as the
// source's slot says. Only the WAL lane calls it, so the probe connection
// is used by one goroutine at a time.
func (a *Agent) flushed(ctx context.Context) (pgops.LSN, pgops.Timeline, bool) {
	if !a.openProbe(ctx) {
		return 0, 0, false
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	lsn, tli, err := pgops.ReadReplicationSlot(pctx, a.probe, a.cfg.Slot)
	if err != nil {
		a.probe.Close(context.WithoutCancel(ctx))
		a.probe = nil // the next round opens another
		return 0, 0, false
	}
	return lsn, tli, true
}

// checkCaughtUp records when the archive held everything the source has:
// the partial segment is uploaded unchanged (DecideAgent saw to that) up
// to what the receiver has flushed (the slot), and that is the source's own
// position (IDENTIFY_SYSTEM: a standby's flushed WAL, a primary's written
// WAL). When the receiver has flushed past the upload, the upload is made
// due again instead.
func (a *Agent) checkCaughtUp(ctx context.Context) {
	at := time.Now()
	a.mu.Lock()
	a.checkedAt = at
	a.mu.Unlock()
	lsn, tli, ok := a.received(ctx)
	if !ok || !a.openProbe(ctx) {
		return
	}
	a.mu.Lock()
	behind := a.upEnd != 0 && lsn > a.upEnd && a.upName != "" && pgops.SegmentOf(tli, lsn, a.segSize()).Name(a.segSize())+partialSuffix == a.upName
	if behind {
		// The receiver flushed more than the last upload took (it wrote
		// before that file's time was read): that upload is due again.
		a.upMTime = time.Time{}
	}
	a.mu.Unlock()
	if behind {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	ri, err := pgops.IdentifySystem(pctx, a.probe)
	if err != nil {
		a.probe.Close(context.WithoutCancel(ctx))
		a.probe = nil
		return
	}
	if ri.Timeline != tli || ri.XLogPos > lsn {
		return
	}
	a.update(func(s *AgentStatus) {
		s.CaughtUpAt, s.CaughtUpLSN, s.CaughtUpTLI = at, lsn, tli
		raiseArchived(s, tli, lsn, time.Time{}, false)
	})
}

// recordGap: the archive has a hole from here, so the partial files go, the
// slot is made again (dropped here, created by the next start), and a new
// base backup starts a new recovery window.
func (a *Agent) recordGap(ctx context.Context, g RecordGap) error {
	last := a.Status().LastArchived
	what := fmt.Sprintf("WAL after %s was removed from %s before it was archived (%s): restores cannot cross this point; a new base backup starts a new recovery window", orNone(last), g.Source, g.Text)
	a.logf("%s", what)
	entries, _ := os.ReadDir(a.cfg.Spool)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), partialSuffix) {
			os.Remove(filepath.Join(a.cfg.Spool, e.Name()))
		}
	}
	for _, s := range a.cfg.Sources {
		if s.Name == g.Source {
			if err := a.dropSlot(ctx, s); err != nil {
				a.logf("after the gap: %v (the next start makes the slot anew once it is gone)", err)
			}
		}
	}
	now := time.Now()
	a.mu.Lock()
	a.segGen++
	a.st.Gap, a.st.GapAt, a.needBase, a.afterGap = what, now, true, true
	a.st.LastGap, a.st.LastGapAt = what, now
	a.recv.Gap, a.recv.Failures = "", 0
	a.mu.Unlock()
	return nil
}

// putFile seals a spool file in memory (a segment is at most 16 MB by
// default; the memory is bounded by the segment size) and stores it. With
// atLeast >= 0 (a partial file whose first atLeast bytes are vouched for),
// it reads that much and then every whole WAL page written after it,
// stopping at the first page that is still zeros.
func (a *Agent) putFile(ctx context.Context, p, key string, atLeast int64) error {
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
	var r io.Reader = bufio.NewReaderSize(f, 1<<20)
	if atLeast >= 0 {
		r = &writtenWAL{r: r, atLeast: atLeast}
	}
	if _, err := io.Copy(w, r); err != nil {
		return fmt.Errorf("reading %s: %w", p, err)
	}
	if err := w.Close(); err != nil {
		return err
	}
	return a.put(ctx, key, &buf)
}

func (a *Agent) put(ctx context.Context, key string, buf *bytes.Buffer) error {
	pctx, cancel := context.WithTimeout(ctx, walPutTimeout)
	defer cancel()
	if err := a.store.Put(pctx, key, buf, int64(buf.Len())); err != nil {
		if errors.Is(pctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("storing %s: no answer in %s", key, walPutTimeout)
		}
		return err // the store's error names the object and the bucket
	}
	return nil
}

// walPage is XLOG_BLCKSZ, PostgreSQL's WAL page size (8 kB unless built
// otherwise); every written page begins with a page header whose magic
// number is not zero.
const walPage = 8192

// writtenWAL reads a WAL file up to its last written page: past atLeast,
// it stops at the first page whose header is zeros (pg_receivewal fills a
// new segment with zeros before it writes WAL into it).
type writtenWAL struct {
	r       io.Reader
	atLeast int64
	off     int64
	page    [walPage]byte
	have    int // bytes of page not yet returned
	start   int
	done    bool
}

func (w *writtenWAL) Read(p []byte) (int, error) {
	if w.have == 0 {
		if w.done {
			return 0, io.EOF
		}
		n, err := io.ReadFull(w.r, w.page[:])
		if n == 0 {
			w.done = true
			if err == io.ErrUnexpectedEOF {
				err = io.EOF
			}
			return 0, err
		}
		if w.off >= w.atLeast && w.page[0] == 0 && w.page[1] == 0 {
			w.done = true
			return 0, io.EOF
		}
		w.off += int64(n)
		w.have, w.start = n, 0
		if err != nil {
			w.done = true
		}
	}
	c := copy(p, w.page[w.start:w.start+w.have])
	w.start += c
	w.have -= c
	return c, nil
}

func (a *Agent) writeStatus(ctx context.Context) {
	a.mu.Lock()
	a.statusAt = time.Now()
	st := a.st
	a.mu.Unlock()
	b, _ := jsonIndent(st)
	writeLocal(filepath.Join(a.cfg.Spool, "..", "agent-status.json"), b)
	sctx, cancel := context.WithTimeout(ctx, statusPutTimeout)
	defer cancel()
	err := putJSON(sctx, a.store, statusKey, st)
	if err != nil && ctx.Err() != nil {
		return
	}
	a.mu.Lock()
	if err != nil {
		a.statusErr = waited(err, sctx, "storing "+statusKey, statusPutTimeout).Error()
	} else {
		a.statusErr = ""
	}
	a.st.UploadError = a.walErr
	if a.st.UploadError == "" {
		a.st.UploadError = a.statusErr
	}
	a.mu.Unlock()
}

func (a *Agent) readCatalog(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, catalogTimeout)
	defer cancel()
	cat, err := ReadCatalog(cctx, a.store)
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.catalog.Err, a.catalog.ErrAt = waited(err, cctx, "reading the catalogue", catalogTimeout).Error(), now
		return errors.New(a.catalog.Err)
	}
	a.catalog = CatalogSeen{ReadAt: now, Bases: len(cat.Bases)}
	if n := len(cat.Bases); n > 0 {
		a.catalog.Newest = cat.Bases[n-1].Finished
	}
	return nil
}

func (a *Agent) takeBase(ctx context.Context, src Source) error {
	ri, err := a.cfg.identify(ctx, src)
	var bi BaseInfo
	if err == nil {
		bi, err = takeBaseFrom(ctx, &a.cfg, Chosen{Source: src, Info: ri}, a.store, a.key, nil)
	}
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.baseTried = now
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		a.baseErr, a.st.LastBaseError = err.Error(), err.Error()
		a.logf("base backup failed: %v", err)
		return err
	}
	a.baseErr = ""
	a.st.LastBase, a.st.LastBaseError, a.needBase, a.st.Gap = bi.ID, "", false, ""
	a.catalog.Bases++
	a.catalog.Newest = bi.Finished
	a.logf("base backup %s: %d MB in %.1f s from %s", bi.ID, bi.Bytes>>20, bi.Duration().Seconds(), bi.Source)
	return nil
}

func (a *Agent) readDrills(ctx context.Context) {
	dctx, cancel := context.WithTimeout(ctx, catalogTimeout)
	defer cancel()
	cat, err := ReadCatalog(dctx, a.store)
	var last *DrillRecord
	if err == nil {
		last, err = LastDrill(dctx, a.store)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.drill = DrillSeen{ReadAt: time.Now(), Last: last, Bases: len(cat.Bases)}
	if err != nil {
		a.drill.Err = waited(err, dctx, "reading the drills", catalogTimeout).Error()
	}
}
