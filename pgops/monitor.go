package pgops

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The node agent's reads and the switchover's drain lock. The agent logs in
// as a monitoring role that is a member of pg_monitor (PostgreSQL docs,
// predefined-roles.html: read all pg_stat_* views and pg_ls_waldir) and may
// run pg_stat_file, to see the fence note; nothing else.

// MonitorFunctions are the functions the monitoring role gets EXECUTE on
// besides what pg_monitor grants: pg_stat_file, for the fence note in
// PGDATA (a relative path: non-superusers cannot name files outside the
// data directory).
var MonitorFunctions = []string{"pg_catalog.pg_stat_file(text, boolean)"}

// FenceNote is the file a fenced node keeps in PGDATA (see pgconf.FollowScript).
const FenceNote = "understudy-fenced.txt"

// DrainLockKey is the advisory lock a switchover holds, in a superuser
// session on the old primary, while it drains it: the node's agent reports
// "draining" (its /primary answers 503) for as long as that session holds
// it, and the lock goes with the session, however the session ends.
// pg_locks shows a bigint key as classid (high half), objid (low half) and
// objsubid 1 (PostgreSQL docs, view-pg-locks.html).
const DrainLockKey int64 = 0x556e6465_72737479 // "Understy"

// The drain key's halves as pg_locks shows them (oid columns).
const (
	drainKeyHigh = uint32(uint64(DrainLockKey) >> 32)
	drainKeyLow  = uint32(uint64(DrainLockKey) & 0xffffffff)
)

// HoldDrainLock takes the drain lock, exclusively, for the session of c.
// The node's agent takes it shared for an instant at every observation
// (that is how it sees a drain without reading pg_locks, which stalls
// under heavy load), so a busy try is tried again for a second; a lock
// another session holds that long is an error.
func HoldDrainLock(ctx context.Context, c *pgx.Conn) error {
	deadline := time.Now().Add(time.Second)
	for {
		var ok bool
		if err := c.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, DrainLockKey).Scan(&ok); err != nil {
			return fmt.Errorf("taking the drain lock: %w", err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("another session holds understudy's drain lock (another switchover runs?)")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// ReleaseDrainLock gives the drain lock back.
func ReleaseDrainLock(ctx context.Context, c *pgx.Conn) error {
	if _, err := c.Exec(ctx, `SELECT pg_advisory_unlock($1)`, DrainLockKey); err != nil {
		return fmt.Errorf("releasing the drain lock: %w", err)
	}
	return nil
}

// RoleProbe is one quick reading of a server's role: what a node agent
// reads every ~100 ms. It touches only shared memory (no file, no control
// file lock, no pg_locks scan), so a busy disk or a checkpoint's fsync
// cannot hold it up; what needs a file is in NodeFiles.
type RoleProbe struct {
	InRecovery bool
	// Timeline: a primary's is the one it writes; a standby's is the one
	// its walreceiver receives (0 without a walreceiver: NodeFiles has the
	// checkpoint's).
	Timeline   Timeline
	WriteLSN   LSN // primary: pg_current_wal_lsn()
	ReceiveLSN LSN // standby: pg_last_wal_receive_lsn() (0 before any streaming)
	ReplayLSN  LSN // standby: pg_last_wal_replay_lsn()
	// LagSeconds is postgres_exporter's pg_replication_lag_seconds: 0 on a
	// primary or a standby that has replayed all it received, else the
	// age of the last transaction replayed.
	LagSeconds float64
	Receiver   string // pg_stat_wal_receiver.status ("streaming", ...), "" without a walreceiver
	Sender     string // host:port the walreceiver streams from
	Draining   bool   // a superuser session holds DrainLockKey (exclusively)
}

// NodeFiles is what a node agent reads from files, on a slower loop of
// its own: the system identifier and the checkpoint's timeline (the
// control file), and the fence note in PGDATA.
type NodeFiles struct {
	SystemID           string
	CheckpointTimeline Timeline
	Fenced             bool
}

// ReadNodeFiles reads NodeFiles.
func ReadNodeFiles(ctx context.Context, c *pgx.Conn) (NodeFiles, error) {
	var f NodeFiles
	var sysid, tli int64
	err := c.QueryRow(ctx, `SELECT (SELECT system_identifier FROM pg_control_system()), (SELECT timeline_id FROM pg_control_checkpoint())::bigint,
		(pg_stat_file($1, true)).size IS NOT NULL`, FenceNote).Scan(&sysid, &tli, &f.Fenced)
	if err != nil {
		return f, fmt.Errorf("reading the control file and the fence note: %w", err)
	}
	f.SystemID, f.CheckpointTimeline = fmt.Sprint(uint64(sysid)), Timeline(tli)
	return f, nil
}

// ReadRoleProbe reads a RoleProbe in one statement.
func ReadRoleProbe(ctx context.Context, c *pgx.Conn) (RoleProbe, error) {
	var p RoleProbe
	var tli, rtli *int64
	var wl, rl, pl, status, host *string
	var port *int
	err := c.QueryRow(ctx, `SELECT pg_is_in_recovery(),
		CASE WHEN pg_is_in_recovery() THEN NULL
			ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint END,
		CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
		pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
		CASE WHEN NOT pg_is_in_recovery() OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
			ELSE greatest(0, coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)) END::float8,
		w.status, w.received_tli::bigint, w.sender_host, w.sender_port,
		CASE WHEN pg_is_in_recovery() THEN false
			WHEN pg_try_advisory_lock_shared($3) THEN NOT pg_advisory_unlock_shared($3)
			ELSE EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid JOIN pg_roles r ON r.oid = a.usesysid
				WHERE l.locktype = 'advisory' AND l.granted AND l.mode = 'ExclusiveLock' AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 1 AND r.rolsuper) END
		FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver w ON true`,
		drainKeyHigh, drainKeyLow, DrainLockKey).
		Scan(&p.InRecovery, &tli, &wl, &rl, &pl, &p.LagSeconds, &status, &rtli, &host, &port, &p.Draining)
	if err != nil {
		return p, fmt.Errorf("reading the server's role: %w", err)
	}
	if tli != nil {
		p.Timeline = Timeline(*tli)
	}
	if rtli != nil && Timeline(*rtli) > p.Timeline {
		p.Timeline = Timeline(*rtli)
	}
	for _, f := range []struct {
		s *string
		l *LSN
	}{{wl, &p.WriteLSN}, {rl, &p.ReceiveLSN}, {pl, &p.ReplayLSN}} {
		if f.s != nil {
			if *f.l, err = ParseLSN(*f.s); err != nil {
				return p, err
			}
		}
	}
	p.Receiver = deref(status)
	if host != nil {
		p.Sender = *host
		if port != nil {
			p.Sender = fmt.Sprintf("%s:%d", *host, *port)
		}
	}
	return p, nil
}

// TimelineStarted is when the server's current timeline began, as the
// modification time of its history file in pg_wal (pg_ls_waldir, which
// pg_monitor may run): the last promotion. Zero on timeline 1.
func TimelineStarted(ctx context.Context, c *pgx.Conn, tl Timeline) (time.Time, error) {
	if tl <= 1 {
		return time.Time{}, nil
	}
	var t *time.Time
	if err := c.QueryRow(ctx, `SELECT (SELECT modification FROM pg_ls_waldir() WHERE name = $1)`, HistoryFileName(tl)).Scan(&t); err != nil {
		return time.Time{}, fmt.Errorf("reading when timeline %d began: %w", tl, err)
	}
	if t == nil {
		return time.Time{}, nil
	}
	return *t, nil
}

// MonitorRoleState says whether the monitoring role is as understudy wants it.
type MonitorRoleState struct {
	Exists, Login, PasswordMatches, Member, Functions bool
	Superuser                                         bool // it must not be
}

// OK reports whether nothing needs changing.
func (r MonitorRoleState) OK() bool {
	return r.Exists && r.Login && r.PasswordMatches && r.Member && r.Functions && !r.Superuser
}

// ReadMonitorRole checks the monitoring role against the password without
// sending the password anywhere (the stored verifier is recomputed here).
func ReadMonitorRole(ctx context.Context, c *pgx.Conn, role, password string) (MonitorRoleState, error) {
	var r MonitorRoleState
	var stored *string
	err := c.QueryRow(ctx, `SELECT rolcanlogin, rolsuper, rolpassword, pg_has_role(oid, 'pg_monitor', 'MEMBER') FROM pg_authid WHERE rolname = $1`, role).
		Scan(&r.Login, &r.Superuser, &stored, &r.Member)
	if err == pgx.ErrNoRows {
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("reading role %s: %w", role, err)
	}
	r.Exists = true
	r.PasswordMatches = stored != nil && VerifierMatches(*stored, password)
	r.Functions = true
	for _, f := range MonitorFunctions {
		var has bool
		if err := c.QueryRow(ctx, `SELECT has_function_privilege($1, $2, 'EXECUTE')`, role, f).Scan(&has); err != nil {
			return r, fmt.Errorf("checking EXECUTE on %s for %s: %w", f, role, err)
		}
		r.Functions = r.Functions && has
	}
	return r, nil
}

// EnsureMonitorRole creates or updates the monitoring role from a verifier
// computed here, with statement logging off for the session (as
// EnsureReplicationRole): LOGIN, NOSUPERUSER, a member of pg_monitor, and
// EXECUTE on MonitorFunctions.
func EnsureMonitorRole(ctx context.Context, c *pgx.Conn, role, password string) error {
	if err := ensureLoginRole(ctx, c, role, password, "LOGIN NOSUPERUSER NOREPLICATION NOCREATEDB NOCREATEROLE"); err != nil {
		return err
	}
	id := pgx.Identifier{role}.Sanitize()
	if _, err := c.Exec(ctx, "GRANT pg_monitor TO "+id); err != nil {
		return fmt.Errorf("granting pg_monitor to %s: %w", role, err)
	}
	for _, f := range MonitorFunctions {
		if _, err := c.Exec(ctx, fmt.Sprintf("GRANT EXECUTE ON FUNCTION %s TO %s", f, id)); err != nil {
			return fmt.Errorf("granting EXECUTE on %s to %s: %w", f, role, err)
		}
	}
	return nil
}
