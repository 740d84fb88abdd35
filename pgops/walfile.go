package pgops

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/understudy-dev/understudy/pgconf"
)

// WAL file names, from the PostgreSQL documentation ("WAL Internals",
// src/include/access/xlog_internal.h): a segment is named by three 8-digit
// upper-case hex fields, the timeline, then the segment number split into
// a "log" part and a segment-in-log part, where a log holds 4 GiB
// (0x100000000 bytes) of WAL. A timeline's history file is
// %08X.history: lines of "parentTLI<TAB>switchpoint<TAB>reason".

// Timeline is a WAL timeline ID.
type Timeline uint32

// Segment names one WAL segment file: a timeline and the segment's number
// (its start LSN divided by the segment size).
type Segment struct {
	TLI Timeline
	No  uint64
}

// DefaultSegSize is initdb's default wal_segment_size.
const DefaultSegSize = 16 << 20

// SegmentOf is the segment that holds lsn on timeline tli.
func SegmentOf(tli Timeline, lsn LSN, segSize uint64) Segment {
	return Segment{TLI: tli, No: uint64(lsn) / segSize}
}

// StartLSN is the first position in the segment.
func (s Segment) StartLSN(segSize uint64) LSN { return LSN(s.No * segSize) }

// Name is the segment's file name.
func (s Segment) Name(segSize uint64) string {
	perLog := uint64(0x100000000) / segSize
	return fmt.Sprintf("%08X%08X%08X", uint32(s.TLI), uint32(s.No/perLog), uint32(s.No%perLog))
}

// ParseSegmentName reads a segment file name (24 hex digits, nothing else).
func ParseSegmentName(name string, segSize uint64) (Segment, bool) {
	if len(name) != 24 || segSize == 0 {
		return Segment{}, false
	}
	var f [3]uint64
	for i := range f {
		v, err := strconv.ParseUint(name[i*8:i*8+8], 16, 32)
		if err != nil || strings.ToUpper(name[i*8:i*8+8]) != name[i*8:i*8+8] {
			return Segment{}, false
		}
		f[i] = v
	}
	perLog := uint64(0x100000000) / segSize
	if f[2] >= perLog {
		return Segment{}, false
	}
	return Segment{TLI: Timeline(f[0]), No: f[1]*perLog + f[2]}, true
}

// HistoryFileName is timeline tli's history file name.
func HistoryFileName(tli Timeline) string { return fmt.Sprintf("%08X.history", uint32(tli)) }

// ParseHistoryFileName reads a history file name.
func ParseHistoryFileName(name string) (Timeline, bool) {
	hex, ok := strings.CutSuffix(name, ".history")
	if !ok || len(hex) != 8 {
		return 0, false
	}
	v, err := strconv.ParseUint(hex, 16, 32)
	if err != nil || strings.ToUpper(hex) != hex {
		return 0, false
	}
	return Timeline(v), true
}

// TimelineStep is one line of a history file: timeline Parent ended at
// Switch, where its child began.
type TimelineStep struct {
	Parent Timeline
	Switch LSN
}

// ParseHistory reads a history file's steps, oldest first.
func ParseHistory(text string) ([]TimelineStep, error) {
	var steps []TimelineStep
	for i, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) < 2 {
			return nil, fmt.Errorf("history line %d %q: want a timeline and a switchpoint", i+1, line)
		}
		tli, err := strconv.ParseUint(f[0], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("history line %d: timeline %q: %w", i+1, f[0], err)
		}
		sw, err := ParseLSN(f[1])
		if err != nil {
			return nil, fmt.Errorf("history line %d: %w", i+1, err)
		}
		// Timelines increase. Switchpoints need not: a recovery that stops
		// on an ancestor of its target timeline writes the target's history
		// and then its own, earlier, end (xlog.c, writeTimeLineHistory).
		if len(steps) > 0 && Timeline(tli) <= steps[len(steps)-1].Parent {
			return nil, fmt.Errorf("history line %d %q: timelines must increase", i+1, line)
		}
		steps = append(steps, TimelineStep{Parent: Timeline(tli), Switch: sw})
	}
	return steps, nil
}

// ReplicationInfo is what a physical replication connection reports about
// the server: whether it is a standby (in_hot_standby, reported at
// connect time by PostgreSQL 14 and later), its system identifier,
// timeline and WAL position (IDENTIFY_SYSTEM), and its segment size.
type ReplicationInfo struct {
	Standby  bool
	SystemID string
	Timeline Timeline
	XLogPos  LSN
	SegSize  uint64
}

// IdentifyReplication asks a replication connection (replication=true)
// who it is, with the replication protocol's IDENTIFY_SYSTEM and SHOW.
func IdentifyReplication(ctx context.Context, c *pgconn.PgConn) (ReplicationInfo, error) {
	ri, err := IdentifySystem(ctx, c)
	if err != nil {
		return ri, err
	}
	res, err := c.Exec(ctx, "SHOW wal_segment_size").ReadAll()
	if err != nil {
		return ri, fmt.Errorf("SHOW wal_segment_size: %w", err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 {
		return ri, errors.New("SHOW wal_segment_size: an unexpected answer")
	}
	size, err := pgconf.ParseSize(string(res[0].Rows[0][0]), "B")
	if err != nil || size <= 0 {
		return ri, fmt.Errorf("wal_segment_size %q: %v", res[0].Rows[0][0], err)
	}
	ri.SegSize = uint64(size)
	return ri, nil
}

// IdentifySystem is IdentifyReplication without the segment size (one
// round trip): IDENTIFY_SYSTEM, and in_hot_standby as reported at connect.
func IdentifySystem(ctx context.Context, c *pgconn.PgConn) (ReplicationInfo, error) {
	var ri ReplicationInfo
	ri.Standby = c.ParameterStatus("in_hot_standby") == "on"
	res, err := c.Exec(ctx, "IDENTIFY_SYSTEM").ReadAll()
	if err != nil {
		return ri, fmt.Errorf("IDENTIFY_SYSTEM: %w", err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) < 3 {
		return ri, errors.New("IDENTIFY_SYSTEM: an unexpected answer")
	}
	row := res[0].Rows[0]
	ri.SystemID = string(row[0])
	tli, err := strconv.ParseUint(string(row[1]), 10, 32)
	if err != nil {
		return ri, fmt.Errorf("IDENTIFY_SYSTEM timeline %q: %w", row[1], err)
	}
	ri.Timeline = Timeline(tli)
	if ri.XLogPos, err = ParseLSN(string(row[2])); err != nil {
		return ri, fmt.Errorf("IDENTIFY_SYSTEM position: %w", err)
	}
	return ri, nil
}

// Replication slot commands of the replication protocol.

// CreatePhysicalSlot creates a physical slot that reserves WAL now; it
// reports false when the slot already exists (SQLSTATE 42710).
func CreatePhysicalSlot(ctx context.Context, c *pgconn.PgConn, name string) (bool, error) {
	_, err := c.Exec(ctx, "CREATE_REPLICATION_SLOT "+pgx.Identifier{name}.Sanitize()+" PHYSICAL RESERVE_WAL").ReadAll()
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42710" {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("creating replication slot %s: %w", name, err)
	}
	return true, nil
}

// DropPhysicalSlot drops a slot; a missing slot is not an error, a slot in
// use is reported as ErrSlotActive.
func DropPhysicalSlot(ctx context.Context, c *pgconn.PgConn, name string) error {
	_, err := c.Exec(ctx, "DROP_REPLICATION_SLOT "+pgx.Identifier{name}.Sanitize()).ReadAll()
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "42704":
			return nil
		case "55006":
			return ErrSlotActive
		}
	}
	if err != nil {
		return fmt.Errorf("dropping replication slot %s: %w", name, err)
	}
	return nil
}

// ErrSlotActive: the slot is in use by a running receiver.
var ErrSlotActive = errors.New("the slot is in use")

// RecoveryEnd reads, on a server that just finished recovery, its timeline
// and the time of the last transaction it replayed.
func RecoveryEnd(ctx context.Context, c *pgx.Conn) (Timeline, time.Time, error) {
	var tl int64
	var last *time.Time
	err := c.QueryRow(ctx, `SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint, pg_last_xact_replay_timestamp()`).Scan(&tl, &last)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("reading where recovery ended: %w", err)
	}
	var t time.Time
	if last != nil {
		t = *last
	}
	return Timeline(tl), t, nil
}

// ReadHistoryFile reads timeline tl's history file from pg_wal.
func ReadHistoryFile(ctx context.Context, c *pgx.Conn, tl Timeline) (string, error) {
	var hist string
	if err := c.QueryRow(ctx, `SELECT pg_read_file('pg_wal/' || $1)`, HistoryFileName(tl)).Scan(&hist); err != nil {
		return "", fmt.Errorf("reading %s: %w", HistoryFileName(tl), err)
	}
	return hist, nil
}

// ReadReplicationSlot reads a physical slot's restart_lsn over a
// replication connection (READ_REPLICATION_SLOT, PostgreSQL 15 and
// later). For a slot a receiver with --synchronous feeds, that is what the
// receiver has flushed.
func ReadReplicationSlot(ctx context.Context, c *pgconn.PgConn, name string) (LSN, Timeline, error) {
	res, err := c.Exec(ctx, "READ_REPLICATION_SLOT "+pgx.Identifier{name}.Sanitize()).ReadAll()
	if err != nil {
		return 0, 0, fmt.Errorf("READ_REPLICATION_SLOT %s: %w", name, err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) < 3 || res[0].Rows[0][1] == nil {
		return 0, 0, fmt.Errorf("slot %s does not exist", name)
	}
	row := res[0].Rows[0]
	lsn, err := ParseLSN(string(row[1]))
	if err != nil {
		return 0, 0, err
	}
	var tli uint64
	if row[2] != nil {
		tli, _ = strconv.ParseUint(string(row[2]), 10, 32)
	}
	return lsn, Timeline(tli), nil
}

// InHotStandby asks a replication connection whether the server is in
// recovery now (SHOW in_hot_standby, PostgreSQL 14 and later: its value is
// computed when shown, so a long-held connection sees a promotion).
func InHotStandby(ctx context.Context, c *pgconn.PgConn) (bool, error) {
	res, err := c.Exec(ctx, "SHOW in_hot_standby").ReadAll()
	if err != nil {
		return false, fmt.Errorf("SHOW in_hot_standby: %w", err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 1 {
		return false, errors.New("SHOW in_hot_standby: an unexpected answer")
	}
	return string(res[0].Rows[0][0]) == "on", nil
}

// SlotExists asks over a replication connection whether a physical slot
// exists (READ_REPLICATION_SLOT, PostgreSQL 15 and later; an error before).
func SlotExists(ctx context.Context, c *pgconn.PgConn, name string) (bool, error) {
	res, err := c.Exec(ctx, "READ_REPLICATION_SLOT "+pgx.Identifier{name}.Sanitize()).ReadAll()
	if err != nil {
		return false, fmt.Errorf("READ_REPLICATION_SLOT %s: %w", name, err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) < 1 {
		return false, errors.New("READ_REPLICATION_SLOT: an unexpected answer")
	}
	return res[0].Rows[0][0] != nil, nil
}
