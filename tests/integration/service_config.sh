#!/usr/bin/env bash
# Start-up configuration errors: --help, a bad key, a bad value (flag,
# environment, file), a missing database. Each must be refused at start
# with the key (or the dependency) named.
. "$(dirname "$0")/../support/service_lib.sh"
P=25040

out=$("$CACHESVC_BIN" --help); rc=$?
check "--help exits 0" [ $rc = 0 ]
check "--help lists keys, env names and defaults" grep -q 'CACHESVC_KAFKA_INVALIDATION_DELAY_MS, default "500"' <<<"$out"
for k in server.listen store.url store.sold_out_max_orders redis.url kafka.brokers cache.local_ttl_ms log.level; do
  check "--help lists $k" grep -q -- "--$k=" <<<"$out"
done

expect_refused() {   # expect_refused WHAT WANT_CODE NEEDLE cmd...
  local what=$1 want=$2 needle=$3; shift 3
  local o rc
  o=$("$@" 2>&1); rc=$?
  if [ "$rc" = "$want" ] && grep -q -- "$needle" <<<"$o"; then ok "$what"; else fail "$what: rc=$rc out=$o"; fi
}
expect_refused "unknown flag named" 2 "nosuch.key" "$CACHESVC_BIN" --nosuch.key=1
expect_refused "bad value named" 2 "store.batch_max" "$CACHESVC_BIN" --store.batch_max=0
expect_refused "bad listen named" 2 "server.listen" "$CACHESVC_BIN" --server.listen=localhost
expect_refused "bad env value named" 2 "CACHESVC_CACHE_LOCAL_TTL_MS" env CACHESVC_CACHE_LOCAL_TTL_MS=abc "$CACHESVC_BIN"
expect_refused "bad store.sold_out_max_orders flag named" 2 "store.sold_out_max_orders" \
  "$CACHESVC_BIN" --store.sold_out_max_orders=-1
expect_refused "bad store.sold_out_max_orders env named" 2 "CACHESVC_STORE_SOLD_OUT_MAX_ORDERS" \
  env CACHESVC_STORE_SOLD_OUT_MAX_ORDERS=lots "$CACHESVC_BIN"
printf '[store]\nsold_out_max_orders = 10000001\n' >"$T/bad3.ini"
expect_refused "bad store.sold_out_max_orders in file named" 2 "store.sold_out_max_orders" \
  "$CACHESVC_BIN" -c "$T/bad3.ini"
printf '[redis]\nurl = none\nbogus = 3\n' >"$T/bad.ini"
expect_refused "unknown key in file named" 2 "redis.bogus" "$CACHESVC_BIN" --config="$T/bad.ini"
printf '[kafka]\ninvalidation_delay_ms = soon\n' >"$T/bad2.ini"
expect_refused "bad value in file named" 2 "kafka.invalidation_delay_ms" "$CACHESVC_BIN" -c "$T/bad2.ini"
expect_refused "missing config file" 2 "cannot open" "$CACHESVC_BIN" --config="$T/none.ini"
expect_refused "missing sqlite database directory" 1 "store open failed" timeout 30 \
  "$CACHESVC_BIN" --server.listen=127.0.0.1:$P --store.url=sqlite:"$T/no/such/dir/x.db"
expect_refused "unreachable PostgreSQL" 1 "store open failed" timeout 60 \
  "$CACHESVC_BIN" --server.listen=127.0.0.1:$P --store.url=postgresql://cachesvc@127.0.0.1:$((P + 1))/cachesvc \
  --store.timeout_ms=2000
# A port already in use.
start_svc a $P --store.url=sqlite:"$T/db" || exit 1
expect_refused "listen address in use" 1 "cannot listen" timeout 30 \
  "$CACHESVC_BIN" --server.listen=127.0.0.1:$P --store.url=sqlite:"$T/db2"
finish
