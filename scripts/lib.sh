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
