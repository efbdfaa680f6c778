#!/usr/bin/env bash
# http-memserver against curl (keep-alive, HEAD, Expect: 100-continue,
# limits, auth, the JSON routes), raw pipelining over bash's /dev/tcp, and a
# short bounded wrk run with no errors.
# Usage: api_curl.sh <http-memserver> <port>
set -uo pipefail
bin=$1; port=$2
tmp=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fails=0
check() {   # check <name> <expected substring> <actual>
  if printf '%s' "$3" | grep -qF -- "$2"; then echo "ok   $1"; else
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
out=$($C "$u/readyz")
check "readyz" '{"status":"ready","store":"up","redis":"none","kafka":"none"}' "$out"

# Pipelining: three requests in one write on one connection, answered in order.
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /v1/items/hot HTTP/1.1\r\nX-Request-Id: p1\r\n\r\nGET /healthz HTTP/1.1\r\nX-Request-Id: p2\r\n\r\nGET /v1/items/lim HTTP/1.1\r\nX-Request-Id: p3\r\nConnection: close\r\n\r\n' >&3
out=$(timeout 5 cat <&3 | tr -d '\r' | grep '^X-Request-Id' | tr '\n' ' ')
exec 3<&-
check "pipelining order" "X-Request-Id: p1 X-Request-Id: p2 X-Request-Id: p3" "$out"

# wrk: a short, bounded run with no socket errors or non-2xx answers.
if command -v wrk >/dev/null; then
  out=$(wrk -t2 -c32 -d2s "$u/v1/items/hot" 2>&1)
  check "wrk ran" "requests in" "$out"
  if printf '%s' "$out" | grep -q "Non-2xx\|Socket errors"; then
    echo "FAIL wrk errors:"; printf '%s\n' "$out"; fails=$((fails + 1)); else echo "ok   wrk without errors"; fi
fi

kill -TERM "$pid"; wait "$pid"; rc=$?; pid=""
[ "$rc" -eq 0 ] && echo "ok   SIGTERM exit 0" || { echo "FAIL exit status $rc"; fails=$((fails + 1)); }
echo "$fails failed"
[ "$fails" -eq 0 ] || { echo "--- server stderr"; head -60 "$tmp/err"; }
[ "$fails" -eq 0 ]
