#!/usr/bin/env bash
# One log stream, on the real binary: cachesvc with PostgreSQL (its URL
# holding a password), a local Redis Cluster and the embedded Kafka, then
# with Kafka brokers that refuse every connection.
# - every stderr line of the runs is logfmt (ts= first, level=, msg=), the
#   modules' lines (store, redis, kafka) included;
# - the password of the database URL appears in no line;
# - a database outage under load (PostgreSQL stopped, 600 failed requests)
#   writes a bounded number of lines: at most 5 per call site per second
#   plus one suppressed=<n> count, and the counts add up;
# - slow requests name the API's error code (error=unavailable).
. "$(dirname "$0")/../support/service_lib.sh"
P=25700; RP=25710; PGP=25730
U=http://127.0.0.1:$P
SECRET=hunter2-log-test

PG=$("$SRC/scripts/postgres" up --dir "$T/pg" --port $PGP | tail -1) || { fail "postgres up"; finish; }
CLEANUPS+=("'$SRC/scripts/postgres' down --dir '$T/pg'")
CLEANUPS+=("'$SRC/scripts/redis-cluster' down --dir '$T/redis'")
SEEDS=$(cluster_up "$T/redis" $RP) || { fail "redis-cluster up"; finish; }
# The server trusts loopback, so the password is never checked: it is only
# there to be hidden.
PGURL=${PG/cachesvc@/cachesvc:$SECRET@}
echo "pg=$PGURL redis=$SEEDS"

start_svc a $P --store.url="$PGURL" --redis.url="$SEEDS" --kafka.brokers=embedded \
  --kafka.invalidation_delay_ms=100 --store.timeout_ms=300 --log.slow_ms=1 || exit 1
wait_ready $U
req PUT $U/v1/items/hot '{"stock":100000}' "${ADMIN[@]}"; expect 201 "" "create"
req POST $U/v1/items/hot/decrement '{"user_id":"u0","qty":1}'; expect 200 "" "a decrement"

# The outage: PostgreSQL stopped, then bursts of decrements and reads of
# items not cached anywhere (every one reaches the database and fails).
"$SRC/scripts/postgres" down --dir "$T/pg" >/dev/null 2>&1
N=0; FAILED=0
burst() {   # burst NAME CURL_ARGS...: 100 requests, 16 at a time; counts the 503s
  local name=$1; shift
  curl -s --parallel --parallel-max 16 -K "$T/urls" -w '%{http_code}\n' "$@" >"$T/codes.$name" 2>/dev/null
  N=$((N + $(wc -l <"$T/codes.$name")))
  FAILED=$((FAILED + $(grep -c '^503$' "$T/codes.$name")))
}
for round in 1 2 3; do
  for i in $(seq 1 100); do printf 'url = "%s"\noutput = "/dev/null"\n' "$U/v1/items/hot/decrement"; done >"$T/urls"
  burst decr$round -H 'Content-Type: application/json' --data-binary '{"user_id":"u1","qty":1}'
  for i in $(seq 1 100); do printf 'url = "%s"\noutput = "/dev/null"\n' "$U/v1/items/cold$round-$i"; done >"$T/urls"
  burst read$round
done
echo "requests during the outage: $N, answered 503: $FAILED"
# Redis goes too: its client logs each node it loses (module=redis).
"$SRC/scripts/redis-cluster" down --dir "$T/redis" >/dev/null 2>&1
for i in $(seq 1 100); do printf 'url = "%s"\noutput = "/dev/null"\n' "$U/v1/items/gone-$i"; done >"$T/urls"
burst read_redis_down
check "at least 250 requests failed during the outage ($FAILED)" [ "$FAILED" -ge 250 ]
sleep 1.5   # the tick writes the counts of the last second
stop_svc "$LAST_PID"
check "the service stopped cleanly (rc $STOP_RC)" [ "$STOP_RC" = 0 ]
LOG=$T/a.log

echo "lines per module:"; grep -o ' module=[a-z]*' "$LOG" | sort | uniq -c
grep ' module=' "$LOG" | head -8
bad=$(grep -v -E '^ts=[0-9T:.Z-]+ level=(debug|info|warn|error) msg="' "$LOG" | head -3)
check "every stderr line is logfmt${bad:+ (not: $bad)}" [ -z "$bad" ]
check "the run logged module lines (store)" grep -q ' module=store ' "$LOG"
check "the Redis client logged the nodes it lost (module=redis)" \
  grep -q 'msg="node unreachable" module=redis node=127.0.0.1:257' "$LOG"
check "no line holds the database password" bash -c "! grep -q -- '$SECRET' '$LOG'"
check "the database URL is logged redacted" grep -q "cachesvc:<redacted>@127.0.0.1:$PGP" "$LOG"
check "slow requests name the API error code" grep -q 'msg="slow request" .*error=unavailable' "$LOG"
check "no slow request names a number" bash -c "! grep 'msg=\"slow request\"' '$LOG' | grep -q 'error=-\\?[0-9]'"

# Bounded: a call site (module + msg) writes at most 5 lines in each of its
# seconds, which start at its first line, not on the clock's second: one
# second of the clock holds at most two of them, 10 lines (the counts
# aside).
warn=$(grep -c -E ' level=(warn|error) ' "$LOG")
echo "warn/error lines: $warn for $FAILED failed requests"
check "fewer warn/error lines ($warn) than a third of the failed requests ($FAILED)" \
  [ $((warn * 3)) -lt "$FAILED" ]
worst=$(grep -v ' suppressed=' "$LOG" |
  sed -n 's/^ts=\([^ .]*\)[^ ]* level=[a-z]* msg="\(\([^"\\]\|\\.\)*\)"\( module=[a-z]*\)\?.*/\1|\2|\4/p' |
  sort | uniq -c | sort -rn | head -1 | awk '{$1 = $1; print}')
echo "busiest site and second of the clock: $worst"
check "no call site wrote more than 10 lines in one second of the clock ($worst)" \
  [ "${worst%% *}" -le 10 ]
check "the suppressed lines were counted" grep -q ' suppressed=[0-9]' "$LOG"
# The counts add up: the store-read failures written plus their counts are
# one per failed read (each read reaches the database once).
reads_written=$(grep 'msg="store read failed"' "$LOG" | grep -vc ' suppressed=')
reads_counted=$(grep 'msg="store read failed"' "$LOG" | sed -n 's/.* suppressed=\([0-9]*\).*/\1/p' |
  awk '{s += $1} END {print s + 0}')
read_503=$(cat "$T"/codes.read* | grep -c '^503$')
echo "store read failed: $reads_written written + $reads_counted counted"
sum=$((reads_written + reads_counted))
check "written + counted store-read failures ($sum) = the failed reads ($read_503)" [ "$sum" = "$read_503" ]

# librdkafka's own lines (log and error callbacks): brokers that refuse
# every connection. They are logfmt, module=kafka, rate-limited like the
# rest.
start_svc k 25701 --store.url="sqlite:$T/k.db" --redis.url=none \
  --kafka.brokers=127.0.0.1:25739 || exit 1
sleep 2.5
stop_svc "$LAST_PID"
KLOG=$T/k.log
bad=$(grep -v -E '^ts=[0-9T:.Z-]+ level=(debug|info|warn|error) msg="' "$KLOG" | head -3)
check "every stderr line is logfmt with Kafka unreachable${bad:+ (not: $bad)}" [ -z "$bad" ]
check "librdkafka's connection failures come as module=kafka lines" \
  grep -q 'level=error msg=".*Connect to ipv4#127.0.0.1:25739 failed.*" module=kafka fac=FAIL client=' "$KLOG"
check "librdkafka's errors come as module=kafka lines" \
  grep -q 'msg="1/1 brokers are down" module=kafka error=_ALL_BROKERS_DOWN' "$KLOG"
finish
