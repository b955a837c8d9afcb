#!/usr/bin/env bash
# Makes sure a local PostgreSQL server is installed and running, creates the
# test databases, and prints `export …` lines naming them. Used by
# scripts/test.sh and .ci/run:   eval "$(scripts/postgres.sh)"
# Installing needs root (Debian's postgresql package); without root and
# without a server, it says so and exits 1, and the tests skip PostgreSQL.
set -euo pipefail
log() { echo "postgres.sh: $*" >&2; }
as_postgres() { if [ "$(id -u)" = 0 ]; then su postgres -c "$1"; else sudo -n -u postgres sh -c "$1"; fi; }

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    log "PostgreSQL is not installed and this is not root; install it with: apt-get install -y postgresql"
    exit 1
  fi
  log "installing PostgreSQL from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi

ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
  log "creating cluster $ver/main"
  pg_createcluster "$ver" main >&2
fi
read -r cver cname port status _ < <(pg_lsclusters -h | head -n 1)
if [ "$status" != online ]; then
  log "starting cluster $cver/$cname on port $port"
  pg_ctlcluster "$cver" "$cname" start >&2
fi
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p "$port" && break
  sleep 1
done
pg_isready -q -h 127.0.0.1 -p "$port" || { log "server on port $port did not become ready"; exit 1; }

# Tests open many pools at once; the default of 100 connections is tight.
current=$(as_postgres "psql -qtA -p $port -c 'SHOW max_connections'")
if [ "$current" -lt 300 ]; then
  log "raising max_connections from $current to 300 (restart)"
  as_postgres "psql -q -p $port -c 'ALTER SYSTEM SET max_connections = 300'" >&2
  pg_ctlcluster "$cver" "$cname" restart >&2
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 1; done
fi

as_postgres "psql -q -p $port -c \"ALTER USER postgres PASSWORD 'hookshift'\"" >&2
for db in hookshift_test legacy_test hookshift_bench; do
  if ! as_postgres "psql -qtA -p $port -c \"SELECT 1 FROM pg_database WHERE datname = '$db'\"" | grep -q 1; then
    as_postgres "createdb -p $port $db" >&2
  fi
done
echo "export HOOKSHIFT_TEST_POSTGRES_URL=postgres://postgres:hookshift@127.0.0.1:$port/hookshift_test"
echo "export LEGACY_TEST_POSTGRES_URL=postgres://postgres:hookshift@127.0.0.1:$port/legacy_test"
echo "export HOOKSHIFT_BENCH_POSTGRES_URL=postgres://postgres:hookshift@127.0.0.1:$port/hookshift_bench"
