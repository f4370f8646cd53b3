#!/bin/sh
# As the postgres image's entrypoint, for what packaging/compose.yaml uses:
# `docker-entrypoint.sh postgres ARGS` initialises $PGDATA at the first
# start (superuser POSTGRES_USER, database POSTGRES_DB, password
# POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE unless POSTGRES_HOST_AUTH_METHOD
# is trust; local connections are trusted), then runs the server,
# listening on all addresses unless ARGS say otherwise. Anything else is
# run as given.
set -eu
if [ "${1:-}" != postgres ]; then
	exec "$@"
fi
shift
: "${PGDATA:=/var/lib/postgresql/data}"
user=${POSTGRES_USER:-postgres}
method=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	pwfile=
	if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
		pwfile=$POSTGRES_PASSWORD_FILE
	elif [ -n "${POSTGRES_PASSWORD:-}" ]; then
		pwfile=$(mktemp)
		printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
	elif [ "$method" != trust ]; then
		echo "docker-entrypoint.sh: no superuser password: set POSTGRES_PASSWORD or" \
			"POSTGRES_HOST_AUTH_METHOD=trust" >&2
		exit 1
	fi
	initdb --pgdata="$PGDATA" --username="$user" --encoding=UTF8 --locale=C \
		--auth-local=trust --auth-host="$method" ${pwfile:+--pwfile="$pwfile"} > /dev/null
	if [ -n "${POSTGRES_PASSWORD:-}" ] && [ -z "${POSTGRES_PASSWORD_FILE:-}" ]; then
		rm -f "$pwfile"
	fi
	echo "host all all all $method" >> "$PGDATA/pg_hba.conf"
	db=${POSTGRES_DB:-$user}
	if [ "$db" != postgres ]; then
		echo "CREATE DATABASE \"$db\" OWNER \"$user\"" |
			postgres --single -D "$PGDATA" postgres > /dev/null
	fi
	echo "docker-entrypoint.sh: initialised $PGDATA (superuser $user, database $db)"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
