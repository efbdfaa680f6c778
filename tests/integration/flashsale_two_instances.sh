#!/usr/bin/env bash
# flashsale against two cachesvc instances sharing PostgreSQL, a local Redis
# Cluster and a dev Kafka broker: buyers on both instances, a sweep of two
# invalidation delays. Every round must verify; stale reads are counted per
# instance and those older than 1 s must stay under 1 % of the reads (the
# broadcast evicts other instances' copies within milliseconds).
# Usage: flashsale_two_instances.sh FLASHSALE CACHESVC DEVBROKER  (ports 26300-26399)
set -uo pipefail
FS=$1
SVC=$2
BROKER=$3
SRC=$(cd "$(dirname "$0")/../.." && pwd)
. "$SRC/tests/load/fixtures.sh"
PA=26300; PB=26301; RP=26310; PGP=26320
T=$(mktemp -d /tmp/flashsale-two.XXXXXX)
chmod 755 "$T"   # PostgreSQL runs as the postgres user
pids=(); pg_up=""; redis_up=""
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$p" 2>/dev/null
  done
  [ -n "$redis_up" ] && "$SRC/scripts/redis-cluster" down --dir "$T/redis" >/dev/null 2>&1
  [ -n "$pg_up" ] && "$SRC/scripts/postgres" down --dir "$T/pg" >/dev/null 2>&1
  if [ -n "${FAILED:-}" ]; then
    for f in "$T"/*.log; do [ -f "$f" ] && { echo "---- $f (tail)"; tail -20 "$f"; }; done
  fi
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
fail() { FAILED=1; echo "FAIL: $*"; exit 1; }
kv() { sed -n "s/^$1=//p" "$2" | tail -1; }

pg=$("$SRC/scripts/postgres" up --dir "$T/pg" --port $PGP | tail -1); pg_up=1
[[ "$pg" == postgresql://* ]] || fail "postgres up"
redis_up=1
seeds=$(fs_redis_up "$SRC" "$T/redis" $RP) || fail "redis-cluster up"
"$BROKER" >"$T/broker.out" 2>"$T/broker.log" &
pids+=($!)
disown $!
for _ in $(seq 1 100); do [ -s "$T/broker.out" ] && break; sleep 0.05; done
brokers=$(head -1 "$T/broker.out")
[ -n "$brokers" ] || fail "dev broker did not start"

for name in a b; do
  port=$PA; [ $name = b ] && port=$PB
  "$SVC" --server.listen=127.0.0.1:$port --server.admin_token=fs-token --server.workers=2 \
    --store.url="$pg" --redis.url="$seeds" --kafka.brokers="$brokers" \
    --kafka.instance_id=$name --monitor.sample_every=10 --log.level=warn >"$T/svc-$name.log" 2>&1 &
  pids+=($!)
  disown $!   # no job-control chatter if cleanup has to SIGKILL it
done
for port in $PA $PB; do
  ok=""
  for _ in $(seq 1 300); do
    curl -sf http://127.0.0.1:$port/readyz 2>/dev/null | grep -q '"status":"ready"' && { ok=1; break; }
    sleep 0.1
  done
  [ -n "$ok" ] || fail "instance on $port not ready"
done

"$FS" --targets http://127.0.0.1:$PA,http://127.0.0.1:$PB --admin-token fs-token \
  --skus 2 --stock 100000 --per-user-limit 0 --users 5000 --read-ratio 0.8 \
  --rate 1000 --duration 2 --connections 16 --workers 2 --sweep-delay 0,300 \
  --kv >"$T/sweep.out" 2>"$T/flashsale.log"
rc=$?
cat "$T/sweep.out" | grep -vE "^delay_.*_(p[0-9]+|max|get|buy)_"
[ $rc -eq 0 ] || fail "sweep over two instances: exit $rc"
grep -q "127.0.0.1:$PB" "$T/sweep.out" || fail "no row for the second instance"
for d in 0 300; do
  reads=$(kv delay_${d}ms_reads_checked "$T/sweep.out")
  old=$(kv delay_${d}ms_stale_reads_over_1s "$T/sweep.out")
  [ -n "$reads" ] && [ "$reads" -gt 0 ] || fail "delay $d: no reads checked"
  [ $((old * 100)) -le "$reads" ] || fail "delay $d: $old of $reads reads older than 1 s"
  # The instances' own monitor, beside the tester's count.
  mchecks=$(kv delay_${d}ms_monitor_checks "$T/sweep.out")
  [ -n "$mchecks" ] && [ "$mchecks" -gt 0 ] || fail "delay $d: the sweep shows no monitor checks"
  [ -n "$(kv delay_${d}ms_monitor_violations "$T/sweep.out")" ] || fail "delay $d: no monitor violations line"
done
grep -q "monitor_viol/checks" "$T/sweep.out" || fail "the tuning table has no monitor column"
echo PASS
