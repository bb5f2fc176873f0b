# Shared by scripts/test and scripts/demo: start and stop the local tus test server.
# shellcheck shell=bash

# start_tus_server DIR [server options...]: serve DIR on 127.0.0.1 on a free port.
# Sets TUS_SERVER_PID and TUS_ENDPOINT.
start_tus_server() {
  local dir=$1 out
  shift
  out=$(mktemp)
  node "$ROOT/tests/server/server.mjs" --dir "$dir" "$@" >"$out" &
  TUS_SERVER_PID=$!
  for _ in $(seq 300); do
    [ -s "$out" ] && break
    kill -0 "$TUS_SERVER_PID" 2>/dev/null || { echo "the tus test server failed to start" >&2; return 1; }
    sleep 0.1
  done
  TUS_ENDPOINT=$(grep -o '"endpoint":"[^"]*"' "$out" | cut -d'"' -f4)
  rm -f "$out"
  [ -n "$TUS_ENDPOINT" ] || { echo "the tus test server did not say where it listens" >&2; return 1; }
}

# stop_tus_server: stop the server started above (by its PID only).
stop_tus_server() {
  if [ -n "${TUS_SERVER_PID:-}" ]; then
    kill "$TUS_SERVER_PID" 2>/dev/null || true
    wait "$TUS_SERVER_PID" 2>/dev/null || true
    TUS_SERVER_PID=
  fi
}

# start_postgres: a PostgreSQL of its own (the Debian package's newest) in a new
# directory under /tmp, on 127.0.0.1 on a free port, as the `postgres` user when run as
# root (initdb refuses root). Sets PG_PID, PG_DIR, PG_PORT and PG_URL
# (postgres://tus:PASSWORD@127.0.0.1:PORT, without a database).
start_postgres() {
  local bin pw as=()
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -x "$bin/initdb" ] || { echo "PostgreSQL is not installed (Debian package postgresql)" >&2; return 1; }
  PG_DIR=$(mktemp -d /tmp/tusflow-pg.XXXXXX)
  pw=pg-$RANDOM$RANDOM
  echo "$pw" >"$PG_DIR/pw"
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres:postgres "$PG_DIR"
    as=(setpriv --reuid=postgres --regid=postgres --init-groups --)
  fi
  "${as[@]}" "$bin/initdb" -D "$PG_DIR/data" -U tus --auth-local=trust \
    --auth-host=scram-sha-256 --pwfile="$PG_DIR/pw" >/dev/null
  PG_PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
  "${as[@]}" "$bin/postgres" -D "$PG_DIR/data" -p "$PG_PORT" -c listen_addresses=127.0.0.1 \
    -k "$PG_DIR" -c max_connections=100 >"$PG_DIR/log" 2>&1 &
  PG_PID=$!
  for _ in $(seq 300); do
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
    kill -0 "$PG_PID" 2>/dev/null || { echo "PostgreSQL failed to start: $PG_DIR/log" >&2; return 1; }
    sleep 0.1
  done
  PG_URL="postgres://tus:$pw@127.0.0.1:$PG_PORT"
}

# stop_postgres: a fast shutdown of the server started above (by its PID only).
stop_postgres() {
  if [ -n "${PG_PID:-}" ]; then
    kill -INT "$PG_PID" 2>/dev/null || true
    wait "$PG_PID" 2>/dev/null || true
    PG_PID=
    rm -rf "$PG_DIR"
  fi
}
