#!/usr/bin/env bash
# Install (if needed) and start a PostgreSQL server for the test suite, idempotently.
# Prints the SQLAlchemy URL of a database the tests may create databases with.
set -euo pipefail

# One server for the machine (outside any checkout), so that clones share it; each test
# makes a database of its own.
pgdata=${SERVICELAB_TEST_PGDATA:-/var/cache/servicelab/postgres}
port=${SERVICELAB_TEST_PGPORT:-55432}

find_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] && [ -x "$dir/pg_ctl" ] && echo "$dir"
}

bin=$(find_bin || true)
if [ -z "$bin" ]; then
  echo "setup-postgres: installing Debian's postgresql" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends postgresql >&2 \
    || { apt-get update >&2 && apt-get install -y --no-install-recommends postgresql >&2; }
  bin=$(find_bin)
fi

# initdb and postgres refuse to run as root: run them as the `postgres` user.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres

mkdir -p "$pgdata"
[ "$(id -u)" = 0 ] && chown postgres "$pgdata" && chmod 700 "$pgdata"
if [ ! -f "$pgdata/PG_VERSION" ]; then
  as_pg "$bin/initdb" -D "$pgdata" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
    -E UTF8 >/dev/null
fi

# A password over TCP (scram-sha-256), never trust: anything on this machine can open a
# connection to 127.0.0.1. Only the `postgres` user reaches the server without one, on
# its Unix socket in the data folder (0700). The password is made once, kept 0600 beside
# the data folder, and set again on every run (servers made before this were `trust`).
pwfile=${pgdata%/}.password
if [ ! -s "$pwfile" ]; then
  (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$pwfile")
fi
password=$(cat "$pwfile")
cat >"$pgdata/pg_hba.conf" <<'HBA'
# Written by scripts/setup-postgres.sh.
local all postgres peer
host  all all 127.0.0.1/32 scram-sha-256
host  all all ::1/128      scram-sha-256
HBA
chown postgres "$pgdata/pg_hba.conf" 2>/dev/null || true

if ! as_pg "$bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
  as_pg "$bin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $pgdata -c fsync=off" start >/dev/null
fi
for _ in $(seq 1 100); do
  "$bin/pg_isready" -h 127.0.0.1 -p "$port" -q && break
  sleep 0.1
done
"$bin/pg_isready" -h 127.0.0.1 -p "$port" -q || { echo "setup-postgres: server did not start" >&2; exit 1; }
as_pg "$bin/psql" -h "$pgdata" -p "$port" -U postgres -qAt -v ON_ERROR_STOP=1 \
  -c "SET password_encryption = 'scram-sha-256'" \
  -c "ALTER USER postgres PASSWORD '$password'" -c "SELECT pg_reload_conf()" >/dev/null
echo "postgresql+psycopg://postgres:$password@127.0.0.1:$port/postgres"
