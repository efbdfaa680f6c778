#!/usr/bin/env bash
# flashsale against the real cachesvc: SQLite, embedded Kafka and a local
# Redis Cluster (redis-server from scripts/setup; without it the test
# fails rather than sell without the Redis tier). A short sale over two
# items must pass verification (nothing oversold, lost or duplicated, the
# per-user limit held), with every outcome accounted for; then a short
# open-loop sweep of the invalidation delay must pass as well.
# Usage: flashsale_service.sh FLASHSALE CACHESVC   (ports 26200-26299)
set -uo pipefail
FS=$1
SVC=$2
SRC=$(cd "$(dirname "$0")/../.." && pwd)
. "$SRC/tests/load/fixtures.sh"
P=26200
RP=26210
T=$(mktemp -d /tmp/flashsale-svc.XXXXXX)
SVC_PID=""
REDIS_UP=""
cleanup() {
  if [ -n "$SVC_PID" ]; then
    kill -TERM "$SVC_PID" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$SVC_PID" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$SVC_PID" 2>/dev/null
  fi
  [ -n "$REDIS_UP" ] && "$SRC/scripts/redis-cluster" down --dir "$T/redis" >/dev/null 2>&1
  [ -n "${FAILED:-}${KEEP_LOG:-}" ] && [ -f "$T/svc.log" ] && { echo "---- cachesvc log (tail)"; tail -30 "$T/svc.log"; }
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
fail() { FAILED=1; echo "FAIL: $*"; exit 1; }
kv() { sed -n "s/^$1=//p" "$2" | tail -1; }

command -v redis-server >/dev/null 2>&1 || fail "redis-server is not installed (scripts/setup)"
REDIS_UP=1
redis_url=$(fs_redis_up "$SRC" "$T/redis" $RP) || fail "redis-cluster up"
echo "redis: $redis_url"

"$SVC" --server.listen=127.0.0.1:$P --server.admin_token=fs-token --server.workers=2 \
  --store.url="sqlite:$T/cachesvc.db" --redis.url="$redis_url" --kafka.brokers=embedded \
  --kafka.invalidation_delay_ms=100 >"$T/svc.log" 2>&1 &
SVC_PID=$!
ready=""
for _ in $(seq 1 300); do
  if curl -sf http://127.0.0.1:$P/readyz 2>/dev/null | grep -q '"status":"ready"'; then ready=1; break; fi
  kill -0 "$SVC_PID" 2>/dev/null || fail "cachesvc exited during start"
  sleep 0.1
done
[ -n "$ready" ] || fail "cachesvc not ready"

# A closed-loop sale: 2 items x 300 units, limit 1, 1500 buyers.
"$FS" --targets http://127.0.0.1:$P --admin-token fs-token --skus 2 --stock 300 \
  --per-user-limit 1 --users 1500 --requests 6000 --connections 16 --workers 2 \
  --quiet --kv --json "$T/sale.json" >"$T/sale.out" 2>&1
rc=$?
cat "$T/sale.out"
[ $rc -eq 0 ] || fail "sale: exit $rc"
[ "$(kv verify "$T/sale.out")" = pass ] || fail "sale: verification"
[ "$(kv oversold "$T/sale.out")" = 0 ] || fail "sale: oversold"
[ "$(kv lost "$T/sale.out")" = 0 ] || fail "sale: lost"
[ "$(kv requests "$T/sale.out")" = 6000 ] || fail "sale: request count"
[ "$(kv sold "$T/sale.out")" -gt 0 ] || fail "sale: nothing sold"

# An open-loop sweep over two delays; both rounds must verify.
"$FS" --targets http://127.0.0.1:$P --admin-token fs-token --skus 1 --stock 100000 \
  --per-user-limit 0 --users 5000 --read-ratio 0.8 --rate 1000 --duration 1 \
  --connections 8 --workers 2 --sweep-delay 0,200 --quiet --kv >"$T/sweep.out" 2>&1
rc=$?
cat "$T/sweep.out" | grep -E "delay_ms|^ +[0-9]+ |verify=|stale_reads_over|requests="
[ $rc -eq 0 ] || fail "sweep: exit $rc"
curl -sf -H "Authorization: Bearer fs-token" http://127.0.0.1:$P/admin/config | grep -q '"invalidation_delay_ms":100' \
  || fail "sweep did not restore the delay (100)"
echo PASS
