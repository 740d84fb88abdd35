package pgops

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Facts is what one server reports about itself in a single round of
// queries: identity, role, WAL positions and the settings that matter for
// replication.
type Facts struct {
	Version          string            `json:"version"`
	SystemIdentifier string            `json:"system_identifier"`
	InRecovery       bool              `json:"in_recovery"`
	Timeline         Timeline          `json:"timeline"`
	CurrentLSN       LSN               `json:"current_lsn,omitempty"` // primary: pg_current_wal_lsn()
	ReceiveLSN       LSN               `json:"receive_lsn,omitempty"` // standby: pg_last_wal_receive_lsn()
	ReplayLSN        LSN               `json:"replay_lsn,omitempty"`  // standby: pg_last_wal_replay_lsn()
	LastReplay       *time.Time        `json:"last_replay,omitempty"` // standby: pg_last_xact_replay_timestamp()
	DataChecksums    bool              `json:"data_checksums"`
	Settings         map[string]string `json:"settings"`
	PendingRestart   []string          `json:"pending_restart,omitempty"`
	Receiver         *Receiver         `json:"wal_receiver,omitempty"`
}

// Receiver is a standby's pg_stat_wal_receiver row.
type Receiver struct {
	Status     string   `json:"status"`
	SenderHost string   `json:"sender_host"`
	SenderPort int      `json:"sender_port"`
	SlotName   string   `json:"slot_name"`
	Timeline   Timeline `json:"received_timeline"`
	FlushedLSN LSN      `json:"flushed_lsn"`
}

// FactSettings are the settings Facts reads: replication, parity
// (PostgreSQL docs, hot-standby.html) and TLS.
var FactSettings = []string{
	"wal_level", "hot_standby", "wal_log_hints", "full_page_writes", "max_wal_senders",
	"max_replication_slots", "max_slot_wal_keep_size", "wal_sender_timeout", "wal_receiver_timeout",
	"max_connections", "max_prepared_transactions", "max_locks_per_transaction", "max_worker_processes",
	"synchronous_standby_names", "synchronous_commit", "ssl", "hba_file", "config_file", "primary_conninfo",
	"primary_slot_name", "recovery_target_timeline", "listen_addresses", "port", "server_version_num",
}

// ReadFacts reads a server's Facts.
func ReadFacts(ctx context.Context, c *pgx.Conn) (Facts, error) {
	f := Facts{Settings: map[string]string{}}
	var sysid int64
	var tli int64
	var lsn1, lsn2, lsn3 *string
	// A primary's timeline is the one its WAL is written on now (the
	// checkpoint's lags behind a promotion until the next checkpoint).
	err := c.QueryRow(ctx, `SELECT version(), (SELECT system_identifier FROM pg_control_system()),
		pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN (SELECT timeline_id FROM pg_control_checkpoint())
			ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
		CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
		pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
		pg_last_xact_replay_timestamp(), current_setting('data_checksums') = 'on'`).
		Scan(&f.Version, &sysid, &f.InRecovery, &tli, &lsn1, &lsn2, &lsn3, &f.LastReplay, &f.DataChecksums)
	if err != nil {
		return f, fmt.Errorf("reading the server's identity and WAL position: %w", err)
	}
	f.SystemIdentifier = fmt.Sprint(uint64(sysid))
	f.Timeline = Timeline(tli)
	for _, l := range []struct {
		from *string
		to   *LSN
	}{{lsn1, &f.CurrentLSN}, {lsn2, &f.ReceiveLSN}, {lsn3, &f.ReplayLSN}} {
		if l.from == nil {
			continue
		}
		if *l.to, err = ParseLSN(*l.from); err != nil {
			return f, fmt.Errorf("reading the server's WAL position: %w", err)
		}
	}
	rows, err := c.Query(ctx, `SELECT name, setting, pending_restart FROM pg_settings WHERE name = ANY($1)`, FactSettings)
	if err != nil {
		return f, fmt.Errorf("reading pg_settings: %w", err)
	}
	for rows.Next() {
		var name, value string
		var pending bool
		if err := rows.Scan(&name, &value, &pending); err != nil {
			return f, err
		}
		f.Settings[name] = value
		if pending {
			f.PendingRestart = append(f.PendingRestart, name)
		}
	}
	if err := rows.Err(); err != nil {
		return f, fmt.Errorf("reading pg_settings: %w", err)
	}
	if f.InRecovery {
		// The timeline a standby is on is the one it replays, which the
		// checkpoint only catches up with at the next restartpoint.
		var r Receiver
		var host, slot, flushed *string
		var port, tli *int
		err := c.QueryRow(ctx, `SELECT status, sender_host, sender_port, slot_name, received_tli, flushed_lsn::text FROM pg_stat_wal_receiver`).
			Scan(&r.Status, &host, &port, &slot, &tli, &flushed)
		if err == nil {
			r.SenderHost, r.SlotName = deref(host), deref(slot)
			if flushed != nil {
				if r.FlushedLSN, err = ParseLSN(*flushed); err != nil {
					return f, fmt.Errorf("reading pg_stat_wal_receiver: %w", err)
				}
			}
			if port != nil {
				r.SenderPort = *port
			}
			if tli != nil {
				r.Timeline = Timeline(*tli)
				f.Timeline = max(f.Timeline, r.Timeline)
			}
			f.Receiver = &r
		} else if err != pgx.ErrNoRows {
			return f, fmt.Errorf("reading pg_stat_wal_receiver: %w", err)
		}
	}
	return f, nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// Replication is one pg_stat_replication row on a primary.
type Replication struct {
	Name       string  `json:"application_name"`
	ClientAddr string  `json:"client_addr"`
	State      string  `json:"state"`
	SentLSN    LSN     `json:"sent_lsn,omitempty"`
	ReplayLSN  LSN     `json:"replay_lsn,omitempty"`
	LagBytes   int64   `json:"lag_bytes"`
	ReplayLag  float64 `json:"replay_lag_seconds"`
	SyncState  string  `json:"sync_state"`
	SSL        bool    `json:"ssl"`
}

// ReadReplication lists the walsenders of a primary.
func ReadReplication(ctx context.Context, c *pgx.Conn) ([]Replication, error) {
	rows, err := c.Query(ctx, `SELECT r.application_name, coalesce(host(r.client_addr), 'local'), r.state,
		coalesce(r.sent_lsn, '0/0')::text, coalesce(r.replay_lsn, '0/0')::text,
		coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn), 0)::bigint,
		coalesce(extract(epoch FROM r.replay_lag), 0)::float8, r.sync_state,
		coalesce((SELECT s.ssl FROM pg_stat_ssl s WHERE s.pid = r.pid), false)
		FROM pg_stat_replication r ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("reading pg_stat_replication: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Replication, error) {
		var r Replication
		var sent, replay string
		err := row.Scan(&r.Name, &r.ClientAddr, &r.State, &sent, &replay, &r.LagBytes, &r.ReplayLag, &r.SyncState, &r.SSL)
		if err == nil {
			if r.SentLSN, err = ParseLSN(sent); err == nil {
				r.ReplayLSN, err = ParseLSN(replay)
			}
		}
		return r, err
	})
}

// Slot is one physical replication slot.
type Slot struct {
	Name          string `json:"name"`
	Active        bool   `json:"active"`
	WALStatus     string `json:"wal_status"`               // reserved, extended, unreserved, lost
	RetainedBytes int64  `json:"retained_bytes"`           // WAL kept for it
	SafeWALBytes  *int64 `json:"safe_wal_bytes,omitempty"` // room before it is lost; nil when unlimited
}

// ReadSlots lists the physical slots of a server.
func ReadSlots(ctx context.Context, c *pgx.Conn) ([]Slot, error) {
	rows, err := c.Query(ctx, `SELECT slot_name, active, coalesce(wal_status, 'lost'),
		coalesce(pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, restart_lsn), 0)::bigint,
		safe_wal_size FROM pg_replication_slots WHERE slot_type = 'physical' ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("reading pg_replication_slots: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Slot, error) {
		var s Slot
		err := row.Scan(&s.Name, &s.Active, &s.WALStatus, &s.RetainedBytes, &s.SafeWALBytes)
		return s, err
	})
}

// EnsureSlot creates a physical slot that reserves WAL from now on, unless
// it exists. It reports whether it created one.
func EnsureSlot(ctx context.Context, c *pgx.Conn, name string) (bool, error) {
	var created bool
	err := c.QueryRow(ctx, `SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1) THEN false
		ELSE (SELECT true FROM pg_create_physical_replication_slot($1, true)) END`, name).Scan(&created)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42710" {
		// duplicate_object: made by someone else between the check and the
		// create (a failover agent and a promote, both ensuring it).
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("creating replication slot %s: %w", name, err)
	}
	return created, nil
}

// DropSlot drops a slot if it exists and is not in use.
func DropSlot(ctx context.Context, c *pgx.Conn, name string) error {
	_, err := c.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, name)
	if err != nil {
		return fmt.Errorf("dropping replication slot %s: %w", name, err)
	}
	return nil
}

// HBARule is one line of pg_hba_file_rules: the file on disk, not what was
// last loaded (view-pg-hba-file-rules.html).
type HBARule struct {
	Line      int      `json:"line"`
	Type      string   `json:"type"`
	Databases []string `json:"databases"`
	Users     []string `json:"users"`
	Address   string   `json:"address,omitempty"`
	Netmask   string   `json:"netmask,omitempty"`
	Method    string   `json:"method"`
	Error     string   `json:"error,omitempty"`
}

// ReadHBARules reads pg_hba_file_rules (superuser).
func ReadHBARules(ctx context.Context, c *pgx.Conn) ([]HBARule, error) {
	rows, err := c.Query(ctx, `SELECT coalesce(line_number, 0), coalesce(type, ''), coalesce(database, '{}'), coalesce(user_name, '{}'),
		coalesce(address, ''), coalesce(netmask, ''), coalesce(auth_method, ''), coalesce(error, '')
		FROM pg_hba_file_rules ORDER BY line_number`)
	if err != nil {
		return nil, fmt.Errorf("reading pg_hba_file_rules: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (HBARule, error) {
		var r HBARule
		err := row.Scan(&r.Line, &r.Type, &r.Databases, &r.Users, &r.Address, &r.Netmask, &r.Method, &r.Error)
		return r, err
	})
}

// Basebackup is one running pg_basebackup as the primary sees it.
type Basebackup struct {
	PID      int    `json:"pid"`
	AppName  string `json:"application_name"`
	Phase    string `json:"phase"`
	Total    int64  `json:"total_bytes"` // estimated
	Streamed int64  `json:"streamed_bytes"`
}

// ReadBasebackups reads pg_stat_progress_basebackup. When the client asked
// for no size estimate, Total falls back to the size of all databases.
func ReadBasebackups(ctx context.Context, c *pgx.Conn) ([]Basebackup, error) {
	rows, err := c.Query(ctx, `SELECT p.pid, coalesce(a.application_name, ''), p.phase,
		coalesce(p.backup_total, (SELECT sum(pg_database_size(oid)) FROM pg_database))::bigint, p.backup_streamed
		FROM pg_stat_progress_basebackup p LEFT JOIN pg_stat_activity a ON a.pid = p.pid ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("reading pg_stat_progress_basebackup: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Basebackup, error) {
		var b Basebackup
		err := row.Scan(&b.PID, &b.AppName, &b.Phase, &b.Total, &b.Streamed)
		return b, err
	})
}

// LiveSetting is a setting as the running server has it.
type LiveSetting struct {
	Name, Setting, Unit, Context, Source, SourceFile string
	PendingRestart                                   bool
}

// ReadSettings reads named settings from pg_settings.
func ReadSettings(ctx context.Context, c *pgx.Conn, names []string) (map[string]LiveSetting, error) {
	rows, err := c.Query(ctx, `SELECT name, setting, coalesce(unit, ''), context, source, coalesce(sourcefile, ''), pending_restart
		FROM pg_settings WHERE name = ANY($1)`, names)
	if err != nil {
		return nil, fmt.Errorf("reading pg_settings: %w", err)
	}
	out := map[string]LiveSetting{}
	for rows.Next() {
		var s LiveSetting
		if err := rows.Scan(&s.Name, &s.Setting, &s.Unit, &s.Context, &s.Source, &s.SourceFile, &s.PendingRestart); err != nil {
			return nil, err
		}
		out[s.Name] = s
	}
	return out, rows.Err()
}

// Reload asks the server to re-read its configuration files.
func Reload(ctx context.Context, c *pgx.Conn) error {
	if _, err := c.Exec(ctx, `SELECT pg_reload_conf()`); err != nil {
		return fmt.Errorf("reloading the configuration: %w", err)
	}
	return nil
}

// SlotUse is where a physical slot is and who holds it.
type SlotUse struct {
	Exists  bool
	Restart LSN // restart_lsn: the oldest WAL it keeps; what its user has flushed
	Active  bool
}

// ReadSlotUse reads one slot's restart_lsn and whether a session holds it.
func ReadSlotUse(ctx context.Context, c *pgx.Conn, name string) (SlotUse, error) {
	var u SlotUse
	var restart *string
	err := c.QueryRow(ctx, `SELECT restart_lsn::text, active FROM pg_replication_slots WHERE slot_name = $1`, name).Scan(&restart, &u.Active)
	if errors.Is(err, pgx.ErrNoRows) {
		return u, nil
	}
	if err != nil {
		return u, fmt.Errorf("reading replication slot %s: %w", name, err)
	}
	u.Exists = true
	if restart != nil {
		if u.Restart, err = ParseLSN(*restart); err != nil {
			return u, fmt.Errorf("reading replication slot %s: %w", name, err)
		}
	}
	return u, nil
}

// EndSlotSession ends the session that holds a slot (its walsender), if
// any, so the slot can be dropped; the client sees its connection end.
func EndSlotSession(ctx context.Context, c *pgx.Conn, name string) error {
	_, err := c.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, name)
	if err != nil {
		return fmt.Errorf("ending the session that holds replication slot %s: %w", name, err)
	}
	return nil
}
