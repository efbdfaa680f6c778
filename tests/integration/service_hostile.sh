#!/usr/bin/env bash
# Hostile requests against the real binary (SQLite, embedded Kafka, no
# Redis): bodies that nest deeply, smuggling forms of the header section,
# JSON that a lax parser would rewrite, chunked bodies, and repeated reads
# of unknown skus (cache penetration). Every refusal must change nothing,
# and the process must keep serving afterwards.
. "$(dirname "$0")/../support/service_lib.sh"
P=25060
U=http://127.0.0.1:$P
start_svc a $P --store.url=sqlite:"$T/db" --cache.negative_ttl_ms=60000 || exit 1
PID_A=$LAST_PID

req PUT $U/v1/items/hot '{"stock":1000}' "${ADMIN[@]}"; expect 201 "" "setup"

# raw BYTES: sends BYTES (printf %b escapes) on one connection, closes its
# write side and sets RAW to everything the server answered, STATUS to the
# status of the first response.
raw() {
  local out
  out=$(printf '%b' "$1" | timeout 10 "$SERVICE_CLIENT" raw 127.0.0.1:$P 2>/dev/null)
  RAW=$out
  STATUS=$(printf '%s' "$out" | head -1 | awk '{print $2}')
}
# raw_expect WANT WHAT BYTES: one raw request, its first status must be WANT.
raw_expect() {
  local want=$1 what=$2
  raw "$3"
  if [ "$STATUS" = "$want" ]; then ok "$what"; else fail "$what: got '${RAW:0:300}'"; fi
}
stock() { req GET $U/v1/items/hot; json_num stock <<<"$BODY"; }
alive() { req GET $U/healthz; [ "$CODE" = 200 ] && kill -0 "$PID_A" 2>/dev/null; }
post() {   # post BODY: a decrement of hot with BODY (printf %b escapes)
  local b=$1
  printf 'POST /v1/items/hot/decrement HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: %d\\r\\nConnection: close\\r\\n\\r\\n%s' \
    "$(printf '%b' "$b" | wc -c)" "$b"
}

# --- Deep nesting: a remote crash before, 400 now, and the next request is
# served by the same process.
deep=$(printf '%0.s[' $(seq 1 999))$(printf '%0.s]' $(seq 1 999))
req POST $U/v1/items/hot/decrement "$deep"; expect 400 '"bad_request"' "999 nested arrays: 400"
check "the process survives 999 nested arrays" alive
deep=$(head -c 60000 /dev/zero | tr '\0' '[')
req POST $U/v1/items/hot/decrement "$deep"; expect 400 '"bad_request"' "60,000 open arrays: 400"
deep='{"user_id":"u1","qty":1,"x":'$(head -c 30000 /dev/zero | tr '\0' '{')
req POST $U/v1/items/hot/decrement "$deep"; expect 400 '"bad_request"' "a member nesting 30,000 objects: 400"
check "the process survives deep objects" alive
req GET $U/v1/items/hot; expect 200 '"stock":1000' "served after the deep bodies, nothing applied"

# --- Smuggling forms of the header section: 400, nothing applied.
b='{"user_id":"u1","qty":1}'
raw_expect 400 "whitespace before the header colon" \
  "POST /v1/items/hot/decrement HTTP/1.1\r\nHost: x\r\nContent-Length : ${#b}\r\n\r\n$b"
raw_expect 400 "tab before the header colon" \
  "POST /v1/items/hot/decrement HTTP/1.1\r\nHost: x\r\nContent-Length\t: ${#b}\r\n\r\n$b"
raw_expect 400 "obs-fold" \
  "GET /v1/items/hot HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n"
raw_expect 400 "obs-fold of Content-Length" \
  "POST /v1/items/hot/decrement HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n ${#b}\r\n\r\n$b"
raw_expect 400 "Content-Length with a sign" \
  "POST /v1/items/hot/decrement HTTP/1.1\r\nHost: x\r\nContent-Length: +${#b}\r\n\r\n$b"
raw_expect 400 "Content-Length list" \
  "POST /v1/items/hot/decrement HTTP/1.1\r\nHost: x\r\nContent-Length: ${#b}, ${#b}\r\n\r\n$b"
raw_expect 400 "two Content-Length headers" \
  "POST /v1/items/hot/decrement HTTP/1.1\r\nHost: x\r\nContent-Length: ${#b}\r\nContent-Length: ${#b}\r\n\r\n$b"
raw_expect 400 "empty Content-Length" \
  "POST /v1/items/hot/decrement HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n$b"
raw_expect 400 "Content-Length in hex" \
  "POST /v1/items/hot/decrement HTTP/1.1\r\nHost: x\r\nContent-Length: 0x18\r\n\r\n$b"
raw_expect 400 "Content-Length with 30 digits" \
  "POST /v1/items/hot/decrement HTTP/1.1\r\nHost: x\r\nContent-Length: 000000000000000000000000000024\r\n\r\n$b"
raw_expect 400 "Content-Length and Transfer-Encoding" \
  "POST /v1/items/hot/decrement HTTP/1.1\r\nHost: x\r\nContent-Length: ${#b}\r\nTransfer-Encoding: chunked\r\n\r\n18\r\n$b\r\n0\r\n\r\n"
raw_expect 400 "a control byte in a header value" \
  "GET /v1/items/hot HTTP/1.1\r\nHost: x\r\nX-A: a\001b\r\n\r\n"
raw_expect 400 "a bare LF ending a header line" \
  "GET /v1/items/hot HTTP/1.1\r\nHost: x\nX-A: a\r\n\r\n"
raw_expect 400 "Transfer-Encoding in an HTTP/1.0 request" \
  "POST /v1/items/hot/decrement HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n18\r\n$b\r\n0\r\n\r\n"
check "no smuggling form applied a decrement" [ "$(stock)" = 1000 ]

# --- JSON a lax parser would rewrite: 400, nothing applied.
for body in '{"user_id":"u\u0000x","qty":1}' \
            '{"user_id":"u1","qty":1} garbage' \
            '{"user_id":"u1","qty":1}{}' \
            '{"user_id":"u1","qty":1,"qty":5}' \
            '{"user_id":"u1","user_id":"u2","qty":1}' \
            '{"user_id":"u1","qty":1e400}' \
            '{"user_id":"u1","qty":100000000000000000000000000000}' \
            '{"user_id":"u1","qty":1.5}' \
            '{"user_id":"u1","qty":01}' \
            '{"user_id":"u1","qty":1,}' \
            "{'user_id':'u1','qty':1}" \
            '{"user_id":"u\ud800","qty":1}' \
            '{"user_id":"u1","qty":1,"extra":[1,2]}' \
            '{"user_id":"u1","qty":1,"extra":{"a":1}}' \
            '[{"user_id":"u1","qty":1}]' \
            '"u1"' \
            ''; do
  req POST $U/v1/items/hot/decrement "$body"
  if [ -z "$body" ]; then req POST $U/v1/items/hot/decrement "" -H 'Content-Type: application/json' -H 'Content-Length: 0'; fi
  expect 400 '"bad_request"' "JSON refused: ${body:0:60}"
done
raw_expect 400 "a raw control byte inside a JSON string" "$(post '{"user_id":"u\001x","qty":1}')"
raw_expect 400 "a raw NUL inside a JSON string" "$(post '{"user_id":"u\000x","qty":1}')"
raw_expect 400 "invalid UTF-8 inside a JSON string" "$(post '{"user_id":"u1","qty":1,"n":"\377"}')"
check "no refused body applied a decrement" [ "$(stock)" = 1000 ]
req POST $U/v1/items/hot/decrement ' {"qty":1 , "user_id" : "u1"}  '
expect 200 '"stock":999' "whitespace around tokens and members in any order"
req POST $U/v1/items/hot/decrement '{"user_id":"u\u0031","qty":1,"note":"caf\u00e9 \"x\"","ok":true,"n":null}'
expect 200 '"user_id":"u1"' "escapes decode; unknown scalar members are ignored"
req PUT $U/v1/items/hot '{"stock":1000,"stock":1}' "${ADMIN[@]}"; expect 400 "" "PUT item with a duplicate member"
req PUT $U/admin/config '{"log_level":"info","log_level":"debug"}' "${ADMIN[@]}"; expect 400 "" "PUT config with a duplicate member"
check "stock after two buys" [ "$(stock)" = 998 ]

# --- Chunked request bodies.
c1=${b:0:10}; c2=${b:10}
raw_expect 200 "a chunked decrement" \
  "POST /v1/items/hot/decrement HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n$(printf %x ${#c1})\r\n$c1\r\n$(printf %x ${#c2});ext=1\r\n$c2\r\n0\r\nX-Trailer: t\r\n\r\n"
check "the chunked decrement applied once" [ "$(stock)" = 997 ]
raw "POST /v1/items/hot/decrement HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n$(printf %x ${#b})\r\n$b\r\n0\r\n\r\nGET /v1/items/hot HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
n200=$(grep -o 'HTTP/1.1 200' <<<"$RAW" | wc -l)
check "a chunked request pipelined with a GET: two answers" [ "$n200" = 2 ]
check "the GET after the chunked body sees its effect" grep -q '"stock":996' <<<"$RAW"
raw_expect 501 "Transfer-Encoding gzip is 501" \
  "POST /v1/items/hot/decrement HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"
raw_expect 501 "Transfer-Encoding gzip, chunked is 501" \
  "POST /v1/items/hot/decrement HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
raw_expect 400 "Transfer-Encoding chunked, chunked" \
  "POST /v1/items/hot/decrement HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"
raw_expect 400 "a chunk size that is not hex" \
  "POST /v1/items/hot/decrement HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n$b\r\n0\r\n\r\n"
# Over the body limit (64 KiB) in 1,000-byte chunks: 413.
chunk=$(head -c 1000 /dev/zero | tr '\0' ' ')
big="POST /v1/items/hot/decrement HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
for i in $(seq 1 70); do big+="3e8\r\n$chunk\r\n"; done
raw_expect 413 "a chunked body over the limit" "${big}0\r\n\r\n"
# Framing overhead: one-byte chunks with long extensions.
ext=$(head -c 4000 /dev/zero | tr '\0' 'e')
big="POST /v1/items/hot/decrement HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
for i in $(seq 1 40); do big+="1;$ext\r\n \r\n"; done
raw_expect 413 "chunk framing over the limit" "${big}0\r\n\r\n"
trailer=$(head -c 9000 /dev/zero | tr '\0' 't')
raw_expect 431 "a trailer section over the limit" \
  "POST /v1/items/hot/decrement HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n$(printf %x ${#b})\r\n$b\r\n0\r\nX-T: $trailer\r\n\r\n"
check "stock after the chunked requests" [ "$(stock)" = 996 ]
check "the process survives every hostile request" alive

# --- Cache penetration: an unknown sku is remembered as absent (for a
# minute here, so that a slow machine's 20 requests stay within it).
metric() { curl -s $U/metrics | awk -v m="$1" '$1 == m {print $2}'; }
db0=$(metric 'cachesvc_reads_not_found_total{tier="db"}')
for i in $(seq 1 20); do req GET $U/v1/items/ghost; done
expect 404 '"not_found"' "an unknown sku is 404"
db1=$(metric 'cachesvc_reads_not_found_total{tier="db"}')
loc=$(metric 'cachesvc_reads_not_found_total{tier="local"}')
check "20 reads of an unknown sku reach the database once (db ${db0:-?} -> ${db1:-?})" \
  [ "$((${db1:-0} - ${db0:-0}))" = 1 ]
check "the other 19 are answered from the local cache (${loc:-?})" [ "${loc:-0}" -ge 19 ]
req PUT $U/v1/items/ghost '{"stock":5}' "${ADMIN[@]}"; expect 201 "" "creating the unknown item"
req GET $U/v1/items/ghost; expect 200 '"stock":5' "the new item is visible at once on the writer"
req POST $U/v1/items/ghost/decrement '{"user_id":"u1","qty":1}'; expect 200 '"stock":4' "and sells"
finish
