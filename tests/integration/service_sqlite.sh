#!/usr/bin/env bash
# The cachesvc binary with SQLite, embedded Kafka and no Redis: the read
# tiers, read-your-writes, replays, limits, sold-out fast rejects, restock,
# audits, admin config, metrics and readiness.
. "$(dirname "$0")/../support/service_lib.sh"
P=25010
U=http://127.0.0.1:$P
start_svc a $P --store.url=sqlite:"$T/db" --cache.local_ttl_ms=60000 || exit 1

req GET $U/healthz; expect 200 '"status":"ok"' "healthz"
wait_ready $U; expect 200 '"redis":"none"' "readyz with redis none"
req GET $U/v1/items/hot; expect 404 '"error":"not_found"' "unknown item 404"

req PUT $U/v1/items/hot '{"stock":100,"per_user_limit":2}' "${ADMIN[@]}"; expect 201 '"stock":100' "create item 201"
v0=$(json_num version <<<"$BODY")
req PUT $U/v1/items/hot '{"stock":100,"per_user_limit":2}' "${ADMIN[@]}"; expect 200 '"stock":100' "restock same 200"
v0=$(json_num version <<<"$BODY")
req GET $U/v1/items/hot; expect 200 '"stock":100' "get after put"
check "X-Cache local after put" [ "$(header X-Cache)" = local ]

req POST $U/v1/items/hot/decrement '{"user_id":"u1","qty":1}' -H 'Idempotency-Key: k-1'
expect 200 '"replayed":false' "decrement 200"
v1=$(json_num version <<<"$BODY")
check "decrement bumps version" [ "$v1" -gt "$v0" ]
req GET $U/v1/items/hot; expect 200 "\"version\":$v1" "read-your-writes on the writer"
check "stock 99" [ "$(json_num stock <<<"$BODY")" = 99 ]

req POST $U/v1/items/hot/decrement '{"user_id":"u1","qty":1}' -H 'Idempotency-Key: k-1'
expect 200 '"replayed":true' "replay answers the original"
req GET $U/v1/items/hot; check "replay applied nothing" [ "$(json_num stock <<<"$BODY")" = 99 ]
req POST $U/v1/items/hot/decrement '{"user_id":"u1","qty":1}'; expect 200 "" "second unit for u1"
req POST $U/v1/items/hot/decrement '{"user_id":"u1","qty":1}'; expect 409 '"limit_exceeded"' "per-user limit"

req PUT $U/v1/items/tiny '{"stock":1}' "${ADMIN[@]}"; expect 201 "" "create tiny"
req POST $U/v1/items/tiny/decrement '{"user_id":"u2","qty":2}'; expect 409 '"insufficient_stock"' "insufficient stock"
req POST $U/v1/items/tiny/decrement '{"user_id":"u2","qty":1}'; expect 200 '"stock":0' "last unit"
req POST $U/v1/items/tiny/decrement '{"user_id":"u3","qty":1}'; expect 409 '"sold_out"' "sold out"
before=$(curl -s $U/metrics | sed -n 's/^cachesvc_fast_rejects_total \([0-9]*\)$/\1/p')
req POST $U/v1/items/tiny/decrement '{"user_id":"u4","qty":1}'; expect 409 '"sold_out"' "sold out again"
after=$(curl -s $U/metrics | sed -n 's/^cachesvc_fast_rejects_total \([0-9]*\)$/\1/p')
check "sold out answered from the local cache" [ "$after" -gt "$before" ]
req POST $U/v1/items/tiny/decrement '{"user_id":"u3","qty":1}' -H 'Idempotency-Key: k-x'
expect 409 '"sold_out"' "keyed decrement of a sold-out item goes to the store"
loads() { curl -s $U/metrics | sed -n 's/^cachesvc_store_sold_out_loads_total \([0-9]*\)$/\1/p'; }
check "its orders were loaded into memory once (store.sold_out_max_orders default)" [ "$(loads)" = 1 ]
req PUT $U/v1/items/tiny '{"stock":3}' "${ADMIN[@]}"; expect 200 '"stock":3' "restock"
req POST $U/v1/items/tiny/decrement '{"user_id":"u4","qty":1}'; expect 200 '"stock":2' "restock clears sold-out"

later=$(( ($(date +%s) + 3600) * 1000 ))
req PUT $U/v1/items/later "{\"stock\":5,\"sale_starts_at_ms\":$later}" "${ADMIN[@]}"; expect 201 "" "create later"
req POST $U/v1/items/later/decrement '{"user_id":"u1","qty":1}'; expect 425 '"sale_not_started"' "sale not started"

req GET "$U/admin/items/hot/audit?orders=true" ""  "${ADMIN[@]}"
expect 200 '"units_supplied":100' "audit"
sold=$(json_num units_sold <<<"$BODY"); stock=$(json_num stock <<<"$BODY")
check "audit invariant supplied - sold == stock" [ $((100 - sold)) = "$stock" ]
check "audit orders == 2" [ "$(json_num orders <<<"$BODY")" = 2 ]
check "audit order ids" grep -q '"order_ids":\[' <<<"$BODY"

req GET $U/admin/config "" "${ADMIN[@]}"; expect 200 '"invalidation_delay_ms":500' "admin config get"
req PUT $U/admin/config '{"invalidation_delay_ms":250,"log_level":"debug"}' "${ADMIN[@]}"
expect 200 '"invalidation_delay_ms":250' "admin config put"
req GET $U/admin/config "" "${ADMIN[@]}"; expect 200 '"log_level":"debug"' "admin config kept"

req PUT $U/admin/config '{"local_ttl_ms":60000,"log_level":"info"}' "${ADMIN[@]}"
expect 200 '"local_ttl_ms":60000' "admin config put local TTL"

# Every family the issue lists: HTTP by route and code with latency
# histograms, decrements by outcome, reads by tier, local cache size,
# evictions and refusals, store batch sizes and commit latency,
# invalidation lag and outbox depth, runtime per-worker counters.
curl -s $U/metrics >"$T/metrics"
for fam in 'http_requests_total{route="/v1/items/{sku}",method="GET",code="200"}' \
           'http_request_duration_seconds_bucket{route="/v1/items/{sku}/decrement",method="POST",le=' \
           'cachesvc_decrements_total{outcome="ok"}' 'cachesvc_decrements_total{outcome="sold_out"}' \
           'cachesvc_reads_total{tier="local"}' 'cachesvc_reads_total{tier="db"}' cachesvc_read_seconds_bucket \
           cachesvc_local_entries cachesvc_local_bytes cachesvc_local_evictions_total \
           cachesvc_local_fills_refused_total cachesvc_local_refused_floor_total \
           cachesvc_store_batch_size_bucket cachesvc_store_commit_seconds_bucket \
           cachesvc_invalidation_lag_seconds_bucket cachesvc_inv_outbox_depth \
           'cachesvc_rt_worker_switches_total{worker="0"}' cachesvc_broadcast_lag_seconds_count; do
  check "metrics has $fam" grep -qF "$fam" "$T/metrics"
done
if [ -z "${CACHESVC_NO_JEMALLOC:-}" ]; then
  check "metrics has jemalloc" grep -q '^cachesvc_jemalloc_allocated_bytes' "$T/metrics"
fi
check "metrics has http families" grep -q '^http_' "$T/metrics"

# Restart on the same database: the first read comes from the database.
stop_svc $LAST_PID; check "SIGTERM exits 0" [ "$STOP_RC" = 0 ]
start_svc b $P --store.url=sqlite:"$T/db" --store.sold_out_max_orders=0 || exit 1
req GET $U/v1/items/hot; expect 200 '"stock":98' "after restart"
check "X-Cache db on a cold instance" [ "$(header X-Cache)" = db ]
req GET $U/v1/items/hot; check "X-Cache local after the fill" [ "$(header X-Cache)" = local ]
# store.sold_out_max_orders = 0: keyed decrements of a sold-out item all go
# to the batcher, nothing is loaded into memory.
req PUT $U/v1/items/tiny2 '{"stock":1}' "${ADMIN[@]}"
req POST $U/v1/items/tiny2/decrement '{"user_id":"u1","qty":1}'; expect 200 '"stock":0' "tiny2 sold"
for k in a b; do
  req POST $U/v1/items/tiny2/decrement '{"user_id":"u2","qty":1}' -H "Idempotency-Key: t2-$k"
  expect 409 '"sold_out"' "keyed decrement $k of sold-out tiny2"
done
check "nothing loaded with store.sold_out_max_orders=0" [ "$(loads)" = 0 ]
check "logs are logfmt" grep -q '^ts=.* level=info msg="listening"' "$T/b.log"
finish
