#!/bin/bash
# docker-entrypoint.sh of understudy's test image, written for it from the
# postgres image's documented behaviour (the image's page on Docker Hub:
# "Environment Variables", "Initialization scripts"); not the official script.
#
# - `postgres ...` or a first argument starting with "-" runs the server
#   (unless it asks for --help, --describe-config or --version):
#   as root, PGDATA and the socket directory are handed to the postgres user
#   and the script runs itself again as that user (gosu);
# - on an empty PGDATA: initdb with POSTGRES_USER (default postgres),
#   POSTGRES_PASSWORD (required unless POSTGRES_HOST_AUTH_METHOD=trust),
#   POSTGRES_INITDB_ARGS; a server on the unix socket only runs the files in
#   /docker-entrypoint-initdb.d once (*.sh executed if executable, else
#   sourced; *.sql through psql), creates POSTGRES_DB, and stops;
# - from 18 on (PGDATA /var/lib/postgresql/<major>/docker, the volume at
#   /var/lib/postgresql), an empty default PGDATA is not initialised while a
#   cluster sits in the older layout (/var/lib/postgresql/data, or another
#   major's /var/lib/postgresql/*/docker) or while /var/lib/postgresql/data
#   is a mount: the data would not be on the volume (the image's page,
#   "PGDATA"; docker-library/postgres#1259);
# - pg_hba.conf gets `host all all all <POSTGRES_HOST_AUTH_METHOD>`
#   (default scram-sha-256);
# - then postgres runs with the given arguments, as PID 1;
# - any other command runs as given (as the user the container runs as).
set -Eeo pipefail

if [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi
if [ "$1" != 'postgres' ]; then
	exec "$@"
fi
# postgres asked only for its help or version runs as given, no init
for arg; do
	case "$arg" in
	-'?' | --help | --describe-config | -V | --version) exec "$@" ;;
	esac
done

if [ "$(id -u)" = '0' ]; then
	mkdir -p "$PGDATA" /var/run/postgresql
	chown postgres:postgres /var/run/postgresql
	chmod 3777 /var/run/postgresql
	# hand over a data directory made by root (e.g. a fresh bind mount)
	if [ "$(stat -c %u "$PGDATA")" != "$(id -u postgres)" ]; then
		chown -R postgres:postgres "$PGDATA"
	fi
	chmod 700 "$PGDATA" || :
	exec gosu postgres "$BASH_SOURCE" "$@"
fi

run_initdb_d() {
	local f
	for f in /docker-entrypoint-initdb.d/*; do
		case "$f" in
		*.sh)
			if [ -x "$f" ]; then
				echo "$0: running $f"
				"$f"
			else
				echo "$0: sourcing $f"
				. "$f"
			fi
			;;
		*.sql)
			echo "$0: running $f"
			psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -f "$f"
			;;
		*) if [ -e "$f" ]; then echo "$0: ignoring $f"; fi ;; # an empty directory leaves the pattern itself
		esac
	done
}

# old_layout prints what stands in the way of initialising an 18+ PGDATA.
old_layout() {
	[ "${PG_MAJOR:-0}" -ge 18 ] && [ "$PGDATA" = "/var/lib/postgresql/$PG_MAJOR/docker" ] || return 0
	local d
	for d in /var/lib/postgresql /var/lib/postgresql/data /var/lib/postgresql/*/docker; do
		if [ "$d" != "$PGDATA" ] && [ -s "$d/PG_VERSION" ]; then
			echo "$d (PostgreSQL $(cat "$d/PG_VERSION"))"
		fi
	done
	if awk '$5 == "/var/lib/postgresql/data" { found = 1 } END { exit !found }' /proc/self/mountinfo; then
		echo "/var/lib/postgresql/data (a mount or volume that PostgreSQL $PG_MAJOR does not use)"
	fi
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	old=$(old_layout)
	if [ -n "$old" ]; then
		echo "error: PGDATA ($PGDATA) is empty, but there is data in the layout of older images:" >&2
		echo "$old" | sed 's/^/       /' >&2
		echo "       from PostgreSQL 18 on the volume is /var/lib/postgresql (mount it there), or set PGDATA to where the cluster is" >&2
		exit 1
	fi
	: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}" "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
	if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
		echo "error: the database is uninitialized and POSTGRES_PASSWORD is not set" >&2
		echo "       set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust)" >&2
		exit 1
	fi
	pwfile=
	if [ -n "${POSTGRES_PASSWORD:-}" ]; then
		pwfile=$(mktemp)
		printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
	fi
	# shellcheck disable=SC2086
	initdb --username="$POSTGRES_USER" ${pwfile:+--pwfile="$pwfile"} $POSTGRES_INITDB_ARGS
	[ -z "$pwfile" ] || rm -f "$pwfile"
	printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"
	export PGPASSWORD="${POSTGRES_PASSWORD:-}" POSTGRES_USER POSTGRES_DB
	pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -p ${PGPORT:-5432}" start
	if [ "$POSTGRES_DB" != postgres ]; then
		psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc --username "$POSTGRES_USER" --dbname postgres \
			-c "CREATE DATABASE \"$POSTGRES_DB\""
	fi
	run_initdb_d
	pg_ctl -D "$PGDATA" -m fast -w stop
	unset PGPASSWORD
	echo "$0: PostgreSQL init process complete; ready for start up."
fi

unset POSTGRES_PASSWORD
exec "$@"
