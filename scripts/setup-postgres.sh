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
  as_pg "$bin/initdb" -D "$pgdata" -U postgres --auth=trust -E UTF8 >/dev/null
fi
if ! as_pg "$bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
  as_pg "$bin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $pgdata -c fsync=off" start >/dev/null
fi
for _ in $(seq 1 100); do
  "$bin/pg_isready" -h 127.0.0.1 -p "$port" -q && break
  sleep 0.1
done
"$bin/pg_isready" -h 127.0.0.1 -p "$port" -q || { echo "setup-postgres: server did not start" >&2; exit 1; }
echo "postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
