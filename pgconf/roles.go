package pgconf

import (
	"fmt"
	"strings"
)

// The scripts below run on a stopped node, in its environment (PGDATA set,
// as the postgres user): in the lab as a local process, on Kamal through
// `kamal accessory exec`, a fresh container with the accessory's volumes.

// FollowScript makes a stopped node a standby of upstream: standby.signal,
// and primary_conninfo/primary_slot_name in postgresql.auto.conf (where
// pg_basebackup -R puts them; any older lines are replaced). The password
// stays in the passfile the boot script writes. The fence note, when
// given, is left in PGDATA for people: the standby.signal file is what keeps
// the node from ever starting as a primary on its own.
func FollowScript(c Cluster, node, upstream Node, fenceNote string) string {
	conninfo := Conninfo(c, node, upstream, "$PASSFILE")
	var b strings.Builder
	b.WriteString("set -eu\n")
	b.WriteString(passfileLine + "\n")
	b.WriteString(`[ -s "$PGDATA/PG_VERSION" ] || { echo "no cluster in $PGDATA" >&2; exit 1; }` + "\n")
	b.WriteString(`AUTO="$PGDATA/postgresql.auto.conf"` + "\n")
	b.WriteString(`touch "$AUTO"` + "\n")
	b.WriteString(`grep -v -e '^[[:space:]]*primary_conninfo[[:space:]]*=' -e '^[[:space:]]*primary_slot_name[[:space:]]*=' "$AUTO" >"$AUTO.understudy.tmp" || true` + "\n")
	fmt.Fprintf(&b, "printf \"primary_conninfo = '%%s'\\nprimary_slot_name = '%%s'\\n\" \"%s\" '%s' >>\"$AUTO.understudy.tmp\"\n", conninfo, node.Slot())
	b.WriteString(`mv -f "$AUTO.understudy.tmp" "$AUTO"` + "\n")
	b.WriteString(`touch "$PGDATA/standby.signal"` + "\n")
	if fenceNote != "" {
		fmt.Fprintf(&b, "printf '%%s\\n' %s >\"$PGDATA/understudy-fenced.txt\"\n", shellQuote(fenceNote))
	} else {
		b.WriteString(`rm -f "$PGDATA/understudy-fenced.txt"` + "\n")
	}
	fmt.Fprintf(&b, "echo \"%s now follows %s\"\n", node.Name, upstream.Name)
	return b.String()
}

// Conninfo is a standby's primary_conninfo: the password is in passfile.
func Conninfo(c Cluster, node, upstream Node, passfile string) string {
	return fmt.Sprintf("host=%s port=%d user=%s passfile=%s connect_timeout=5 application_name=%s keepalives=1 keepalives_idle=5 keepalives_interval=2 keepalives_count=3",
		upstream.Addr, upstream.Port, c.ReplUser, passfile, node.Name)
}

// ControlDataScript prints pg_controldata for the node's cluster, with the
// C locale: pgops.ParseControlData reads its English labels.
const ControlDataScript = `LC_ALL=C pg_controldata "$PGDATA"`

// RewindScript runs pg_rewind against the current primary, connecting as
// the replication role (granted the functions pg_rewind needs; see
// pgops.RewindGrants). pg_rewind runs crash recovery first on an unclean
// target (13+) and says "no rewind required" when nothing diverged.
func RewindScript(c Cluster, source Node) string {
	return fmt.Sprintf(`set -eu
PASSFILE="${UNDERSTUDY_RUN_DIR:-/var/run/postgresql}/understudy.pgpass"
# In a fresh container (kamal accessory exec) the boot script has not written
# the passfile; the password is in the accessory's env.
if [ ! -s "$PASSFILE" ] && [ -n "${REPLICATION_PASSWORD:-}" ]; then
	mkdir -p "$(dirname "$PASSFILE")"
	( umask 077; printf '*:*:*:%%s:%%s\n' '%s' "$(printf '%%s' "$REPLICATION_PASSWORD" | sed 's/[\\:]/\\&/g')" >"$PASSFILE" )
fi
# pg_rewind's crash recovery runs a single-user server, which refuses standby mode.
rm -f "$PGDATA/standby.signal"
pg_rewind --target-pgdata="$PGDATA" --progress --source-server="host=%s port=%d user=%s dbname=postgres passfile=$PASSFILE connect_timeout=5" 2>&1
`, c.ReplUser, source.Addr, source.Port, c.ReplUser)
}

// SetAsideScript moves a cluster that cannot be rewound into
// $PGDATA/.understudy-old-<stamp>, inside the same volume, so the boot
// script clones afresh and nothing is deleted. The user removes it once sure.
func SetAsideScript(stamp string) string {
	return fmt.Sprintf(`set -eu
OLD="$PGDATA/.understudy-old-%s"
mkdir "$OLD"
mv "$PGDATA/PG_VERSION" "$OLD/PG_VERSION" # first: a half-moved directory is never taken for a cluster
for f in $(ls -A "$PGDATA"); do
	case "$f" in .understudy-old-*|lost+found) continue ;; esac
	mv "$PGDATA/$f" "$OLD/$f"
done
echo "the old cluster is in $OLD"
`, stamp)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// EndOfWALScript prints what pg_waldump says about the WAL after start on
// a timeline: its last line names where valid WAL ends.
func EndOfWALScript(start string, timeline int) string {
	return fmt.Sprintf(`pg_waldump --path="$PGDATA/pg_wal" --timeline=%d --start=%s 2>&1 | tail -n 1`, timeline, start)
}
