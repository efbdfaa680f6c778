#!/usr/bin/env bash
# Every error code of the API contract (docs/api.md) through curl against
# the real binary (SQLite, embedded Kafka, no Redis). 503 is covered by
# service_pg_redis.sh, where the database can be stopped.
. "$(dirname "$0")/../support/service_lib.sh"
P=25020
U=http://127.0.0.1:$P
start_svc a $P --store.url=sqlite:"$T/db" --store.queue_max=1 --store.batch_max=1 || exit 1

req PUT $U/v1/items/hot '{"stock":100000}' "${ADMIN[@]}"; expect 201 "" "setup"
# 400
req POST $U/v1/items/hot/decrement '{"user_id":"u1","qty":'; expect 400 '"bad_request"' "400 malformed JSON"
req POST $U/v1/items/hot/decrement '{"user_id":"u1","qty":0}'; expect 400 '"bad_request"' "400 qty 0"
req POST $U/v1/items/hot/decrement '{"user_id":"u 1","qty":1}'; expect 400 '"bad_request"' "400 bad user id"
req POST $U/v1/items/hot/decrement '{"user_id":"u1","qty":1000001}'; expect 400 '"bad_request"' "400 qty too large"
req PUT $U/v1/items/new '{"per_user_limit":1}' "${ADMIN[@]}"; expect 400 '"bad_request"' "400 new item without stock"
req PUT $U/v1/items/hot '{"stock":-1}' "${ADMIN[@]}"; expect 400 '"bad_request"' "400 negative stock"
# 401 / 403
req PUT $U/v1/items/hot '{"stock":1}'; expect 401 "" "401 without token"
check "401 has WWW-Authenticate" [ -n "$(header WWW-Authenticate)" ]
req PUT $U/v1/items/hot '{"stock":1}' -H 'Authorization: Bearer wrong'; expect 401 "" "401 wrong token"
req GET $U/admin/config; expect 401 "" "401 admin config"
# 404 / 405
req GET $U/v1/items/nope; expect 404 '"not_found"' "404 unknown item"
req POST $U/v1/items/nope/decrement '{"user_id":"u1","qty":1}'; expect 404 '"not_found"' "404 decrement unknown item"
req GET $U/no/such/route; expect 404 "" "404 unknown route"
req DELETE $U/v1/items/hot; expect 405 "" "405"
check "405 has Allow" [ -n "$(header Allow)" ]
# 409 / 425
req PUT $U/v1/items/one '{"stock":1,"per_user_limit":1}' "${ADMIN[@]}"; expect 201 "" "setup one"
req POST $U/v1/items/one/decrement '{"user_id":"u1","qty":2}'; expect 409 '"limit_exceeded"' "409 limit_exceeded"
req PUT $U/v1/items/two '{"stock":1}' "${ADMIN[@]}"
req POST $U/v1/items/two/decrement '{"user_id":"u1","qty":2}'; expect 409 '"insufficient_stock"' "409 insufficient_stock"
req POST $U/v1/items/one/decrement '{"user_id":"u1","qty":1}'; expect 200 "" "buy the last"
req POST $U/v1/items/one/decrement '{"user_id":"u2","qty":1}'; expect 409 '"sold_out"' "409 sold_out"
later=$(( ($(date +%s) + 3600) * 1000 ))
req PUT $U/v1/items/later "{\"stock\":5,\"sale_starts_at_ms\":$later}" "${ADMIN[@]}"
req POST $U/v1/items/later/decrement '{"user_id":"u1","qty":1}'; expect 425 '"sale_not_started"' "425"
expect 425 "\"sale_starts_at_ms\":$later}" "425 says when the sale starts"
in_range() { [ -n "$1" ] && [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]; }
ra=$(header Retry-After)
check "425 Retry-After is the seconds until the start (${ra:-none})" in_range "$ra" 3590 3600
# 422: an Idempotency-Key replays only the request it was first sent
# with; a replay describes the stored order; the order can be looked up.
req PUT $U/v1/items/a '{"stock":10}' "${ADMIN[@]}"; req PUT $U/v1/items/other '{"stock":10}' "${ADMIN[@]}"
req POST $U/v1/items/a/decrement '{"user_id":"alice","qty":1}' -H 'Idempotency-Key: k1'; expect 200 '"replayed":false' "alice buys a with k1"
oid=$(json_num order_id <<<"$BODY")
req POST $U/v1/items/a/decrement '{"user_id":"alice","qty":1}' -H 'Idempotency-Key: k1'
expect 200 "{\"order_id\":$oid,\"sku\":\"a\",\"user_id\":\"alice\",\"qty\":1," "the same request replays alice's order"
req POST $U/v1/items/a/decrement '{"user_id":"mallory","qty":3}' -H 'Idempotency-Key: k1'
expect 422 '"idempotency_key_mismatch"' "k1 with another buyer and qty: 422"
req POST $U/v1/items/other/decrement '{"user_id":"bob","qty":2}' -H 'Idempotency-Key: k1'
expect 422 '"idempotency_key_mismatch"' "k1 on another item: 422"
req GET "$U/admin/items/other/audit" "" "${ADMIN[@]}"
check "nothing was sold of the other item" [ "$(json_num units_sold <<<"$BODY")" = 0 ]
req GET "$U/admin/items/a/audit" "" "${ADMIN[@]}"
check "one unit of a was sold" [ "$(json_num units_sold <<<"$BODY")" = 1 ]
req GET "$U/v1/orders/by-key?user_id=alice" "" -H 'Idempotency-Key: k1'
expect 200 "{\"order_id\":$oid,\"sku\":\"a\",\"user_id\":\"alice\",\"qty\":1," "the order looked up by its key"
req GET "$U/v1/orders/by-key?user_id=mallory" "" -H 'Idempotency-Key: k1'; expect 404 '"not_found"' "another buyer's key: 404"
req GET "$U/v1/orders/by-key?user_id=alice" "" -H 'Idempotency-Key: never-used'; expect 404 '"not_found"' "an unused key: 404"
req GET "$U/v1/orders/by-key?user_id=alice"; expect 400 '"bad_request"' "lookup without a key: 400"
# 413 / 414 / 431
head -c 70000 /dev/zero | tr '\0' 'a' >"$T/big"
CODE=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  --data-binary @"$T/big" $U/v1/items/hot/decrement); check "413 body too large" [ "$CODE" = 413 ]
long=$(head -c 3000 /dev/zero | tr '\0' 'a')
CODE=$(curl -s -o /dev/null -w '%{http_code}' "$U/v1/items/$long"); check "414 URI too long" [ "$CODE" = 414 ]
hdr=$(head -c 9000 /dev/zero | tr '\0' 'b')
CODE=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Big: $hdr" "$U/v1/items/hot"); check "431 headers too large" [ "$CODE" = 431 ]
# 429: one queued request per item, many concurrent buyers.
"$SERVICE_CLIENT" decr 127.0.0.1:$P hot 3000 64 load >"$T/load.out" 2>&1
cat "$T/load.out"
n429=$(sed -n 's/^status_429=//p' "$T/load.out")
check "429 overloaded under a full queue" [ "${n429:-0}" -gt 0 ]
# The Retry-After header: provoke one 429 while a load runs.
"$SERVICE_CLIENT" decr 127.0.0.1:$P hot 20000 64 bg >/dev/null 2>&1 &
LOADPID=$!
got=""
for i in $(seq 1 300); do
  req POST $U/v1/items/hot/decrement '{"user_id":"probe","qty":1}'
  if [ "$CODE" = 429 ]; then got=$(header Retry-After); break; fi
done
kill $LOADPID 2>/dev/null; wait $LOADPID 2>/dev/null
check "429 carries Retry-After" [ -n "$got" ]
check "429 body says overloaded" grep -q '"overloaded"' <<<"$BODY"
# 403 when no admin token is configured
start_svc b $((P + 1)) --store.url=sqlite:"$T/db2" --server.admin_token= || exit 1
req PUT http://127.0.0.1:$((P + 1))/v1/items/x '{"stock":1}'; expect 403 "" "403 admin without a configured token"
# Every response has a request id.
req GET $U/v1/items/hot; check "X-Request-Id present" [ -n "$(header X-Request-Id)" ]

# Lines logged while a request is served carry its X-Request-Id (logfmt
# req=<id>): a refused admin change, with the server's id and a client's.
req PUT $U/admin/config '{"local_ttl_ms":0}' "${ADMIN[@]}"; expect 400 "" "admin config refuses local_ttl_ms 0"
id=$(header X-Request-Id)
sleep 0.1
check "the refusal is logged at warn with req=$id" \
  grep -q "level=warn msg=\"admin config change refused\" req=$id " "$T/a.log"
req PUT $U/admin/config '{"invalidation_delay_ms":3600001}' "${ADMIN[@]}" -H 'X-Request-Id: trace-42'
expect 400 "" "admin config refuses a delay over 1 h"
sleep 0.1
check "the client's request id is logged (req=trace-42)" grep -q " req=trace-42 " "$T/a.log"
check "lines outside requests carry no id" grep -q 'msg="listening" addr=' "$T/a.log"
finish
