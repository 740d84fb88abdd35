package pgops

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// FailoverFacts is what the failover loop reads from its own server on
// every round (about every 100 ms), in one short query pair.
type FailoverFacts struct {
	InRecovery bool
	Timeline   Timeline
	// LSN: a primary's flushed end of WAL; a standby's last WAL received
	// (or replayed, when it received nothing since it started).
	LSN       LSN
	Streaming bool   // standby: its walreceiver streams
	SyncNames string // synchronous_standby_names in force
	Replicas  []FailoverReplica
}

// FailoverReplica is a primary's walsender as failover needs it.
type FailoverReplica struct {
	Name      string
	Streaming bool
	Sync      bool // sync_state sync or quorum: commits wait for it
}

// ReadFailoverFacts reads them. A standby's timeline here is its
// checkpoint's or, while it streams, the one it receives; the checkpoint's
// lags behind a timeline switch until the next restartpoint, so the
// failover loop remembers the newest timeline it saw the node stream.
func ReadFailoverFacts(ctx context.Context, c *pgx.Conn) (FailoverFacts, error) {
	var f FailoverFacts
	var lsn string
	var tli int
	err := c.QueryRow(ctx, `SELECT pg_is_in_recovery(),
		CASE WHEN pg_is_in_recovery() THEN greatest((SELECT timeline_id FROM pg_control_checkpoint()),
				coalesce((SELECT received_tli FROM pg_stat_wal_receiver), 0))
			ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
		CASE WHEN pg_is_in_recovery() THEN greatest(coalesce(pg_last_wal_receive_lsn(), '0/0'), coalesce(pg_last_wal_replay_lsn(), '0/0'))::text
			ELSE pg_current_wal_flush_lsn()::text END,
		coalesce((SELECT status = 'streaming' FROM pg_stat_wal_receiver), false),
		current_setting('synchronous_standby_names')`).Scan(&f.InRecovery, &tli, &lsn, &f.Streaming, &f.SyncNames)
	if err != nil {
		return f, fmt.Errorf("reading the server's role and WAL position: %w", err)
	}
	f.Timeline = Timeline(tli)
	if f.LSN, err = ParseLSN(lsn); err != nil {
		return f, err
	}
	if f.InRecovery {
		return f, nil
	}
	// A standby whose walsender still shows "streaming" may be gone (a
	// black-holed link is noticed only at wal_sender_timeout): one that has
	// not replied for 2 s while WAL waits for it is counted as away, so
	// synchronous commits stop waiting for it within seconds.
	rows, err := c.Query(ctx, `SELECT application_name,
		state = 'streaming' AND NOT (coalesce(reply_time < now() - interval '2 s', false)
			AND coalesce(flush_lsn < pg_current_wal_flush_lsn(), false)),
		sync_state IN ('sync', 'quorum') FROM pg_stat_replication`)
	if err != nil {
		return f, fmt.Errorf("reading pg_stat_replication: %w", err)
	}
	f.Replicas, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (FailoverReplica, error) {
		var r FailoverReplica
		err := row.Scan(&r.Name, &r.Streaming, &r.Sync)
		return r, err
	})
	return f, err
}

// SetSyncStandbyNames sets synchronous_standby_names (ALTER SYSTEM) and
// reloads: it takes effect for the next commit.
func SetSyncStandbyNames(ctx context.Context, c *pgx.Conn, names string) error {
	if _, err := c.Exec(ctx, "ALTER SYSTEM SET synchronous_standby_names = "+QuoteLiteral(names)); err != nil {
		return fmt.Errorf("setting synchronous_standby_names: %w", err)
	}
	return Reload(ctx, c)
}

// FenceBySQL stops writes on the server of c from inside it, for a fencer
// that cannot signal PostgreSQL itself (an agent in another container):
// standby.signal and the fence note go into the data directory (COPY TO a
// file: superuser or pg_write_server_files), so any
// restart is read-only; then one program (COPY TO PROGRAM: superuser or
// pg_execute_server_program, run as the server's user in its container)
// sends the postmaster SIGQUIT, PostgreSQL's immediate shutdown (which a
// container's PID 1 handles), and SIGKILLs every other server process and
// the session's own backend, so no backend acknowledges another commit
// even while the postmaster is stopped (SIGSTOP). The session ends with its
// backend: only a failure to write the files is an error.
func FenceBySQL(ctx context.Context, c *pgx.Conn, note string) error {
	var dir string
	if err := c.QueryRow(ctx, "SELECT current_setting('data_directory')").Scan(&dir); err != nil {
		return fmt.Errorf("fencing: reading data_directory: %w", err)
	}
	for _, f := range []struct{ name, body string }{{"standby.signal", ""}, {FenceNote, note}} {
		// COPY takes an absolute path only.
		if _, err := c.Exec(ctx, fmt.Sprintf("COPY (SELECT %s) TO %s", QuoteLiteral(f.body), QuoteLiteral(dir+"/"+f.name))); err != nil {
			return fmt.Errorf("fencing: writing %s in the data directory: %w", f.name, err)
		}
	}
	var pids string
	if err := c.QueryRow(ctx, "SELECT coalesce(string_agg(pid::text, ' '), '') FROM pg_stat_activity WHERE pid <> pg_backend_pid()").Scan(&pids); err != nil {
		pids = "" // the postmaster's SIGQUIT still ends them
	}
	prog := "kill -QUIT $(head -n 1 postmaster.pid)"
	if pids != "" {
		prog += "; kill -KILL " + pids
	}
	prog += "; kill -KILL $PPID"
	c.Exec(ctx, "COPY (SELECT 1) TO PROGRAM "+QuoteLiteral(prog))
	return nil
}
