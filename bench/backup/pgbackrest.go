package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/understudy-dev/understudy/lab"
	"github.com/understudy-dev/understudy/live"
)

// pgBackRest, Debian's package, set up as its documentation describes for
// an S3 repository (repo1-type=s3, path-style URIs, a CA file for a
// self-signed endpoint) on the same versitygw as understudy, with the same
// kind of work: zstd compression and encryption of the repository
// (aes-256-cbc), WAL pushed by archive_command on the primary, the backup
// taken from the standby (backup-standby=y: pg1 the primary, pg2 the
// standby, both local). Its configuration holds the bench storage's
// throwaway credentials, in a 0700 directory the bench removes.
type pgbr struct {
	l                 *lab.Lab
	dir, conf, stanza string
	cred              *syscall.Credential
}

func setupPgBackRest(ctx context.Context, l *lab.Lab, st *storage, scratch string) (*pgbr, error) {
	if _, err := exec.LookPath("pgbackrest"); err != nil {
		return nil, fmt.Errorf("pgbackrest is not installed (apt-get install pgbackrest; scripts/bench-backup does it)")
	}
	p := &pgbr{l: l, dir: filepath.Join(scratch, "pgbackrest"), stanza: "bench", cred: l.Cred()}
	p.conf = filepath.Join(p.dir, "pgbackrest.conf")
	for _, d := range []string{p.dir, filepath.Join(p.dir, "log"), filepath.Join(p.dir, "lock"), filepath.Join(p.dir, "spool")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	primary, standby := l.Cluster.Nodes[0], l.Cluster.Nodes[1]
	conf := fmt.Sprintf(`[global]
repo1-type=s3
repo1-path=/pgbackrest
repo1-s3-bucket=bench
repo1-s3-endpoint=127.0.0.1
repo1-storage-port=%d
repo1-s3-region=us-east-1
repo1-s3-uri-style=path
repo1-storage-ca-file=%s
repo1-s3-key=%s
repo1-s3-key-secret=%s
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=%s
repo1-retention-full=100
compress-type=zst
process-max=2
start-fast=y
backup-standby=y
archive-async=n
log-path=%s
lock-path=%s
spool-path=%s
log-level-console=warn
log-level-file=info

[%s]
pg1-path=%s
pg1-socket-path=%s
pg1-port=%d
pg1-user=postgres
pg2-path=%s
pg2-socket-path=%s
pg2-port=%d
pg2-user=postgres
`, st.port, st.cert, st.accessKey, st.secret, randHex(24), filepath.Join(p.dir, "log"), filepath.Join(p.dir, "lock"), filepath.Join(p.dir, "spool"),
		p.stanza, l.DataDir(primary.Name), filepath.Join(l.Dir, "sock", primary.Name), primary.Port,
		l.DataDir(standby.Name), filepath.Join(l.Dir, "sock", standby.Name), standby.Port)
	if err := os.WriteFile(p.conf, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	if p.cred != nil {
		filepath.Walk(p.dir, func(f string, _ os.FileInfo, _ error) error { return os.Lchown(f, int(p.cred.Uid), int(p.cred.Gid)) })
	}
	// archive_command on the primary; archive_mode needs a restart.
	c, err := l.Conn(ctx, primary.Name)
	if err != nil {
		return nil, err
	}
	for _, q := range []string{"ALTER SYSTEM SET archive_mode = 'on'",
		fmt.Sprintf("ALTER SYSTEM SET archive_command = 'pgbackrest --config=%s --stanza=%s archive-push %%p'", p.conf, p.stanza)} {
		if _, err := c.Exec(ctx, q); err != nil {
			c.Close(ctx)
			return nil, err
		}
	}
	c.Close(ctx)
	if err := l.Stop(ctx, primary.Name); err != nil {
		return nil, err
	}
	if err := l.Start(ctx, primary.Name); err != nil {
		return nil, err
	}
	if _, err := live.WaitReady(ctx, l, primary.Name, time.Minute); err != nil {
		return nil, err
	}
	if _, err := live.WaitReady(ctx, l, standby.Name, time.Minute); err != nil {
		return nil, err
	}
	if out, err := p.run(ctx, "stanza-create"); err != nil {
		return nil, fmt.Errorf("pgbackrest stanza-create: %v: %s", err, out)
	}
	if out, err := p.run(ctx, "check"); err != nil {
		return nil, fmt.Errorf("pgbackrest check: %v: %s", err, out)
	}
	return p, nil
}

func (p *pgbr) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "pgbackrest", append([]string{"--config=" + p.conf, "--stanza=" + p.stanza}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	cmd.Dir = p.dir
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// backup takes a full backup (from the standby) and says how long it took.
func (p *pgbr) backup(ctx context.Context) (time.Duration, error) {
	t0 := time.Now()
	out, err := p.run(ctx, "backup", "--type=full")
	if err != nil {
		return 0, fmt.Errorf("pgbackrest backup: %v: %s", err, out)
	}
	return time.Since(t0), nil
}

// restore restores the newest backup into dir (empty, the postgres user's)
// with recovery to the end of the archive, WAL fetched ahead by
// archive-get in async mode (its fastest), and returns the restore's time.
func (p *pgbr) restore(ctx context.Context, dir string) (time.Duration, error) {
	t0 := time.Now()
	rc := fmt.Sprintf("restore_command=pgbackrest --config=%s --stanza=%s --pg1-path=%s --archive-async --archive-get-queue-max=256MB --process-max=2 archive-get %%f \"%%p\"", p.conf, p.stanza, dir)
	out, err := p.run(ctx, "restore", "--pg1-path="+dir, "--type=default", "--recovery-option="+rc,
		"--recovery-option=primary_conninfo=", "--recovery-option=primary_slot_name=", "--recovery-option=archive_mode=off")
	if err != nil {
		return 0, fmt.Errorf("pgbackrest restore: %v: %s", err, out)
	}
	return time.Since(t0), nil
}

// archiverPID is the primary's archiver process: archive_command runs as
// its child, so its CPU (with its reaped children's) is pgBackRest's
// archiving cost.
func archiverPID(ctx context.Context, l *lab.Lab) (int, error) {
	c, err := l.Conn(ctx, l.Cluster.Nodes[0].Name)
	if err != nil {
		return 0, err
	}
	defer c.Close(ctx)
	var pid int
	err = c.QueryRow(ctx, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'archiver'").Scan(&pid)
	return pid, err
}
