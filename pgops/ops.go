package pgops

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// EnsureReplicationRole creates or updates the replication role from a
// verifier computed here: the plaintext never reaches the server. Statement
// logging is turned off for the session as a second guard (the verifier is
// still a secret; PostgreSQL docs, CREATE ROLE: the password can end up in logs).
func EnsureReplicationRole(ctx context.Context, c *pgx.Conn, role, password string) error {
	return ensureLoginRole(ctx, c, role, password, "LOGIN REPLICATION")
}

// ensureLoginRole runs CREATE or ALTER ROLE role WITH attrs and a SCRAM
// verifier of password computed here, with statement logging off for the
// session.
func ensureLoginRole(ctx context.Context, c *pgx.Conn, role, password, attrs string) error {
	v, err := SCRAMVerifier(password, nil, SCRAMIterations)
	if err != nil {
		return err
	}
	for _, s := range []string{"SET log_statement = 'none'", "SET log_min_error_statement = 'panic'", "SET log_min_duration_statement = -1"} {
		if _, err := c.Exec(ctx, s); err != nil {
			return fmt.Errorf("preparing to create role %s: %w", role, err)
		}
	}
	var exists bool
	if err := c.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role).Scan(&exists); err != nil {
		return fmt.Errorf("looking up role %s: %w", role, err)
	}
	verb := "CREATE"
	if exists {
		verb = "ALTER"
	}
	// The verifier alphabet is [A-Za-z0-9+/=$:-]: safe inside a literal.
	sql := fmt.Sprintf("%s ROLE %s WITH %s PASSWORD '%s'", verb, pgx.Identifier{role}.Sanitize(), attrs, v)
	if _, err := c.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s ROLE %s: %w", verb, role, err)
	}
	return nil
}

// RoleState says whether the replication role is as understudy wants it.
type RoleState struct {
	Exists, Login, Replication, PasswordMatches bool
}

// OK reports whether nothing needs changing.
func (r RoleState) OK() bool { return r.Exists && r.Login && r.Replication && r.PasswordMatches }

// ReadRole checks the replication role against the password without
// sending the password anywhere: the stored verifier is recomputed here.
func ReadRole(ctx context.Context, c *pgx.Conn, role, password string) (RoleState, error) {
	var r RoleState
	var stored *string
	err := c.QueryRow(ctx, `SELECT rolcanlogin, rolreplication, rolpassword FROM pg_authid WHERE rolname = $1`, role).
		Scan(&r.Login, &r.Replication, &stored)
	if err == pgx.ErrNoRows {
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("reading role %s: %w", role, err)
	}
	r.Exists = true
	r.PasswordMatches = stored != nil && VerifierMatches(*stored, password)
	return r, nil
}

// RewindFunctions are what pg_rewind's source role needs besides LOGIN
// (PostgreSQL docs, app-pgrewind.html).
var RewindFunctions = []string{
	"pg_catalog.pg_ls_dir(text, boolean, boolean)",
	"pg_catalog.pg_stat_file(text, boolean)",
	"pg_catalog.pg_read_binary_file(text)",
	"pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
}

// RewindGrantsMissing reports whether the replication role lacks EXECUTE
// on any function pg_rewind uses.
func RewindGrantsMissing(ctx context.Context, c *pgx.Conn, role string) (bool, error) {
	for _, f := range RewindFunctions {
		var has bool
		if err := c.QueryRow(ctx, `SELECT has_function_privilege($1, $2, 'EXECUTE')`, role, f).Scan(&has); err != nil {
			return false, fmt.Errorf("checking EXECUTE on %s for %s: %w", f, role, err)
		}
		if !has {
			return true, nil
		}
	}
	return false, nil
}

// DatabaseBytes is the size of every database: what a clone copies.
func DatabaseBytes(ctx context.Context, c *pgx.Conn) (int64, error) {
	var n int64
	if err := c.QueryRow(ctx, `SELECT coalesce(sum(pg_database_size(oid)), 0)::bigint FROM pg_database`).Scan(&n); err != nil {
		return 0, fmt.Errorf("reading the database size: %w", err)
	}
	return n, nil
}

// ResetAutoConf removes a setting an ALTER SYSTEM put in postgresql.auto.conf.
func ResetAutoConf(ctx context.Context, c *pgx.Conn, name string) error {
	if _, err := c.Exec(ctx, "ALTER SYSTEM RESET "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("ALTER SYSTEM RESET %s: %w", name, err)
	}
	return nil
}

// StandbyState is the state of a standby's walsender on the primary
// (streaming, catchup, ...), "" when it is not connected.
func StandbyState(ctx context.Context, c *pgx.Conn, node string) (string, error) {
	var state string
	err := c.QueryRow(ctx, `SELECT coalesce((SELECT state FROM pg_stat_replication WHERE application_name = $1 LIMIT 1), '')`, node).Scan(&state)
	if err != nil {
		return "", fmt.Errorf("reading pg_stat_replication: %w", err)
	}
	return state, nil
}

// ReceiverStreaming reports, on a standby, whether its own walreceiver is
// streaming (pg_stat_wal_receiver). The primary's pg_stat_replication
// alone cannot tell: a clone's pg_basebackup -X stream shows there as a
// streaming walsender with the node's name too.
func ReceiverStreaming(ctx context.Context, c *pgx.Conn) (bool, error) {
	var n int
	err := c.QueryRow(ctx, `SELECT count(*)::int FROM pg_stat_wal_receiver WHERE status = 'streaming'`).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("reading pg_stat_wal_receiver: %w", err)
	}
	return n > 0, nil
}

// InRecovery reports pg_is_in_recovery().
func InRecovery(ctx context.Context, c *pgx.Conn) (bool, error) {
	var rec bool
	if err := c.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&rec); err != nil {
		return false, fmt.Errorf("reading pg_is_in_recovery(): %w", err)
	}
	return rec, nil
}

// EnsureRewindGrants lets the replication role serve pg_rewind, so a
// crashed former primary can be rewound without a superuser password. It
// reports whether it granted anything.
func EnsureRewindGrants(ctx context.Context, c *pgx.Conn, role string) (bool, error) {
	granted := false
	for _, f := range RewindFunctions {
		var has bool
		if err := c.QueryRow(ctx, `SELECT has_function_privilege($1, $2, 'EXECUTE')`, role, f).Scan(&has); err != nil {
			return granted, fmt.Errorf("checking EXECUTE on %s for %s: %w", f, role, err)
		}
		if has {
			continue
		}
		if _, err := c.Exec(ctx, fmt.Sprintf("GRANT EXECUTE ON FUNCTION %s TO %s", f, pgx.Identifier{role}.Sanitize())); err != nil {
			return granted, fmt.Errorf("granting EXECUTE on %s to %s: %w", f, role, err)
		}
		granted = true
	}
	return granted, nil
}

// Setting names ALTER SYSTEM may be used on by understudy. Names are SQL
// identifiers and cannot be bound as parameters, so only these are accepted.
type SystemSetting string

const (
	// WALRetrieveRetryInterval is how long a standby's startup process
	// waits after a failed attempt to get WAL before trying again
	// (PostgreSQL docs, "Standby Servers": wal_retrieve_retry_interval).
	WALRetrieveRetryInterval SystemSetting = "wal_retrieve_retry_interval"
	// PrimaryConninfo is a standby's connection to its upstream (reloadable since 13).
	PrimaryConninfo SystemSetting = "primary_conninfo"
)

// SetSystem writes a setting into postgresql.auto.conf and reloads, so it
// takes effect without a restart for settings of context sighup.
func SetSystem(ctx context.Context, c *pgx.Conn, name SystemSetting, value string) error {
	if _, err := c.Exec(ctx, "ALTER SYSTEM SET "+string(name)+" = "+QuoteLiteral(value)); err != nil {
		return fmt.Errorf("ALTER SYSTEM SET %s: %w", name, err)
	}
	return Reload(ctx, c)
}

// ResetSystem removes a setting from postgresql.auto.conf and reloads.
func ResetSystem(ctx context.Context, c *pgx.Conn, name SystemSetting) error {
	if _, err := c.Exec(ctx, "ALTER SYSTEM RESET "+string(name)); err != nil {
		return fmt.Errorf("ALTER SYSTEM RESET %s: %w", name, err)
	}
	return Reload(ctx, c)
}

// QuoteLiteral quotes a string as an SQL literal (standard_conforming_strings on).
func QuoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
