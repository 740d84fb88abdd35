package pgconf

import (
	"fmt"
	"path"
	"strconv"
	"strings"
)

// AppAuthMethod is the method for ordinary password logins, matching what the
// official image writes (it follows password_encryption: md5 before 14,
// scram-sha-256 from 14: PostgreSQL docs, password_encryption). md5 also accepts SCRAM
// verifiers, so on 13 both kinds of stored password keep working.
func AppAuthMethod(major int) string {
	if major < 14 {
		return "md5"
	}
	return "scram-sha-256"
}

// HBA renders the managed pg_hba file. It replaces $PGDATA/pg_hba.conf (via
// hba_file, so it survives a re-clone and is the same on every node), allows
// replication only between the nodes in both directions, and keeps the
// image's password login for everything else (the postgres image's docs, POSTGRES_HOST_AUTH_METHOD).
func HBA(c Cluster) string {
	var b strings.Builder
	b.WriteString("# pg_hba.conf managed by understudy: the same file on every node.\n")
	b.WriteString("# Re-run `understudy init` to change it; edits here are overwritten.\n")
	b.WriteString("# The first matching line decides.\n")
	var rows [][]string
	row := func(cols ...string) { rows = append(rows, cols) }
	row("# TYPE", "DATABASE", "USER", "ADDRESS", "METHOD")
	if c.ContainerDefaults {
		row("# Inside the container, as the official image allows by default:")
		row("local", "all", "all", "", "trust")
		row("host", "all", "all", "127.0.0.1/32", "trust")
		row("host", "all", "all", "::1/128", "trust")
		row("local", "replication", "all", "", "trust")
		row("host", "replication", "all", "127.0.0.1/32", "trust")
		row("host", "replication", "all", "::1/128", "trust")
	} else {
		row("# Local socket, for the operator on this machine:")
		row("local", "all", "all", "", "trust")
		row("local", "replication", "all", "", "trust")
	}
	row("# Streaming replication between the nodes only, in both directions:")
	for _, n := range c.Nodes {
		row("host", "replication", c.ReplUser, hostCIDR(n.Addr), "scram-sha-256", "# "+n.Name)
	}
	row("# The boot script asks each peer whether it is the primary:")
	for _, n := range c.Nodes {
		row("host", "postgres", c.ReplUser, hostCIDR(n.Addr), "scram-sha-256", "# "+n.Name)
	}
	row("# The replication role is refused everywhere else:")
	row("host", "all", c.ReplUser, "0.0.0.0/0", "reject")
	row("host", "all", c.ReplUser, "::/0", "reject")
	row("# Everything else: password login from anywhere, as the image allows:")
	row("host", "all", "all", "all", AppAuthMethod(c.Major))
	writeAligned(&b, rows)
	return b.String()
}

// Setting is one line of the settings file.
type Setting struct {
	Name, Value, Why string
}

// Settings are the replication settings, the same on every node so that a
// switchover needs no edit (PostgreSQL docs, hot-standby.html: settings a standby needs at least as high as its primary).
func Settings(c Cluster) []Setting {
	s := []Setting{
		{"hba_file", quote(c.HBAFile), "who may connect: the pg_hba rules understudy writes (" + path.Base(c.HBAFile) + " beside this file: replication between the nodes only), kept outside PGDATA so a re-clone keeps them"},
		{"listen_addresses", quote("*"), "peers and the app connect over the private network"},
		{"wal_level", "replica", "enough WAL for a physical standby"},
		{"max_wal_senders", "10", "one per standby plus clones; PostgreSQL's default, stated so no -c flag lowers it"},
		{"max_replication_slots", "10", "one slot per standby"},
		{"max_slot_wal_keep_size", quote(c.WALCap), "a slot may hold at most this much WAL; past it the standby must re-clone instead of filling the disk"},
		{"wal_log_hints", "on", "lets pg_rewind bring a former primary back without a full clone"},
		{"hot_standby", "on", "a standby answers read-only queries"},
		{"wal_sender_timeout", quote("10s"), "a primary drops a vanished standby within seconds, freeing its slot"},
		{"wal_receiver_timeout", quote("10s"), "a standby notices a vanished primary within seconds"},
		{"wal_receiver_status_interval", quote("2s"), "the primary sees the standby's progress every 2 s"},
		{"wal_retrieve_retry_interval", quote("2s"), "a standby retries a lost connection every 2 s"},
		{"tcp_keepalives_idle", "5", "dead TCP peers are found in about 11 s"},
		{"tcp_keepalives_interval", "2", ""},
		{"tcp_keepalives_count", "3", ""},
		{"recovery_target_timeline", quote("latest"), "a standby follows a newly promoted primary"},
	}
	if c.Major >= 14 {
		// pg_basebackup has already fsynced a clone; syncfs makes the first
		// start's data-directory sync one call per filesystem instead of
		// one fsync per file (runtime-config-error-handling.html).
		s = append(s, Setting{"recovery_init_sync_method", "syncfs", "a fresh clone starts without fsyncing every file a second time"})
	}
	if c.Major < 14 {
		s = append(s, Setting{"password_encryption", quote("scram-sha-256"), "new passwords as SCRAM verifiers (13 defaults to md5)"})
	}
	return s
}

// ManagedSetting reports whether a setting is set by the settings file, so a
// conflicting -c flag in the accessory's cmd would silently override it.
func ManagedSetting(c Cluster, name string) bool {
	switch name {
	case "config_file", "hba_file":
		return true
	}
	for _, s := range Settings(c) {
		if s.Name == name {
			return true
		}
	}
	return false
}

// StrongerThanManaged reports whether a user's value for a managed setting
// asks for more than the settings file gives, so that dropping it would take
// something away: wal_level=logical (logical replication, CDC) over replica,
// or more WAL senders or slots than the file's. Such a -c flag is kept in the
// cmd, where it overrides the file on every node alike.
func StrongerThanManaged(c Cluster, name, value string) bool {
	switch name {
	case "wal_level":
		return strings.EqualFold(value, "logical")
	case "max_wal_senders", "max_replication_slots":
		for _, s := range Settings(c) {
			if s.Name == name {
				mine, err1 := strconv.Atoi(s.Value)
				theirs, err2 := strconv.Atoi(value)
				return err1 == nil && err2 == nil && theirs > mine
			}
		}
	}
	return false
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// Conf renders the settings file that PostgreSQL is started with
// (-c config_file=...). It first includes the cluster's own
// $PGDATA/postgresql.conf, so every setting the user had stays in force, and
// then sets the replication settings, which win over that file. -c flags in
// the accessory's cmd win over both.
func Conf(c Cluster) string {
	var b strings.Builder
	b.WriteString("# PostgreSQL settings managed by understudy: the same file on every node.\n")
	b.WriteString("# Re-run `understudy init` to change it; edits here are overwritten.\n")
	b.WriteString("# The cluster's own settings come first; the lines after them win.\n")
	fmt.Fprintf(&b, "include_if_exists = %s\n\n", quote(strings.TrimRight(c.DataDir, "/")+"/postgresql.conf"))
	for _, s := range Settings(c) {
		if s.Why != "" {
			fmt.Fprintf(&b, "# %s\n", s.Why)
		}
		fmt.Fprintf(&b, "%s = %s\n", s.Name, s.Value)
	}
	return b.String()
}

// writeAligned writes rule rows in aligned columns; one-column rows
// (comments) are written as they are.
func writeAligned(b *strings.Builder, rows [][]string) {
	var width []int
	for _, r := range rows {
		if len(r) == 1 {
			continue
		}
		for i, c := range r {
			if i >= len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], len(c))
		}
	}
	for _, r := range rows {
		var line strings.Builder
		for i, c := range r {
			if i == len(r)-1 || len(r) == 1 {
				line.WriteString(c)
				break
			}
			line.WriteString(c + strings.Repeat(" ", width[i]-len(c)+2))
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
}
