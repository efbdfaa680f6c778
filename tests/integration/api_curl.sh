#!/usr/bin/env bash
# http-memserver against curl (keep-alive, HEAD, Expect: 100-continue,
# limits, auth, the JSON routes), raw pipelining over bash's /dev/tcp, a
# short bounded wrk run with no errors, then a second server (port + 1) for
# the operator contract: /readyz degraded, not_ready and draining,
# Retry-After on every 503 and on 425 with the sale's start, the settings
# of GET /admin/config, and the admin token reloaded on SIGHUP.
# Usage: api_curl.sh <http-memserver> <port>   (uses port and port + 1)
set -uo pipefail
bin=$1; port=$2
tmp=$(mktemp -d)
pid=""; pid2=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  [ -n "$pid2" ] && kill "$pid2" 2>/dev/null && wait "$pid2" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fails=0
check() {   # check <name> <expected substring> <actual>
  if printf '%s' "$3" | grep -F -- "$2" >/dev/null; then echo "ok   $1"; else
    echo "FAIL $1: expected [$2] in:"; printf '%s\n' "$3" | head -20; fails=$((fails + 1)); fi
}
"$bin" --port "$port" --workers 2 --admin-token sekret --item hot:100 --item lim:10:1 >"$tmp/out" 2>"$tmp/err" &
pid=$!
for i in $(seq 100); do curl -s "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.05; done
u=http://127.0.0.1:$port
C="curl -s --http1.1 --max-time 5"

out=$($C -v "$u/v1/items/hot" "$u/healthz" 2>&1)
check "keep-alive reuses the connection" "Re-using existing connection" "$out"
check "GET item" '{"sku":"hot","stock":100,"version":1,"per_user_limit":0,"sale_starts_at_ms":0}' "$out"
check "X-Cache" "X-Cache: local" "$out"
check "X-Request-Id" "X-Request-Id: " "$out"
out=$($C -I "$u/v1/items/hot")
check "HEAD" "Content-Length: 78" "$out"
out=$($C -i "$u/v1/items/none")
check "404 envelope" '{"error":"not_found","detail":' "$out"
check "404 of an item read says which tier" "X-Cache: local" "$out"
out=$($C -i -X DELETE "$u/v1/items/hot")
check "405 Allow" "Allow: GET, HEAD, PUT" "$out"
out=$($C -i -X POST -H 'Idempotency-Key: k1' -d '{"user_id":"u1","qty":2}' "$u/v1/items/hot/decrement")
check "decrement" '"qty":2,"stock":98,"version":2,"replayed":false}' "$out"
out=$($C -i -X POST -H 'Idempotency-Key: k1' -d '{"user_id":"u1","qty":2}' "$u/v1/items/hot/decrement")
check "idempotent replay" '"stock":98,"version":2,"replayed":true}' "$out"
out=$($C -v -X POST -H 'Expect: 100-continue' -d '{"user_id":"u2","qty":1}' "$u/v1/items/lim/decrement" 2>&1)
check "Expect: 100-continue" "HTTP/1.1 100 Continue" "$out"
check "Expect: then 200" '"stock":9,' "$out"
out=$($C -i -X POST -d '{"user_id":"u2","qty":1}' "$u/v1/items/lim/decrement")
check "limit_exceeded" '409 Conflict' "$out"
out=$($C -i -X POST -d '{"user_id":"u2"' "$u/v1/items/lim/decrement")
check "bad JSON" '{"error":"bad_request"' "$out"
out=$($C -i "$u/admin/config")
check "admin without token 401" "WWW-Authenticate: Bearer" "$out"
out=$($C -i -H 'Authorization: Bearer sekret' -X PUT -d '{"local_ttl_ms":1}' "$u/admin/config")
check "admin PUT config" '"local_ttl_ms":1,' "$out"
out=$($C -H 'Authorization: Bearer sekret' "$u/admin/config")
check "admin GET config lists the settings" '"log_level":"info","settings":{' "$out"
check "a changed setting's source is set" '"cache.local_ttl_ms":{"value":1,"source":"set"}' "$out"
out=$($C -i -H 'Authorization: Bearer sekret' -X PUT -d '{"stock":5}' "$u/v1/items/new")
check "admin PUT item 201" "201 Created" "$out"
out=$($C -H 'Authorization: Bearer sekret' "$u/admin/items/hot/audit?orders=true")
check "audit" '"units_supplied":100,"units_sold":2,"orders":1,"max_user_qty":2,"duplicate_idempotency_keys":0,"order_ids":[1]}' "$out"
long=$(head -c 3000 /dev/zero | tr '\0' a)
out=$($C -i "$u/v1/items/$long")
check "414" "414 URI Too Long" "$out"
out=$($C -i -H "X-Big: $(head -c 9000 /dev/zero | tr '\0' a)" "$u/healthz")
check "431" "431 Request Header Fields Too Large" "$out"
head -c 70000 /dev/zero | tr '\0' a > "$tmp/big"
out=$($C -i -X POST --data-binary @"$tmp/big" "$u/v1/items/hot/decrement")
check "413" "413 Payload Too Large" "$out"
out=$($C -i -X POST -H 'Transfer-Encoding: chunked' -d '{"user_id":"u","qty":1}' "$u/v1/items/hot/decrement")
check "a chunked body (curl streams it)" '"user_id":"u","qty":1' "$out"
out=$($C -i -X POST -H 'Transfer-Encoding: gzip' -d '{"user_id":"u","qty":1}' "$u/v1/items/hot/decrement")
check "400 for Transfer-Encoding beside Content-Length" "400 Bad Request" "$out"
out=$($C "$u/metrics")
check "metrics" 'http_requests_total{route="/v1/items/{sku}",method="GET",code="200"}' "$out"
out=$($C -i "$u/readyz")
check "readyz" '{"status":"ready","store":"up","redis":"none","kafka":"none","degraded":[]}' "$out"
check "readyz 200" "HTTP/1.1 200 OK" "$out"

# Pipelining: three requests in one write on one connection, answered in order.
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /v1/items/hot HTTP/1.1\r\nX-Request-Id: p1\r\n\r\nGET /healthz HTTP/1.1\r\nX-Request-Id: p2\r\n\r\nGET /v1/items/lim HTTP/1.1\r\nX-Request-Id: p3\r\nConnection: close\r\n\r\n' >&3
out=$(timeout 5 cat <&3 | tr -d '\r' | grep '^X-Request-Id' | tr '\n' ' ')
exec 3<&-
check "pipelining order" "X-Request-Id: p1 X-Request-Id: p2 X-Request-Id: p3" "$out"

# wrk (scripts/setup installs it): a short, bounded run with no socket
# errors or non-2xx answers.
out=$(wrk -t2 -c32 -d2s "$u/v1/items/hot" 2>&1)
check "wrk ran" "requests in" "$out"
if printf '%s' "$out" | grep -q "Non-2xx\|Socket errors"; then
  echo "FAIL wrk errors:"; printf '%s\n' "$out"; fails=$((fails + 1)); else echo "ok   wrk without errors"; fi

kill -TERM "$pid"; wait "$pid"; rc=$?; pid=""
[ "$rc" -eq 0 ] && echo "ok   SIGTERM exit 0" || { echo "FAIL exit status $rc"; fails=$((fails + 1)); }

# The operator contract, on a second server whose Redis is down.
port2=$((port + 1)); u2=http://127.0.0.1:$port2
printf 'tok-1\n' >"$tmp/token"
"$bin" --port "$port2" --workers 2 --admin-token-file "$tmp/token" --ready-redis down \
  --ready-kafka up --retry-after-s 4 --drain-grace-ms 1500 >"$tmp/out2" 2>"$tmp/err2" &
pid2=$!
for i in $(seq 100); do curl -s "$u2/healthz" >/dev/null && break; sleep 0.05; done
A=(-H 'Authorization: Bearer tok-1')

out=$($C -i "$u2/readyz")
check "degraded: 200" "HTTP/1.1 200 OK" "$out"
check "degraded names redis" '{"status":"degraded","store":"up","redis":"down","kafka":"up","degraded":["redis"]}' "$out"

start=$(( ($(date +%s) + 120) * 1000 ))
$C -o /dev/null -X PUT "${A[@]}" -d "{\"stock\":5,\"sale_starts_at_ms\":$start}" "$u2/v1/items/later"
out=$($C -i -X POST -d '{"user_id":"u1","qty":1}' "$u2/v1/items/later/decrement")
check "425" "HTTP/1.1 425 Too Early" "$out"
check "425 says when the sale starts" "\"sale_starts_at_ms\":$start}" "$out"
ra=$(printf '%s' "$out" | tr -d '\r' | sed -n 's/^Retry-After: //p')
if [ -n "$ra" ] && [ "$ra" -ge 115 ] && [ "$ra" -le 120 ]; then echo "ok   425 Retry-After is the seconds until the start ($ra)"
else echo "FAIL 425 Retry-After [$ra], want 115-120"; fails=$((fails + 1)); fi

# A store outage (SIGUSR1 toggles it): every 503 carries Retry-After.
kill -USR1 "$pid2"; sleep 0.2
out=$($C -i -X POST -d '{"user_id":"u1","qty":1}' "$u2/v1/items/hot/decrement")
check "outage: decrement 503" "HTTP/1.1 503 Service Unavailable" "$out"
check "outage: the service's Retry-After" "Retry-After: 4" "$out"
out=$($C -i "$u2/v1/items/hot")
check "outage: read 503" '{"error":"unavailable"' "$out"
check "outage: read Retry-After 1" "Retry-After: 1" "$out"
out=$($C -i "$u2/readyz")
check "outage: readyz 503 not_ready" "HTTP/1.1 503 Service Unavailable" "$out"
check "outage: readyz body" '{"status":"not_ready","store":"down","redis":"down","kafka":"up","degraded":["redis"]}' "$out"
check "outage: readyz Retry-After" "Retry-After: 1" "$out"
kill -USR1 "$pid2"; sleep 0.2
out=$($C -i "$u2/v1/items/hot")
check "recovered: read 200" "HTTP/1.1 200 OK" "$out"

# The admin token is read again on SIGHUP.
out=$($C -i "${A[@]}" "$u2/admin/config")
check "token 1 admits" "HTTP/1.1 200 OK" "$out"
printf 'tok-2\n' >"$tmp/token"; kill -HUP "$pid2"
for i in $(seq 50); do grep -q "admin token reloaded" "$tmp/err2" && break; sleep 0.05; done
out=$($C -i "${A[@]}" "$u2/admin/config")
check "after SIGHUP token 1 is refused" "HTTP/1.1 401 Unauthorized" "$out"
out=$($C -i -H 'Authorization: Bearer tok-2' "$u2/admin/config")
check "after SIGHUP token 2 admits" "HTTP/1.1 200 OK" "$out"
printf 'tok 3\n' >"$tmp/token"; kill -HUP "$pid2"
for i in $(seq 50); do grep -q "admin token kept" "$tmp/err2" && break; sleep 0.05; done
out=$($C -i -H 'Authorization: Bearer tok-2' "$u2/admin/config")
check "an unusable token in the file keeps the old one" "HTTP/1.1 200 OK" "$out"

# SIGTERM: /readyz answers 503 draining during the grace period.
kill -TERM "$pid2"; sleep 0.3
out=$($C -i "$u2/readyz")
check "draining: 503" "HTTP/1.1 503 Service Unavailable" "$out"
check "draining: body" '"status":"draining"' "$out"
check "draining: Retry-After" "Retry-After: 1" "$out"
wait "$pid2"; rc=$?; pid2=""
[ "$rc" -eq 0 ] && echo "ok   second server: SIGTERM exit 0" || { echo "FAIL second server exit status $rc"; fails=$((fails + 1)); }

echo "$fails failed"
[ "$fails" -eq 0 ] || { echo "--- server stderr"; head -60 "$tmp/err"; head -30 "$tmp/err2" 2>/dev/null; }
[ "$fails" -eq 0 ]
