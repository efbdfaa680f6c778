#!/usr/bin/env bash
# Starts what one Redis client integration case needs in a fresh temp dir,
# runs the case, and stops the servers on every way out.
#
# Usage: redis_run.sh TEST_BINARY CASE PORT
#   CASE routing|reshard|failover: a 3+3 cluster on PORT..PORT+5
#   CASE standalone: one plain redis-server on PORT
#   CASE faults: no server; the test's fake servers listen on PORT, PORT+1
set -u
bin=$1 case=$2 port=$3
top=$(cd "$(dirname "$0")/../.." && pwd)
# Runs of the same case from several build trees take turns on its ports.
exec 9>"/tmp/cachesvc-redis-test-$port.lock"
flock -w 900 9 || { echo "redis_run: port $port busy for 900 s" >&2; exit 1; }
dir=$(mktemp -d /tmp/cachesvc-redis-test.XXXXXX)
cleanup() {
  "$top/scripts/redis-cluster" down --dir "$dir"
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

case "$case" in
  faults) seeds="127.0.0.1:$port" ;;
  standalone) seeds=$("$top/scripts/redis-cluster" standalone --dir "$dir" --port "$port" | tail -1) ;;
  *) seeds=$("$top/scripts/redis-cluster" up --dir "$dir" --port "$port" | tail -1) ;;
esac
[ -n "$seeds" ] || { echo "redis_run: servers did not start" >&2; exit 1; }
"$bin" "$case" "$seeds" "$dir"
rc=$?
if [ $rc -ne 0 ]; then
  for f in "$dir"/*.log; do [ -f "$f" ] && { echo "== $f"; tail -15 "$f"; }; done
fi
exit $rc
