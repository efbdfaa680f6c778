#!/usr/bin/env bash
# The binary with PostgreSQL, a local Redis Cluster and cachesvc-devbroker:
# the three read tiers, the delayed Redis delete, Redis down (the breaker:
# reads keep being served), the database down (503, readiness) and back.
# The instances here run the eviction protocol (kafka.broadcast_mode =
# evict), whose delayed delete leaves a tombstone at every write's version;
# service_two_instances checks the update protocol, the default.
. "$(dirname "$0")/../support/service_lib.sh"
: "${DEVBROKER:?cachesvc-devbroker not built}"
P=25100; RP=25110; PGP=25120
U=http://127.0.0.1:$P

PG=$("$SRC/scripts/postgres" up --dir "$T/pg" --port $PGP | tail -1) || { fail "postgres up"; finish; }
CLEANUPS+=("'$SRC/scripts/postgres' down --dir '$T/pg'")
CLEANUPS+=("'$SRC/scripts/redis-cluster' down --dir '$T/redis'")
SEEDS=$(cluster_up "$T/redis" $RP) || { fail "redis-cluster up"; finish; }
"$DEVBROKER" >"$T/broker.out" 2>"$T/broker.log" &
BPID=$!; CLEANUPS+=("kill $BPID")
for i in $(seq 1 100); do [ -s "$T/broker.out" ] && break; sleep 0.05; done
BROKERS=$(head -1 "$T/broker.out")
echo "pg=$PG redis=$SEEDS brokers=$BROKERS"

rget() { redis-cli -c -h 127.0.0.1 -p $RP GET "stock:{$1}" 2>/dev/null; }
start_svc a $P --store.url="$PG" --redis.url="$SEEDS" --kafka.brokers="$BROKERS" \
  --kafka.invalidation_delay_ms=300 --cache.local_ttl_ms=1000 --redis.breaker_probe_ms=300 \
  --redis.timeout_ms=100 --kafka.instance_id=a --kafka.broadcast_mode=evict || exit 1
wait_ready $U
expect 200 '"redis":"up"' "readyz: all up"
curl -s $U/metrics >"$T/metrics"
check "metrics per Redis node" grep -q '^cachesvc_redis_node_commands_total{node="127.0.0.1:' "$T/metrics"
check "metrics: Redis node up gauge" grep -q '^cachesvc_redis_node_up{node=' "$T/metrics"

req PUT $U/v1/items/hot '{"stock":1000}' "${ADMIN[@]}"; expect 201 "" "create"
v0=$(json_num version <<<"$BODY")
# The creation's delayed delete leaves a tombstone (the fleet's delay
# consumer group may still be joining after a start: readiness does not
# wait for it, the event waits in Kafka).
for i in $(seq 1 150); do [[ "$(rget hot)" == *"|~" ]] && break; sleep 0.1; done
check "the delayed delete left a tombstone at $v0 (got '$(rget hot)')" [ "$(rget hot)" = "$v0|~" ]
sleep 1.1   # local TTL passes
req GET $U/v1/items/hot; expect 200 "\"version\":$v0" "read"
check "X-Cache db (Redis held a tombstone)" [ "$(header X-Cache)" = db ]
check "Redis filled with the version" grep -q "^$v0|1000|" <<<"$(rget hot)"
req GET $U/v1/items/hot; check "X-Cache local" [ "$(header X-Cache)" = local ]
sleep 1.1
req GET $U/v1/items/hot; check "X-Cache redis after the local TTL" [ "$(header X-Cache)" = redis ]

req POST $U/v1/items/hot/decrement '{"user_id":"u1","qty":1}'; expect 200 "" "decrement"
v1=$(json_num version <<<"$BODY")
req GET $U/v1/items/hot; expect 200 "\"version\":$v1" "read-your-writes"
sleep 1.0   # delay 300 ms + margin
r=$(rget hot); rv=${r%%|*}
check "Redis holds no older version after delay + margin (got '$r')" [ -z "$r" -o "${rv:-0}" -ge "$v1" ]

# Many invalidations at once (the delay consumer's deletes run through the
# fan-out pool): N items filled into Redis, one decrement each, then after
# delay + margin no key may hold a version older than its decrement's.
N=300
inv0=$(curl -s $U/metrics | sed -n 's/^cachesvc_inv_applied_total //p')
curl -s -X PUT "${ADMIN[@]}" -H 'Content-Type: application/json' \
  --data-binary '{"stock":50}' $(for i in $(seq 1 $N); do echo "$U/v1/items/many$i"; done) >/dev/null
sleep 1.2   # the creations' own delayed deletes pass first
curl -s $(for i in $(seq 1 $N); do echo "$U/v1/items/many$i"; done) >/dev/null
filled=0
for i in $(seq 1 $N); do [ -n "$(rget many$i)" ] && filled=$((filled + 1)); done
check "$N items filled into Redis ($filled)" [ "$filled" = $N ]
curl -s -X POST -H 'Content-Type: application/json' -w '\n' \
  --data-binary '{"user_id":"many","qty":1}' \
  $(for i in $(seq 1 $N); do echo "$U/v1/items/many$i/decrement"; done) >"$T/many.out"
check "$N decrements answered" [ "$(grep -c '"order_id"' "$T/many.out")" = $N ]
sleep 1.5   # delay 300 ms + margin
older=0; i=0
while read -r line; do
  i=$((i + 1)); v=$(json_num version <<<"$line"); r=$(rget many$i); rv=${r%%|*}
  [ -n "$r" ] && [ "${rv:-0}" -lt "${v:-0}" ] && older=$((older + 1))
done <"$T/many.out"
check "Redis holds no older version of the $N items after delay + margin ($older older)" [ "$older" = 0 ]
inv1=$(curl -s $U/metrics | sed -n 's/^cachesvc_inv_applied_total //p')
check "the delay consumer applied >= $N deletes ($((inv1 - inv0)))" [ $((inv1 - inv0)) -ge $N ]

# The embedded broker's log dies with the process: a SIGTERM within the
# delay applies the held invalidations before the exit, so Redis holds no
# copy older than the last commit afterwards.
start_svc e $((P + 5)) --store.url=sqlite:"$T/embedded.db" --redis.url="$SEEDS" \
  --kafka.brokers=embedded --kafka.invalidation_delay_ms=5000 --kafka.instance_id=e \
  --kafka.broadcast_mode=evict || exit 1
EPID=$LAST_PID
E=http://127.0.0.1:$((P + 5))
wait_ready $E
req PUT $E/v1/items/emb '{"stock":5}' "${ADMIN[@]}"; expect 201 "" "embedded: create"
req POST $E/v1/items/emb/decrement '{"user_id":"e1","qty":1}'; expect 200 '"stock":4' "embedded: a write"
ev=$(json_num version <<<"$BODY")
stop_svc "$EPID" TERM
check "embedded: the instance exits 0 on SIGTERM" [ "$STOP_RC" = 0 ]
r=$(rget emb)
check "embedded: Redis holds the tombstone of version $ev after the stop (got '$r')" [ "$r" = "$ev|~" ]

# A kill -9 within the delay loses the embedded log and the held events:
# the outbox row of a write stays until its Redis delete was applied, so
# the restarted instance publishes it again and Redis ends at the write's
# version.
start_svc e2 $((P + 5)) --store.url=sqlite:"$T/embedded.db" --redis.url="$SEEDS" \
  --kafka.brokers=embedded --kafka.invalidation_delay_ms=5000 --kafka.instance_id=e \
  --kafka.broadcast_mode=evict || exit 1
EPID=$LAST_PID
wait_ready $E
req GET $E/v1/items/emb; expect 200 "\"version\":$ev" "embedded: read after the restart"
r=$(rget emb)
check "embedded: the read filled Redis at version $ev (got '$r')" [ "${r%%|*}" = "$ev" ] && [ "${r#*|}" != "~" ]
req POST $E/v1/items/emb/decrement '{"user_id":"e2","qty":1}'; expect 200 '"stock":3' "embedded: a write before the kill"
kv=$(json_num version <<<"$BODY")
sleep 0.3   # the relay has published it to the embedded broker
stop_svc "$EPID" KILL
r=$(rget emb)
check "embedded: right after kill -9 Redis still holds the older copy (got '$r')" [ "${r%%|*}" = "$ev" ]
start_svc e3 $((P + 5)) --store.url=sqlite:"$T/embedded.db" --redis.url="$SEEDS" \
  --kafka.brokers=embedded --kafka.invalidation_delay_ms=5000 --kafka.instance_id=e \
  --kafka.broadcast_mode=evict || exit 1
EPID=$LAST_PID
for i in $(seq 1 100); do r=$(rget emb); [ "${r%%|*}" -ge "$kv" ] 2>/dev/null && break; sleep 0.1; done
check "embedded: after kill -9, restart and the delay Redis holds no copy older than $kv (got '$r')" \
  [ "${r%%|*}" -ge "$kv" ]
stop_svc "$EPID" TERM

# Redis down: reads keep being served, the breaker opens, readiness says so.
"$SRC/scripts/redis-cluster" down --dir "$T/redis" >/dev/null 2>&1
sleep 0.4
t0=$(date +%s%N)
for i in $(seq 1 20); do req GET $U/v1/items/hot; [ "$CODE" = 200 ] || break; sleep 0.05; done
expect 200 "\"version\":$v1" "reads served with Redis down"
req POST $U/v1/items/hot/decrement '{"user_id":"u2","qty":1}'; expect 200 "" "decrements with Redis down"
req GET $U/readyz; expect 200 '"redis":"down"' "readyz names redis"
expect 200 '"status":"degraded"' "Redis down is degraded (200: the instance still sells)"
expect 200 '"degraded":["redis"]' "readyz lists redis as degraded"
# The breaker counts failed Redis reads, which come only as local entries
# expire (1 s TTL): keep reading for up to 6 s until it has opened.
for i in $(seq 1 60); do
  curl -s $U/metrics | grep -q '^cachesvc_redis_breaker_opens_total [1-9]' && break
  curl -s -o /dev/null $U/v1/items/hot; sleep 0.1
done
check "breaker opened" grep -q '^cachesvc_redis_breaker_opens_total [1-9]' <(curl -s $U/metrics)
check "breaker open gauge" grep -q '^cachesvc_redis_breaker_open 1' <(curl -s $U/metrics)
sleep 1.1   # local TTL: the next reads miss locally and meet the open breaker
for i in 1 2 3; do curl -s -o /dev/null $U/v1/items/hot; done
check "reads skip Redis while the breaker is open" grep -q '^cachesvc_redis_skipped_total [1-9]' <(curl -s $U/metrics)

# Database down: 503, nothing applied; back up: recovery.
req GET "$U/admin/items/hot/audit" "" "${ADMIN[@]}"; sold0=$(json_num units_sold <<<"$BODY")
"$SRC/scripts/postgres" kill --dir "$T/pg" >/dev/null 2>&1
req POST $U/v1/items/hot/decrement '{"user_id":"u3","qty":1}' -H 'Idempotency-Key: pgdown-1'
expect 503 "" "503 with the database down"
check "the 503 carries Retry-After" [ -n "$(header Retry-After)" ]
check "503 code is unavailable or outcome_unknown" grep -Eq '"(unavailable|outcome_unknown)"' <<<"$BODY"
id=$(header X-Request-Id)
check "the store failure is logged with the request's id (req=$id)" \
  grep -Eq "level=(warn|error) msg=\"decrement failed.* req=$id sku=hot" "$T/a.log"
req GET $U/readyz; expect 503 '"store":"down"' "readyz names the store"
expect 503 '"status":"not_ready"' "the store down is not_ready"
check "a 503 readyz carries Retry-After" [ -n "$(header Retry-After)" ]
"$SRC/scripts/postgres" up --dir "$T/pg" --port $PGP >/dev/null 2>&1 || fail "postgres restart"
for i in $(seq 1 100); do
  req POST $U/v1/items/hot/decrement '{"user_id":"u3","qty":1}' -H 'Idempotency-Key: pgdown-1'
  [ "$CODE" = 200 ] && break; sleep 0.1
done
expect 200 "" "the retry with the same key succeeds after recovery"
req GET "$U/admin/items/hot/audit" "" "${ADMIN[@]}"
check "exactly one unit sold by the retried key" [ "$(json_num units_sold <<<"$BODY")" = $((sold0 + 1)) ]

# Kafka gone: events wait in the outbox, readiness names kafka after the
# relay has made no progress for 5 s; decrements go on.
kill $BPID 2>/dev/null; wait $BPID 2>/dev/null
req POST $U/v1/items/hot/decrement '{"user_id":"u4","qty":1}'; expect 200 "" "decrement with Kafka down"
for i in $(seq 1 100); do req GET $U/readyz; [[ "$BODY" == *'"kafka":"down"'* ]] && break; sleep 0.2; done
expect 200 '"kafka":"down"' "readyz names kafka"
expect 200 '"status":"degraded"' "Kafka (and Redis) down is degraded"

finish
