package pgops

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The statements of role changes (PostgreSQL docs, "System Administration
// Functions": Recovery Control, Backup Control; "Log-Shipping Standby
// Servers": timeline history files).

// Checkpoint forces a checkpoint, so a following clean shutdown or
// pg_rewind has little to do.
func Checkpoint(ctx context.Context, c *pgx.Conn) error {
	if _, err := c.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("CHECKPOINT: %w", err)
	}
	return nil
}

// WALPositions are a standby's received and replayed positions (0 when
// none yet).
type WALPositions struct{ Received, Replayed LSN }

// ReadWALPositions reads pg_last_wal_receive_lsn and pg_last_wal_replay_lsn.
func ReadWALPositions(ctx context.Context, c *pgx.Conn) (WALPositions, error) {
	var recv, replay string
	if err := c.QueryRow(ctx, `SELECT coalesce(pg_last_wal_receive_lsn()::text, '0/0'), coalesce(pg_last_wal_replay_lsn()::text, '0/0')`).Scan(&recv, &replay); err != nil {
		return WALPositions{}, fmt.Errorf("reading the WAL position: %w", err)
	}
	r, err1 := ParseLSN(recv)
	p, err2 := ParseLSN(replay)
	if err := errors.Join(err1, err2); err != nil {
		return WALPositions{}, fmt.Errorf("reading the WAL position: %w", err)
	}
	return WALPositions{Received: r, Replayed: p}, nil
}

// Known is the further of the two: all the WAL this standby has.
func (w WALPositions) Known() LSN { return max(w.Received, w.Replayed) }

// CurrentWALLSN is a primary's pg_current_wal_lsn().
func CurrentWALLSN(ctx context.Context, c *pgx.Conn) (LSN, error) {
	var s string
	if err := c.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&s); err != nil {
		return 0, fmt.Errorf("reading pg_current_wal_lsn(): %w", err)
	}
	return ParseLSN(s)
}

// ErrPromoteRefused is a pg_promote that returned false: the server did
// not take the request (it is not a standby, or the signal failed).
var ErrPromoteRefused = errors.New("pg_promote returned false: the server did not take the promote request")

// Promote promotes a standby and waits until it accepts writes, polling
// more finely than pg_promote(true)'s 100 ms, since this is the write pause.
func Promote(ctx context.Context, c *pgx.Conn, timeout time.Duration) error {
	var ok bool
	if err := c.QueryRow(ctx, `SELECT pg_promote(false)`).Scan(&ok); err != nil {
		return fmt.Errorf("pg_promote: %w", err)
	}
	if !ok {
		return ErrPromoteRefused
	}
	deadline := time.Now().Add(timeout)
	for {
		rec, err := InRecovery(ctx, c)
		if err != nil {
			return err
		}
		if !rec {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still in recovery %s after pg_promote", timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// PrimaryConninfoSetting is a standby's primary_conninfo.
func PrimaryConninfoSetting(ctx context.Context, c *pgx.Conn) (string, error) {
	var s string
	if err := c.QueryRow(ctx, "SHOW primary_conninfo").Scan(&s); err != nil {
		return "", fmt.Errorf("SHOW primary_conninfo: %w", err)
	}
	return s, nil
}

// FollowerState is a standby's walsender state on the primary, with
// ", behind" when it has not replayed up to target yet; "" when it is not
// connected.
func FollowerState(ctx context.Context, c *pgx.Conn, node string, target LSN) (string, error) {
	var state string
	err := c.QueryRow(ctx, `SELECT coalesce((SELECT state || CASE WHEN replay_lsn >= $2::pg_lsn THEN '' ELSE ', behind' END
		FROM pg_stat_replication WHERE application_name = $1 LIMIT 1), '')`, node, target.String()).Scan(&state)
	if err != nil {
		return "", fmt.Errorf("reading pg_stat_replication: %w", err)
	}
	return state, nil
}

// TimelineSwitchpoint reads the primary's history file for timeline
// current and returns where timeline from ended.
func TimelineSwitchpoint(ctx context.Context, c *pgx.Conn, current, from Timeline) (LSN, error) {
	hist, err := ReadHistoryFile(ctx, c, current)
	if err != nil {
		return 0, fmt.Errorf("reading timeline %d's history: %w", current, err)
	}
	return ParseSwitchpoint(hist, from)
}

// ParseSwitchpoint finds timeline from's switchpoint in a history file's
// text (ParseHistory).
func ParseSwitchpoint(hist string, from Timeline) (LSN, error) {
	steps, err := ParseHistory(hist)
	if err != nil {
		return 0, err
	}
	for _, s := range steps {
		if s.Parent == from {
			return s.Switch, nil
		}
	}
	return 0, fmt.Errorf("timeline %d is not in this history: the node belongs to another branch", from)
}
