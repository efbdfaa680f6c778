#!/usr/bin/env bash
# What an operator does with the binary besides running it: --version,
# --check-config and --print-config; the admin token from a file, rotated
# by SIGHUP; SIGHUP naming each changed key (applied, or needing a
# restart) and keeping PUT /admin/config changes the file did not touch;
# GET /admin/config listing every key with its source; the lame-duck
# period (server.shutdown_delay_ms) before the drain.
. "$(dirname "$0")/../support/service_lib.sh"
P=25300
U=http://127.0.0.1:$P

# --version
out=$("$CACHESVC_BIN" --version); rc=$?
check "--version exits 0" [ $rc = 0 ]
check "--version prints the version and the commit" grep -Eq '^cachesvc [0-9]+\.[0-9]+\.[0-9]+ \(.+\)$' <<<"$out"

# --check-config: 0 for a good file, 2 with the key named for a bad one.
printf '[store]\nurl = sqlite:%s\nbatch_max = 64\n' "$T/db" >"$T/good.ini"
out=$("$CACHESVC_BIN" --check-config -c "$T/good.ini" 2>&1); rc=$?
check "--check-config accepts a good file" [ $rc = 0 ]
check "--check-config says ok" grep -q "configuration ok (file $T/good.ini)" <<<"$out"
printf '[store]\nbatch_max = lots\n' >"$T/bad.ini"
out=$("$CACHESVC_BIN" -t -c "$T/bad.ini" 2>&1); rc=$?
check "-t refuses a bad file with 2" [ $rc = 2 ]
check "-t names the key" grep -q "store.batch_max" <<<"$out"

# --print-config: effective values, their sources, secrets redacted.
printf 'tok-file-1\n' >"$T/token"; chmod 600 "$T/token"
out=$(CACHESVC_CACHE_LOCAL_TTL_MS=1500 CACHESVC_KAFKA_PROP_SASL_PASSWORD=kpw \
      "$CACHESVC_BIN" --print-config -c "$T/good.ini" --log.level=warn \
      --server.admin_token_file="$T/token" --redis.password=rpw \
      --store.url='postgresql://app:dbpw@127.0.0.1:5432/shop?sslmode=require' \
      --kafka.security.protocol=SASL_SSL 2>&1); rc=$?
check "--print-config exits 0" [ $rc = 0 ]
check "--print-config: a file value and its source" grep -A1 -- "; from file $T/good.ini" <<<"$out" | grep -q '^batch_max = 64'
check "--print-config: an env value and its source" grep -A1 -- "; from env CACHESVC_CACHE_LOCAL_TTL_MS" <<<"$out" | grep -q '^local_ttl_ms = 1500'
check "--print-config: a flag value and its source" grep -A1 -- "; from flag --log.level" <<<"$out" | grep -q '^level = warn'
check "--print-config: a default and its source" grep -A1 -- "; from default" <<<"$out" | grep -q '^workers = '
check "--print-config: a librdkafka property" grep -q '^security.protocol = SASL_SSL' <<<"$out"
check "--print-config: the Kafka password from the environment, redacted" grep -A1 -- "; from env CACHESVC_KAFKA_PROP_SASL_PASSWORD" <<<"$out" | grep -q '^sasl.password = <redacted>'
check "--print-config: the store URL's password redacted" grep -q '^url = postgresql://app:<redacted>@127.0.0.1:5432/shop?sslmode=require' <<<"$out"
check "--print-config: the Redis password redacted" grep -q '^password = <redacted>' <<<"$out"
check "--print-config: the admin token redacted" grep -q '^admin_token = <redacted>' <<<"$out"
for secret in tok-file-1 rpw kpw dbpw; do
  check "--print-config never shows $secret" bash -c "! grep -q '$secret' <<<\"\$1\"" _ "$out"
done

# The token file: refused when others may read it, or with admin_token too.
chmod 644 "$T/token"
out=$("$CACHESVC_BIN" -t --server.admin_token_file="$T/token" 2>&1); rc=$?
check "a token file others may read is refused" [ $rc = 2 ]
check "... and says why" grep -q "others may read it" <<<"$out"
chmod 600 "$T/token"
out=$("$CACHESVC_BIN" -t --server.admin_token_file="$T/token" --server.admin_token=x 2>&1); rc=$?
check "admin_token with admin_token_file is refused" [ $rc = 2 ]

# Run with the token file and a lame-duck period.
cat >"$T/svc.ini" <<INI
[server]
admin_token_file = $T/token
shutdown_delay_ms = 1500
[store]
url = sqlite:$T/db
batch_max = 64
[kafka]
brokers = none
invalidation_delay_ms = 500
INI
"$CACHESVC_BIN" --server.listen=127.0.0.1:$P --server.workers=2 -c "$T/svc.ini" >"$T/a.log" 2>&1 &
PID=$!; SVC_PIDS+=("$PID")
for i in $(seq 1 200); do curl -sf $U/healthz >/dev/null 2>&1 && break; sleep 0.05; done
check "the start line carries the version" grep -Eq 'msg="starting" version=[0-9.]+ commit=' "$T/a.log"
T1=(-H "Authorization: Bearer tok-file-1")
T2=(-H "Authorization: Bearer tok-file-2")
req GET $U/admin/config "" "${T1[@]}"; expect 200 '"invalidation_delay_ms":500' "the token from the file opens admin routes"
check "GET /admin/config lists every key with its source" grep -q '"store.batch_max":{"value":64,"source":"file"}' <<<"$BODY"
check "GET /admin/config lists defaults" grep -q '"cache.shards":{"value":64,"source":"default"}' <<<"$BODY"
check "GET /admin/config redacts the token" grep -q '"server.admin_token":{"value":"<redacted>","source":"file"}' <<<"$BODY"
check "GET /admin/config never shows the token" bash -c "! grep -q tok-file-1 <<<\"\$1\"" _ "$BODY"

# A PUT changes the local TTL; the file changes the delay, batch_max and
# the token; SIGHUP applies the delay and the token, keeps the PUT's TTL,
# and names batch_max as needing a restart.
req PUT $U/admin/config '{"local_ttl_ms":4321}' "${T1[@]}"; expect 200 '"local_ttl_ms":4321' "PUT sets the local TTL"
req GET $U/admin/config "" "${T1[@]}"
check "a PUT change is listed as set" grep -q '"cache.local_ttl_ms":{"value":4321,"source":"set"}' <<<"$BODY"
printf 'tok-file-2\n' >"$T/token"
sed -i 's/batch_max = 64/batch_max = 128/; s/invalidation_delay_ms = 500/invalidation_delay_ms = 900/' "$T/svc.ini"
kill -HUP $PID
for i in $(seq 1 50); do
  req GET $U/admin/config "" "${T2[@]}"; [ "$CODE" = 200 ] && [[ "$BODY" == *'"invalidation_delay_ms":900'* ]] && break; sleep 0.1
done
expect 200 '"invalidation_delay_ms":900' "SIGHUP applies the new delay and the new token"
check "SIGHUP keeps the PUT's local TTL (the file did not change it)" grep -q '"local_ttl_ms":4321' <<<"$BODY"
check "batch_max stays as started" grep -q '"store.batch_max":{"value":64' <<<"$BODY"
req GET $U/admin/config "" "${T1[@]}"
check "the old token is refused after the rotation" [ "$CODE" = 401 -o "$CODE" = 403 ]
check "SIGHUP logs the applied delay by name" grep -q 'msg="reload: setting applied" key=kafka.invalidation_delay_ms value="900"' "$T/a.log"
check "SIGHUP logs the new token as applied, redacted" grep -q 'msg="reload: setting applied" key=server.admin_token value="<redacted>"' "$T/a.log"
check "SIGHUP names batch_max as needing a restart" grep -q 'msg="reload: this setting applies after a restart" key=store.batch_max value="128"' "$T/a.log"
check "the log never shows a token" bash -c "! grep -q 'tok-file' \"\$1\"" _ "$T/a.log"
# A second SIGHUP with no change to the file still names the pending restart.
: >"$T/a2.mark"; n0=$(grep -c 'key=store.batch_max' "$T/a.log")
kill -HUP $PID; sleep 0.5
n1=$(grep -c 'key=store.batch_max' "$T/a.log")
check "a second SIGHUP names the pending restart again" [ "$n1" -gt "$n0" ]
check "a second SIGHUP does not re-apply the delay" [ "$(grep -c 'key=kafka.invalidation_delay_ms' "$T/a.log")" = 1 ]

# The lame duck: after SIGTERM, /readyz answers 503 draining while reads
# are still served, then the process drains and exits 0.
req PUT $U/v1/items/lame '{"stock":5}' "${T2[@]}"; expect 201 "" "setup"
t0=$(date +%s%N)
kill -TERM $PID
sleep 0.3
req GET $U/readyz; expect 503 '"draining"' "readyz says draining during the lame duck"
check "a 503 readyz carries Retry-After" [ -n "$(header Retry-After)" ]
req GET $U/v1/items/lame; expect 200 '"stock":5' "reads are served during the lame duck"
wait $PID; rc=$?
t1=$(date +%s%N)
check "exits 0 after the lame duck" [ $rc = 0 ]
ms=$(( (t1 - t0) / 1000000 ))
check "the lame duck lasted about shutdown_delay_ms ($ms ms)" [ $ms -ge 1400 ]
check "the lame duck is logged" grep -q 'msg="lame duck: /readyz answers 503, requests are still served" ms=1500' "$T/a.log"
finish
