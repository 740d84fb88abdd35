package backup

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/understudy-dev/understudy/atomicfile"
	"github.com/understudy-dev/understudy/pgops"
)

func jsonIndent(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	return append(b, '\n'), err
}

func writeLocal(p string, b []byte) { atomicfile.Write(p, b, 0o644) }

// Progress reports a running base backup or restore.
type Progress struct {
	Done, Total int64 // bytes; Total 0 when unknown
	Elapsed     time.Duration
}

// BaseArgs is pg_basebackup's argv for a base backup into a tar on stdout:
// no WAL in it (the archive has it), a checksummed manifest, a fast
// restartpoint on the standby. Not -P: its size estimate walks the whole
// data directory first (pg_basebackup docs), which costs more than it tells.
func BaseArgs(conninfo string) []string {
	return []string{"-d", conninfo, "-D", "-", "-F", "tar", "-X", "none", "--manifest-checksums=SHA256", "-c", "fast"}
}

// TakeBase runs pg_basebackup against the source the agent would pick (a
// standby when one answers), and streams its tar sealed into the bucket,
// then writes the backup's info. Memory is bounded by the upload's part size.
func TakeBase(ctx context.Context, cfg *AgentConfig, store Store, key *Key, progress func(Progress)) (BaseInfo, error) {
	cfg.defaults()
	ch, _, err := cfg.Choose(ctx)
	if err != nil {
		return BaseInfo{}, err
	}
	return takeBaseFrom(ctx, cfg, ch, store, key, progress)
}

// takeBaseFrom is TakeBase from a source already chosen. pg_basebackup is
// stopped when it sends nothing for cfg.BaseStall, and when this process
// dies (its parent-death signal).
func takeBaseFrom(ctx context.Context, cfg *AgentConfig, ch Chosen, store Store, key *Key, progress func(Progress)) (BaseInfo, error) {
	cfg.defaults()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	started := time.Now().UTC()
	bi := BaseInfo{ID: started.Format("20060102T150405.000Z"), SystemID: ch.Info.SystemID, Timeline: ch.Info.Timeline,
		SegSize: ch.Info.SegSize, Started: started, Source: ch.Source.Name, FromStandby: ch.Info.Standby, Recipient: key.Recipient()}
	cmd := exec.CommandContext(ctx, filepath.Join(cfg.BinDir, "pg_basebackup"), BaseArgs(cfg.replConninfo(ch.Source, "understudy-basebackup"))...)
	cmd.Env = append(os.Environ(), cfg.Env...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	cmd.SysProcAttr = dieWithParent()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return bi, err
	}
	if f, ok := stdout.(*os.File); ok {
		growPipe(f)
	}
	stderrR, stderrW := io.Pipe()
	cmd.Stderr = stderrW
	var total atomic.Int64
	var errText bytes.Buffer
	go func() { scanProgress(stderrR, &total, &limited{w: &errText, n: 16 << 10}) }()
	if err := cmd.Start(); err != nil {
		return bi, fmt.Errorf("starting pg_basebackup: %w", err)
	}

	// stdout → (count, tar reader for backup_label and the manifest) and
	// → seal → hash → upload.
	pr, pw := io.Pipe()
	upload := make(chan error, 1)
	go func() {
		err := store.Put(ctx, baseDataKey(bi.ID), pr, -1)
		pr.CloseWithError(fmt.Errorf("the upload ended: %v", err)) // unblocks the writer when the upload fails
		upload <- err
	}()
	h := sha256.New()
	var stored atomic.Int64
	sealed, err := key.SealStream(io.MultiWriter(pw, h, countWriter{&stored}))
	if err != nil {
		pw.CloseWithError(err)
		<-upload
		cmd.Process.Kill()
		cmd.Wait()
		return bi, err
	}
	// backup_label (at the start) and backup_manifest (at the end) are
	// picked out of the tar as it streams by, without a copy of it.
	scan := newTarScanner(map[string]int64{"backup_label": 64 << 10, "backup_manifest": 256 << 20})

	var done int64
	tick := time.Now()
	buf := make([]byte, 1<<20)
	var copyErr error
	// A watchdog: pg_basebackup that sends nothing for BaseStall (a hung
	// source) is stopped, and the error says what was waited for.
	var lastRead atomic.Int64
	lastRead.Store(time.Now().UnixNano())
	watchDone := make(chan struct{})
	defer close(watchDone)
	go func() {
		t := time.NewTicker(min(cfg.BaseStall/4, time.Second))
		defer t.Stop()
		for {
			select {
			case <-watchDone:
				return
			case <-t.C:
			}
			if idle := time.Since(time.Unix(0, lastRead.Load())); idle >= cfg.BaseStall {
				cancel(fmt.Errorf("pg_basebackup from %s sent nothing for %s", ch.Source.Name, idle.Round(time.Second)))
				return
			}
		}
	}()
	for {
		n, rerr := stdout.Read(buf)
		lastRead.Store(time.Now().UnixNano())
		if n > 0 {
			done += int64(n)
			scan.Write(buf[:n])
			if _, err := sealed.Write(buf[:n]); err != nil {
				copyErr = err
				break
			}
			if progress != nil && time.Since(tick) > 500*time.Millisecond {
				tick = time.Now()
				progress(Progress{Done: done, Total: total.Load(), Elapsed: time.Since(started)})
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			copyErr = rerr
			break
		}
	}
	waitErr := cmd.Wait()
	stderrW.Close()
	if copyErr == nil && waitErr == nil {
		copyErr = sealed.Close()
	}
	if copyErr != nil || waitErr != nil {
		pw.CloseWithError(errors.New("base backup failed"))
		<-upload
		store.Delete(context.WithoutCancel(ctx), baseDataKey(bi.ID))
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			return bi, cause
		}
		if waitErr != nil {
			return bi, fmt.Errorf("pg_basebackup from %s failed: %v: %s", ch.Source.Name, waitErr, lastLines(errText.String(), 3))
		}
		return bi, fmt.Errorf("base backup from %s: %w", ch.Source.Name, copyErr)
	}
	pw.Close()
	if err := <-upload; err != nil {
		store.Delete(context.WithoutCancel(ctx), baseDataKey(bi.ID))
		return bi, fmt.Errorf("uploading base backup %s: %w", bi.ID, err)
	}
	m := scan.baseMeta()
	if m.err != nil {
		store.Delete(context.WithoutCancel(ctx), baseDataKey(bi.ID))
		return bi, fmt.Errorf("base backup %s: %w", bi.ID, m.err)
	}
	bi.StartLSN, bi.EndLSN, bi.Timeline = m.start, m.end, m.timeline
	bi.Finished = time.Now().UTC()
	bi.Bytes, bi.Stored, bi.SHA256 = done, stored.Load(), hex.EncodeToString(h.Sum(nil))
	if progress != nil {
		progress(Progress{Done: done, Total: done, Elapsed: time.Since(started)})
	}
	if err := putJSON(ctx, store, baseInfoKey(bi.ID), bi); err != nil {
		return bi, fmt.Errorf("recording base backup %s: %w", bi.ID, err)
	}
	return bi, nil
}

type countWriter struct{ n *atomic.Int64 }

func (c countWriter) Write(p []byte) (int, error) { c.n.Add(int64(len(p))); return len(p), nil }

var progressRE = regexp.MustCompile(`(\d+)/(\d+) kB`)

// scanProgress reads pg_basebackup -P's "done/total kB" lines (separated
// by carriage returns) and keeps the rest as error text.
func scanProgress(r io.Reader, total *atomic.Int64, rest io.Writer) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
			return i + 1, data[:i], nil
		}
		if atEOF && len(data) > 0 {
			return len(data), data, nil
		}
		return 0, nil, nil
	})
	for sc.Scan() {
		line := sc.Text()
		if m := progressRE.FindStringSubmatch(line); m != nil {
			t, _ := strconv.ParseInt(m[2], 10, 64)
			total.Store(t << 10)
			continue
		}
		if strings.TrimSpace(line) != "" {
			fmt.Fprintln(rest, line)
		}
	}
	io.Copy(io.Discard, r)
}

// ManifestEnd reads the end of the last WAL range from a backup manifest.
func ManifestEnd(b []byte) (pgops.LSN, error) {
	var man struct {
		WALRanges []struct {
			Timeline int    `json:"Timeline"`
			Start    string `json:"Start-LSN"`
			End      string `json:"End-LSN"`
		} `json:"WAL-Ranges"`
	}
	if err := json.Unmarshal(b, &man); err != nil {
		return 0, fmt.Errorf("reading backup_manifest: %w", err)
	}
	if len(man.WALRanges) == 0 {
		return 0, errors.New("backup_manifest has no WAL range")
	}
	return pgops.ParseLSN(man.WALRanges[len(man.WALRanges)-1].End)
}
