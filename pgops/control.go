package pgops

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

// LSN is a WAL position (pg_lsn): the "X/Y" text form is two 32-bit hex
// halves (PostgreSQL docs, "pg_lsn Type").
type LSN uint64

// ParseLSN reads "X/Y". A malformed value is an error, never zero.
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return 0, fmt.Errorf("%q is not an LSN (X/Y)", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%q is not an LSN (X/Y)", s)
	}
	return LSN(h<<32 | l), nil
}

func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint64(l)>>32, uint32(l)) }

// MarshalText writes the "X/Y" form, so JSON carries LSNs as PostgreSQL
// prints them.
func (l LSN) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText reads the "X/Y" form.
func (l *LSN) UnmarshalText(b []byte) error {
	v, err := ParseLSN(string(b))
	*l = v
	return err
}

// UnmarshalJSON reads "X/Y", or a number (what objects written before LSNs
// were text hold).
func (l *LSN) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		return l.UnmarshalText([]byte(s))
	}
	var n uint64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("%s is not an LSN (\"X/Y\")", b)
	}
	*l = LSN(n)
	return nil
}

// ControlData is the part of a cluster's control file (global/pg_control)
// that a role change reads.
type ControlData struct {
	SystemID   string   // Database system identifier
	State      string   // as pg_controldata prints it: "shut down", "in production", ...
	Checkpoint LSN      // Latest checkpoint location
	Timeline   Timeline // Latest checkpoint's TimeLineID
}

// ParseControlData reads pg_controldata's output (run with LC_ALL=C: the
// labels are translated otherwise).
func ParseControlData(out string) (ControlData, error) {
	var cd ControlData
	var ckpt string
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch strings.TrimSpace(k) {
		case "Database cluster state":
			cd.State = v
		case "Database system identifier":
			cd.SystemID = v
		case "Latest checkpoint location":
			ckpt = v
		case "Latest checkpoint's TimeLineID":
			tl, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return cd, fmt.Errorf("pg_controldata's TimeLineID %q is not a number", v)
			}
			cd.Timeline = Timeline(tl)
		}
	}
	if cd.State == "" || ckpt == "" {
		return cd, fmt.Errorf("pg_controldata output not understood: %.200q", out)
	}
	lsn, err := ParseLSN(ckpt)
	if err != nil {
		return cd, fmt.Errorf("pg_controldata's latest checkpoint location: %w", err)
	}
	cd.Checkpoint = lsn
	return cd, nil
}

// dbStates are the DBState values of src/include/catalog/pg_control.h,
// named as pg_controldata names them.
var dbStates = []string{"starting up", "shut down", "shut down in recovery", "shutting down",
	"in crash recovery", "in archive recovery", "in production"}

// ErrControlFileCRC means the bytes are not an intact pg_control: torn,
// truncated, or not a control file at all.
var ErrControlFileCRC = errors.New("control file checksum does not match")

// ParseControlFile reads global/pg_control itself, so a stopped node's
// state can be read by copying one small file instead of starting a
// program next to it. The leading fields of ControlFileData have kept
// their places since PostgreSQL 11 (pg_control_version 1100):
// system_identifier (uint64, offset 0), pg_control_version (uint32, 8),
// catalog_version_no (uint32, 12), state (DBState, 16), time (pg_time_t,
// 24), checkPoint (XLogRecPtr, 32), and checkPointCopy, whose redo
// (XLogRecPtr, 40) is followed by ThisTimeLineID (uint32, 48). The struct
// ends with a CRC-32C of everything before it; its offset differs between
// versions, so it is found by checking where the stored CRC matches.
// The file is in the server's byte order: little-endian on every platform
// the official images ship.
func ParseControlFile(b []byte) (ControlData, error) {
	var cd ControlData
	if len(b) < 64 {
		return cd, fmt.Errorf("a pg_control file is 8192 bytes, got %d", len(b))
	}
	le := binary.LittleEndian
	version := le.Uint32(b[8:])
	if version < 1100 || version > 9999 {
		return cd, fmt.Errorf("pg_control version %d is not one understudy reads (PostgreSQL 11 or later)", version)
	}
	if !controlCRCMatches(b) {
		return cd, ErrControlFileCRC
	}
	state := le.Uint32(b[16:])
	if int(state) >= len(dbStates) {
		return cd, fmt.Errorf("pg_control holds an unknown cluster state %d", state)
	}
	cd.SystemID = strconv.FormatUint(le.Uint64(b[0:]), 10)
	cd.State = dbStates[state]
	cd.Checkpoint = LSN(le.Uint64(b[32:]))
	cd.Timeline = Timeline(le.Uint32(b[48:]))
	return cd, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// controlCRCMatches looks for the CRC field: ControlFileData is a few
// hundred bytes, its crc the last member, 4-byte aligned.
func controlCRCMatches(b []byte) bool {
	for off := 64; off+4 <= len(b) && off <= 1024; off += 4 {
		if crc32.Checksum(b[:off], castagnoli) == binary.LittleEndian.Uint32(b[off:]) {
			return true
		}
	}
	return false
}
