#!/usr/bin/env bash
# The PostgreSQL server the system tests use (`make postgres`; `make postgres-stop`). Idempotent:
# installs Debian's postgresql if no server binaries are found (needs root; on another system install
# PostgreSQL yourself, or point SPECREASON_TEST_POSTGRES at a server of your own and skip this), then
# starts a throwaway cluster unless it already answers. The cluster listens on 127.0.0.1 only, with
# trust authentication and fsync off (test data); the tests make their own database in it and drop it.
#   bash tests/postgres.sh [start|stop|status]
set -euo pipefail
PORT=${SPECREASON_TEST_POSTGRES_PORT:-8132}
if [ "$(id -u)" = 0 ]; then
  DATA=/var/lib/postgresql/specreason-tests   # PostgreSQL refuses to run as root: the postgres user owns it
else
  DATA=${SPECREASON_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/specreason-graph}/postgres
fi

binaries() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
answers() { [ -n "$BIN" ] && "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; }

BIN=$(binaries)
[ -z "$BIN" ] && command -v initdb >/dev/null && BIN=$(dirname "$(command -v initdb)")

case "${1:-start}" in
  status)
    if answers; then echo "postgres: up at 127.0.0.1:$PORT ($DATA)"; else echo "postgres: not running"; exit 3; fi ;;
  stop)
    if [ -n "$BIN" ] && [ -f "$DATA/postmaster.pid" ]; then as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop; fi ;;
  start)
    if [ -z "$BIN" ]; then
      if [ "$(id -u)" != 0 ]; then
        echo "PostgreSQL is not installed and this is not root: sudo apt-get install postgresql, then run this again" >&2
        exit 1
      fi
      echo "postgres: installing Debian's postgresql"
      apt-get update -q >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >/dev/null
      BIN=$(binaries)
    fi
    if answers; then echo "postgres: already up at 127.0.0.1:$PORT"; exit 0; fi
    if [ ! -f "$DATA/PG_VERSION" ]; then
      mkdir -p "$DATA"
      [ "$(id -u)" = 0 ] && chown postgres:postgres "$DATA" && chmod 700 "$DATA"
      as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
    fi
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 -o \
      "-p $PORT -c listen_addresses=127.0.0.1 -k $DATA -c max_connections=200 -c fsync=off" start >/dev/null
    echo "postgres: up at 127.0.0.1:$PORT ($DATA)" ;;
  *) echo "usage: bash tests/postgres.sh [start|stop|status]" >&2; exit 2 ;;
esac
