# service_lib.sh: helpers for the cachesvc integration tests (sourced).
#
# Expects CACHESVC_BIN (the binary), SERVICE_CLIENT (service_client) and
# SRC (the source tree) in the environment; CMake sets them. Every test
# works in a fresh temporary directory and stops what it started on exit,
# failure included. Ports: 25000-25999 only.
set -uo pipefail

: "${CACHESVC_BIN:?}" "${SRC:?}"
T=$(mktemp -d /tmp/svc-test.XXXXXX)
chmod 755 "$T"   # the postgres OS user needs to reach its data dir
SVC_PIDS=()
CLEANUPS=()
FAILS=0

cleanup() {
  local p
  for p in "${SVC_PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null
  done
  for p in "${SVC_PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$p" 2>/dev/null
  done
  local c
  for c in "${CLEANUPS[@]}"; do eval "$c" >/dev/null 2>&1; done
  if [ "$FAILS" -ne 0 ] || [ -n "${KEEP_LOGS:-}" ]; then
    for f in "$T"/*.log; do [ -f "$f" ] && { echo "---- $f (tail)"; tail -25 "$f"; }; done
  fi
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# shellcheck source=tests/support/checks.sh
. "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

# start_svc NAME PORT [flags...]: starts the binary with its log in
# $T/NAME.log and waits for /healthz. Sets LAST_PID.
start_svc() {
  local name=$1 port=$2; shift 2
  "$CACHESVC_BIN" --server.listen=127.0.0.1:"$port" --server.admin_token=secret \
    --server.workers=2 "$@" >"$T/$name.log" 2>&1 &
  LAST_PID=$!
  SVC_PIDS+=("$LAST_PID")
  local i
  for i in $(seq 1 200); do
    if curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then return 0; fi
    kill -0 "$LAST_PID" 2>/dev/null || { echo "service $name exited during start:"; tail -20 "$T/$name.log"; return 1; }
    sleep 0.05
  done
  echo "service $name did not answer /healthz"; return 1
}

# stop_svc PID [signal]: signals and waits; sets STOP_RC to the exit status.
stop_svc() {
  local pid=$1 sig=${2:-TERM}
  kill -"$sig" "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  STOP_RC=$?
}

# wait_ready URL [tries]: polls /readyz until it answers "ready" (the
# consumers join their groups a few seconds after start; until then Kafka
# is down and the answer is 200 "degraded"); leaves the last req in
# CODE/BODY.
wait_ready() {
  local u=$1 n=${2:-150} i
  for i in $(seq 1 "$n"); do
    req GET "$u/readyz"; [ "$CODE" = 200 ] && [[ "$BODY" == *'"status":"ready"'* ]] && return 0; sleep 0.1
  done
  return 1
}

# req METHOD URL [BODY] [extra curl args...]: sets CODE, BODY and HDRS.
req() {
  local m=$1 url=$2 body=${3:-}; shift 3 2>/dev/null || shift $#
  local args=(-s -X "$m" -D "$T/hdrs" -o "$T/body" -w '%{http_code}' --max-time 20)
  [ -n "$body" ] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
  CODE=$(curl "${args[@]}" "$@" "$url")
  BODY=$(cat "$T/body" 2>/dev/null)
  HDRS=$(cat "$T/hdrs" 2>/dev/null)
}
ADMIN=(-H "Authorization: Bearer secret")

# expect CODE [substring of body]: checks the last req.
expect() {
  local want=$1 sub=${2:-} what=${3:-"$want $2"}
  if [ "$CODE" = "$want" ] && { [ -z "$sub" ] || [[ "$BODY" == *"$sub"* ]]; }; then
    ok "$what"
  else
    fail "$what: got $CODE $BODY"
  fi
}

json_num() {   # json_num KEY <<< json: the integer value of "KEY"
  sed -n "s/.*\"$1\":\(-\{0,1\}[0-9]*\).*/\1/p"
}
header() {     # header NAME: the value of a header of the last req
  printf '%s\n' "$HDRS" | tr -d '\r' | sed -n "s/^$1: //Ip" | head -1
}

# cluster_up DIR PORT: scripts/redis-cluster up, once more after a failure
# (on a loaded machine a node may miss its first PING deadline). Prints the
# seed list. Runs in $(...): the caller registers the cleanup.
cluster_up() {
  local d=$1 p=$2 out
  for attempt in 1 2; do
    if out=$("$SRC/scripts/redis-cluster" up --dir "$d" --port "$p" 2>"$T/cluster-up.err"); then
      tail -1 <<<"$out"; return 0
    fi
    cat "$T/cluster-up.err" >&2
    "$SRC/scripts/redis-cluster" down --dir "$d" >/dev/null 2>&1
    sleep 1
  done
  return 1
}
