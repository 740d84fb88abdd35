package pgops

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// NodeState is what one server says about itself.
type NodeState struct {
	InRecovery bool
	Timeline   int
	LSN        string // current WAL position (primary) or last replayed (standby)
}

// ReadNodeState reads a server's role, timeline and WAL position.
func ReadNodeState(ctx context.Context, c *pgx.Conn) (NodeState, error) {
	var s NodeState
	err := c.QueryRow(ctx, `SELECT pg_is_in_recovery(),
		(SELECT timeline_id FROM pg_control_checkpoint()),
		CASE WHEN pg_is_in_recovery() THEN coalesce(pg_last_wal_replay_lsn()::text, '') ELSE pg_current_wal_lsn()::text END`).
		Scan(&s.InRecovery, &s.Timeline, &s.LSN)
	if err != nil {
		return s, fmt.Errorf("reading the node's state: %w", err)
	}
	return s, nil
}

// Replica is one row of pg_stat_replication joined with its slot.
type Replica struct {
	Name, State, SlotStatus string
	LagBytes                int64
	ReplayLag               time.Duration
}

// ReadReplicas lists the standbys connected to a primary.
func ReadReplicas(ctx context.Context, c *pgx.Conn) ([]Replica, error) {
	rows, err := c.Query(ctx, `SELECT r.application_name, r.state,
		coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn), 0)::bigint,
		coalesce(extract(epoch FROM r.replay_lag), 0)::float8,
		coalesce((SELECT s.wal_status FROM pg_replication_slots s WHERE s.active_pid = r.pid), 'no slot')
		FROM pg_stat_replication r ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("reading pg_stat_replication: %w", err)
	}
	defer rows.Close()
	var out []Replica
	for rows.Next() {
		var r Replica
		var lag float64
		if err := rows.Scan(&r.Name, &r.State, &r.LagBytes, &lag, &r.SlotStatus); err != nil {
			return nil, err
		}
		r.ReplayLag = time.Duration(lag * float64(time.Second))
		out = append(out, r)
	}
	return out, rows.Err()
}

// Canary writes a unique row on the primary and measures how long it takes
// to become visible on the standby.
func Canary(ctx context.Context, primary, standby *pgx.Conn, timeout time.Duration) (time.Duration, error) {
	b := make([]byte, 8)
	rand.Read(b)
	token := hex.EncodeToString(b)
	if _, err := primary.Exec(ctx, `CREATE TABLE IF NOT EXISTS understudy_canary (token text PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return 0, fmt.Errorf("creating the canary table on the primary: %w", err)
	}
	if _, err := primary.Exec(ctx, `DELETE FROM understudy_canary WHERE written_at < now() - interval '1 day'`); err != nil {
		return 0, fmt.Errorf("pruning old canaries: %w", err)
	}
	// The table's creation is replayed first, untimed: the delay measured
	// below is for one ordinary committed row.
	deadline := time.Now().Add(timeout)
	for {
		var exists bool
		if err := standby.QueryRow(ctx, `SELECT to_regclass('understudy_canary') IS NOT NULL`).Scan(&exists); err != nil {
			return 0, fmt.Errorf("looking for the canary table on the standby: %w", err)
		}
		if exists {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("the canary table created on the primary did not reach the standby within %s", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	if _, err := primary.Exec(ctx, `INSERT INTO understudy_canary (token) VALUES ($1)`, token); err != nil {
		return 0, fmt.Errorf("writing the canary on the primary: %w", err)
	}
	for time.Since(start) < timeout {
		var n int
		if err := standby.QueryRow(ctx, `SELECT count(*) FROM understudy_canary WHERE token = $1`, token).Scan(&n); err != nil {
			return 0, fmt.Errorf("reading the canary on the standby: %w", err)
		}
		if n == 1 {
			return time.Since(start), nil
		}
		time.Sleep(500 * time.Microsecond)
	}
	return 0, fmt.Errorf("the canary written on the primary did not reach the standby within %s", timeout)
}

// ProveReadOnly tries a write on a standby and returns the server's refusal.
func ProveReadOnly(ctx context.Context, standby *pgx.Conn) (string, error) {
	_, err := standby.Exec(ctx, `INSERT INTO understudy_canary (token) VALUES ('must-fail')`)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "25006" { // read_only_sql_transaction
		return pgErr.Message, nil
	}
	if err == nil {
		return "", errors.New("the standby accepted a write: it is not in recovery")
	}
	return "", fmt.Errorf("writing on the standby failed, but not as a read-only server would: %w", err)
}
