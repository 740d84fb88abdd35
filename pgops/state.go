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
