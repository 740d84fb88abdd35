package backup

import (
	"archive/tar"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/understudy-dev/understudy/pgops"
)

// CheckEmptyTarget refuses a directory that is not empty: understudy never
// restores over anything, least of all a cluster.
func CheckEmptyTarget(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", dir, err)
	}
	if len(entries) == 0 {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err == nil {
		return &RestoreError{What: dir + " holds a PostgreSQL cluster: understudy never restores over one", Fix: "restore into a new, empty directory (or a new node)"}
	}
	return &RestoreError{What: dir + " is not empty", Fix: "restore into a new, empty directory"}
}

// makeRestoreDir makes a restore's directory 0700, and its missing parents
// 0755 so the postgres user can enter them, as mkdir -p in the image's
// entrypoint makes them (postgres:18's PGDATA is /var/lib/postgresql/18/docker,
// and a fresh volume has no 18/).
func makeRestoreDir(d string) error {
	if err := os.MkdirAll(filepath.Dir(d), 0o755); err != nil {
		return fmt.Errorf("making %s: %w", filepath.Dir(d), err)
	}
	if err := os.Mkdir(d, 0o700); err != nil && !os.IsExist(err) {
		return fmt.Errorf("making %s: %w", d, err)
	}
	return nil
}

// Restored describes a finished restore.
type Restored struct {
	Base       string         `json:"base"`
	Target     string         `json:"target"`
	Timeline   pgops.Timeline `json:"timeline"` // the new timeline the restore ended on
	Reached    pgops.LSN      `json:"reached"`  // where recovery ended
	LastCommit time.Time      `json:"last_commit,omitzero"`
	Fetch      time.Duration  `json:"fetch"`
	Replay     time.Duration  `json:"replay"`
	Bytes      int64          `json:"bytes"`
	Segments   int            `json:"segments"`
}

// Fetch writes a restore plan's base backup into dir and its WAL into
// walDir, checks the base backup with pg_verifybackup, and writes the
// recovery settings. Nothing is written outside dir and walDir; on any
// error both are emptied again (they were empty before).
func Fetch(ctx context.Context, store Store, key *Key, rp RestorePlan, binDir, dir, walDir string, progress func(string, Progress)) (err error) {
	for _, d := range []string{dir, walDir} {
		if err := CheckEmptyTarget(d); err != nil {
			return err
		}
	}
	if rp.Base.Recipient != "" && rp.Base.Recipient != key.Recipient() {
		return &RestoreError{What: fmt.Sprintf("base backup %s was encrypted to key %s, and BACKUP_ENCRYPTION_KEY is %s", rp.Base.ID, rp.Base.Recipient, key.Recipient()),
			Fix: "set BACKUP_ENCRYPTION_KEY to the key the backups were made with (nothing was written)"}
	}
	if strings.ContainsAny(walDir, `'"\`) {
		return fmt.Errorf("the WAL directory %q has a quote or backslash in its path: pick another", walDir)
	}
	for _, d := range []string{dir, walDir} {
		if err := makeRestoreDir(d); err != nil {
			return err
		}
	}
	defer func() {
		if err != nil {
			emptyDir(dir)
			emptyDir(walDir)
		}
	}()
	if err := fetchBase(ctx, store, key, rp.Base, dir, progress); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, filepath.Join(binDir, "pg_verifybackup"), "-n", "-q", dir).CombinedOutput(); err != nil {
		return &RestoreError{What: fmt.Sprintf("base backup %s fails pg_verifybackup: %s", rp.Base.ID, lastLines(string(out), 3)), Fix: "restore from another base backup (`understudy backups` lists them)"}
	}
	for _, h := range rp.Histories {
		if err := fetchWAL(ctx, store, key, h, filepath.Join(walDir, h), 0); err != nil {
			return err
		}
	}
	if err := fetchSegments(ctx, store, key, rp.Segments, walDir, rp.Base.SegSize, progress); err != nil {
		return err
	}
	return WriteRecoveryConfig(dir, walDir, rp.Target)
}

func emptyDir(d string) {
	entries, _ := os.ReadDir(d)
	for _, e := range entries {
		os.RemoveAll(filepath.Join(d, e.Name()))
	}
}

func fetchBase(ctx context.Context, store Store, key *Key, b BaseInfo, dir string, progress func(string, Progress)) error {
	r, err := store.Get(ctx, baseDataKey(b.ID))
	if err != nil {
		return fmt.Errorf("fetching base backup %s: %w", b.ID, err)
	}
	defer r.Close()
	h := sha256.New()
	opened, err := key.Open(io.TeeReader(r, h))
	if err != nil {
		return describe(err, "base backup "+b.ID)
	}
	defer opened.Close()
	var done int64
	start := time.Now()
	cr := &countingReader{r: opened, f: func(n int64) {
		done += n
		if progress != nil {
			progress("base", Progress{Done: done, Total: b.Bytes, Elapsed: time.Since(start)})
		}
	}}
	if err := Untar(cr, dir); err != nil {
		return describe(err, "base backup "+b.ID)
	}
	io.Copy(io.Discard, r)
	if b.SHA256 != "" && hex.EncodeToString(h.Sum(nil)) != b.SHA256 {
		return &RestoreError{What: fmt.Sprintf("base backup %s does not match its recorded checksum: the object is damaged", b.ID), Fix: "restore from another base backup (`understudy backups` lists them)"}
	}
	return nil
}

func describe(err error, what string) error {
	switch {
	case errors.Is(err, ErrWrongKey):
		return &RestoreError{What: what + ": " + ErrWrongKey.Error(), Fix: "set BACKUP_ENCRYPTION_KEY to the key the backups were made with (nothing was kept)"}
	case errors.Is(err, ErrCorrupt):
		return &RestoreError{What: what + " is damaged: " + err.Error(), Fix: "restore from another base backup, or to a time before the damaged WAL (nothing was kept)"}
	}
	return fmt.Errorf("%s: %w", what, err)
}

type countingReader struct {
	r    io.Reader
	f    func(int64)
	last time.Time
	acc  int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.acc += int64(n)
	if time.Since(c.last) > 500*time.Millisecond || err != nil {
		c.f(c.acc)
		c.acc, c.last = 0, time.Now()
	}
	return n, err
}

// Untar extracts a base backup's tar into dir: regular files and
// directories only, every path inside dir.
func Untar(r io.Reader, dir string) error {
	t := tar.NewReader(r)
	for {
		h, err := t.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(h.Name)
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("the backup's tar names a path outside the data directory: %q", h.Name)
		}
		p := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				return err
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, t)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			os.Chtimes(p, h.ModTime, h.ModTime)
		default:
			return fmt.Errorf("the backup's tar holds %q of a kind understudy does not restore (type %c; tablespaces are not supported)", h.Name, h.Typeflag)
		}
	}
}

// fetchSegments fetches the plan's WAL segments into walDir, in order.
func fetchSegments(ctx context.Context, store Store, key *Key, segs []WALFile, walDir string, segSize uint64, progress func(string, Progress)) error {
	for i, s := range segs {
		name := s.Name
		if s.Partial {
			name += partialSuffix
		}
		err := fetchWAL(ctx, store, key, name, filepath.Join(walDir, s.Name), segSize)
		if s.Partial && errors.Is(err, errWALMissing) {
			// A running agent finished the segment after the listing: the
			// whole segment replaced its partial object, and holds all of it.
			if werr := fetchWAL(ctx, store, key, s.Name, filepath.Join(walDir, s.Name), segSize); !errors.Is(werr, errWALMissing) {
				err = werr
			}
		}
		if err != nil {
			return err
		}
		if progress != nil {
			progress("WAL", Progress{Done: int64(i + 1), Total: int64(len(segs))})
		}
	}
	return nil
}

// errWALMissing is under the RestoreError of a WAL object that is not in
// the bucket.
var errWALMissing = errors.New("WAL object missing")

func fetchWAL(ctx context.Context, store Store, key *Key, objName, to string, segSize uint64) error {
	r, err := store.Get(ctx, walKey(objName))
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return &RestoreError{What: "WAL file " + objName + " is missing from the archive", Fix: "restore to an earlier time, or from a newer base backup (nothing was kept)", err: errWALMissing}
		}
		return fmt.Errorf("fetching WAL %s: %w", objName, err)
	}
	defer r.Close()
	opened, err := key.Open(r)
	if err != nil {
		return describe(err, "WAL file "+objName)
	}
	defer opened.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(opened, int64(max(segSize, 1<<20))+1)); err != nil {
		return describe(err, "WAL file "+objName)
	}
	if segSize != 0 {
		if uint64(buf.Len()) > segSize {
			return describe(ErrCorrupt, "WAL file "+objName+" (longer than a segment)")
		}
		if uint64(buf.Len()) < segSize {
			if !strings.HasSuffix(objName, partialSuffix) {
				return describe(fmt.Errorf("%w: %d bytes, a segment is %d", ErrCorrupt, buf.Len(), segSize), "WAL file "+objName)
			}
			buf.Write(make([]byte, segSize-uint64(buf.Len())))
		}
	}
	return os.WriteFile(to, buf.Bytes(), 0o600)
}

// RecoveryConfig is what a restore appends to postgresql.auto.conf: WAL
// from the fetched directory, the target, and promotion at the end
// ("Recovery Target" settings, PostgreSQL documentation §20.5.5). The
// standby settings copied from the node are cleared.
func RecoveryConfig(walDir string, t Target) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n# written by understudy restore: to %s\n", t)
	fmt.Fprintf(&b, "restore_command = 'cp \"%s/%%f\" \"%%p\"'\n", walDir)
	if !t.Latest {
		fmt.Fprintf(&b, "recovery_target_time = '%s'\n", t.Time.UTC().Format("2006-01-02 15:04:05.999999+00"))
	}
	if t.Timeline != 0 {
		fmt.Fprintf(&b, "recovery_target_timeline = '%d'\n", t.Timeline)
	} else {
		b.WriteString("recovery_target_timeline = 'latest'\n")
	}
	b.WriteString("recovery_target_action = 'promote'\nprimary_conninfo = ''\nprimary_slot_name = ''\narchive_mode = 'off'\n")
	return b.String()
}

// RecoverySettings are what RecoveryConfig puts in postgresql.auto.conf;
// once recovery has ended they are reset, so the copy holds no stale
// target (a recovery_target_time left there would stop this cluster's
// next recovery, as a standby, at the same point) and no path into the
// restore's WAL directory.
var RecoverySettings = []string{"restore_command", "recovery_target_time", "recovery_target_timeline", "recovery_target_action",
	"primary_conninfo", "primary_slot_name", "archive_mode"}

// WriteRecoveryConfig turns a fetched base backup into one that recovers:
// recovery.signal, no standby.signal, RecoveryConfig appended.
func WriteRecoveryConfig(dir, walDir string, t Target) error {
	os.Remove(filepath.Join(dir, "standby.signal"))
	if err := os.WriteFile(filepath.Join(dir, "recovery.signal"), nil, 0o600); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, "postgresql.auto.conf"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(RecoveryConfig(walDir, t))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(walDir, "pg_hba.conf"), []byte("local all all trust\n"), 0o600)
}

// Server is a restored cluster running on a local socket only.
type Server struct {
	BinDir, Dir, WALDir, Sock string
	Port                      int
	// User is a role of the restored cluster to log in as (trusted on the
	// socket): the official image's bootstrap superuser is POSTGRES_USER.
	User   string
	Cred   *syscall.Credential // run as this user (postgres refuses root)
	Log    string
	cmd    *exec.Cmd
	exited chan error
}

// Start starts postgres on the restored directory: a Unix socket in Sock,
// no TCP, the restore's own pg_hba (local trust).
func (s *Server) Start(ctx context.Context) error {
	logf, err := os.OpenFile(s.Log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	s.cmd = exec.Command(filepath.Join(s.BinDir, "postgres"), "-D", s.Dir, "-c", fmt.Sprintf("port=%d", s.Port), "-c", "listen_addresses=",
		"-c", "unix_socket_directories="+s.Sock, "-c", "hba_file="+filepath.Join(s.WALDir, "pg_hba.conf"), "-c", "hot_standby=on")
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: s.Cred}
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting the restored server: %w", err)
	}
	s.exited = make(chan error, 1)
	go func() { s.exited <- s.cmd.Wait(); logf.Close() }()
	return nil
}

// Conn connects over the socket.
func (s *Server) Conn(ctx context.Context) (*pgx.Conn, error) {
	return pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=%s dbname=postgres connect_timeout=2", s.Sock, s.Port, quoteConn(cmp.Or(s.User, "postgres"))))
}

// WaitPromoted waits until recovery has ended (the server is writable), or
// the server exits (recovery failed: its log says why).
func (s *Server) WaitPromoted(ctx context.Context, timeout time.Duration) (Restored, error) {
	var r Restored
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-s.exited:
			s.exited <- err
			b, _ := os.ReadFile(s.Log)
			fatal := lastFatal(string(b))
			if m := badLocaleRE.FindStringSubmatch(string(b)); m != nil {
				return r, &RestoreError{What: fmt.Sprintf("the cluster's postgresql.conf names the locale %s (%s), which this machine lacks, so PostgreSQL refuses to start; its databases need it too", m[2], m[1]),
					Fix: "restore where that locale exists: on Kamal, `understudy restore drill` runs in the backup accessory, with the nodes' own image; or install the locale here (Debian: apt-get install locales, add it to /etc/locale.gen, run locale-gen)"}
			}
			if strings.Contains(fatal, "could not access directory") && strings.Contains(fatal, "Permission denied") && s.Cred != nil {
				return r, &RestoreError{What: "PostgreSQL runs as the postgres user (it refuses root), and that user cannot reach " + s.Dir,
					Fix: "restore into a directory whose parent directories the postgres user may enter (e.g. under /var/lib/postgresql or /srv)"}
			}
			if strings.Contains(fatal, "recovery ended before configured recovery target was reached") {
				return r, &RestoreError{What: "the archive holds no transaction after the target time, so PostgreSQL cannot tell it reached it (" + fatal + ")",
					Fix: "restore to an earlier time, or --to latest (everything archived)"}
			}
			return r, &RestoreError{What: "the restored server stopped during recovery: " + fatal, Fix: "see the log " + s.Log + "; restore to another time or from another base backup"}
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		c, err := s.Conn(ctx)
		var pgErr *pgconn.PgError
		switch {
		case errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "28"): // invalid_authorization_specification: no such role
			return r, &RestoreError{What: fmt.Sprintf("cannot log in to the restored server as %q: %s", cmp.Or(s.User, "postgres"), pgErr.Message),
				Fix: "restore as a role the cluster has (its POSTGRES_USER)"}
		case errors.As(err, &pgErr) && strings.Contains(pgErr.Message, "locale"):
			return r, &RestoreError{What: "the restored databases use a locale this machine lacks: " + pgErr.Message + " (" + pgErr.Detail + ")",
				Fix: "restore where that locale exists: on Kamal, `understudy restore drill` runs in the backup accessory, with the nodes' own image; or install the locale here (Debian: the locales package, then locale-gen)"}
		case errors.As(err, &pgErr) && pgErr.Code != "57P03": // cannot_connect_now: still starting
			return r, &RestoreError{What: "the restored server refuses connections: " + pgErr.Message, Fix: "see the log " + s.Log}
		}
		if err != nil {
			continue
		}
		in, err := pgops.InRecovery(ctx, c)
		if err == nil && !in {
			r, err = readRestored(ctx, c)
			for _, name := range RecoverySettings {
				if err == nil {
					err = pgops.ResetAutoConf(ctx, c, name)
				}
			}
			if err == nil {
				err = pgops.Reload(ctx, c)
			}
			c.Close(ctx)
			return r, err
		}
		c.Close(ctx)
	}
	return r, fmt.Errorf("the restored server was still recovering after %s (log: %s)", timeout, s.Log)
}

func readRestored(ctx context.Context, c *pgx.Conn) (Restored, error) {
	var r Restored
	tl, last, err := pgops.RecoveryEnd(ctx, c)
	if err != nil {
		return r, err
	}
	r.Timeline, r.LastCommit = tl, last
	if tl > 1 {
		hist, err := pgops.ReadHistoryFile(ctx, c, tl)
		if err != nil {
			return r, err
		}
		steps, err := pgops.ParseHistory(hist)
		if err != nil {
			return r, err
		}
		if len(steps) > 0 {
			r.Reached = steps[len(steps)-1].Switch
		}
	}
	return r, nil
}

// badLocaleRE finds PostgreSQL refusing a locale setting of the restored
// postgresql.conf (initdb writes the image's, e.g. en_US.utf8, there).
var badLocaleRE = regexp.MustCompile(`invalid value for parameter "(lc_[a-z]+)": "([^"]+)"`)

func lastFatal(log string) string {
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], "FATAL") {
			return strings.TrimSpace(lines[i])
		}
	}
	return lastLines(log, 2)
}

// Stop stops the server with pg_ctl (fast), and waits for it.
func (s *Server) Stop(ctx context.Context) error {
	if s.cmd == nil {
		return nil
	}
	select {
	case err := <-s.exited:
		s.exited <- err
		return nil
	default:
	}
	stop := exec.CommandContext(ctx, filepath.Join(s.BinDir, "pg_ctl"), "stop", "-D", s.Dir, "-m", "fast", "-w", "-t", "60")
	stop.SysProcAttr = &syscall.SysProcAttr{Credential: s.Cred}
	out, err := stop.CombinedOutput()
	if err != nil {
		s.cmd.Process.Signal(syscall.SIGQUIT)
	}
	select {
	case e := <-s.exited:
		s.exited <- e // a second Stop sees it gone at once
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		s.exited <- <-s.exited
	}
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %v: %s", err, out)
	}
	return nil
}
