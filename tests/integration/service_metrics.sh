#!/usr/bin/env bash
# The metrics of both binaries, scraped live (docs/metrics.md): cachesvc
# (SQLite, Redis Cluster, cachesvc-devbroker, kafka.delay_consumer=false)
# and the standalone invalidator doing the fleet's Redis deletes. Each
# scrape passes `promtool check metrics` with no finding; process_*,
# cachesvc_build_info, cachesvc_dependency_up, cachesvc_ready and
# cachesvc_draining are there; labelled series exist at zero before their
# first event; le labels are plain decimals; the renamed families are gone.
# Then the invalidator's own side: --version, /healthz, /readyz, logfmt
# logs, SIGHUP (a run-time key applied, a static one named), Redis down
# seen by the gauges without /readyz polls, and the drain gauges.
# Ports 25600-25649.
. "$(dirname "$0")/../support/service_lib.sh"
: "${DEVBROKER:?cachesvc-devbroker not built}"
: "${INVALIDATOR_BIN:?invalidator not built}"
command -v promtool >/dev/null || { fail "promtool missing (Debian package prometheus: scripts/setup)"; finish; }
P=25600; IP=25601; RP=25610
U=http://127.0.0.1:$P
IU=http://127.0.0.1:$IP

CLEANUPS+=("'$SRC/scripts/redis-cluster' down --dir '$T/redis'")
SEEDS=$(cluster_up "$T/redis" $RP) || { fail "redis-cluster up"; finish; }
"$DEVBROKER" >"$T/broker.out" 2>"$T/broker.log" &
BPID=$!; CLEANUPS+=("kill $BPID")
for i in $(seq 1 100); do [ -s "$T/broker.out" ] && break; sleep 0.05; done
BROKERS=$(head -1 "$T/broker.out")

# scrape URL FILE: GET /metrics into FILE; promtool must find nothing.
scrape() {
  curl -sf "$1/metrics" >"$2" || { fail "scrape $1"; return 1; }
  local lint
  lint=$(promtool check metrics <"$2" 2>&1)
  check "promtool check metrics: $1 ($(basename "$2"))" [ $? = 0 -a -z "$lint" ]
  [ -z "$lint" ] || echo "$lint" | head -20
}
# has FILE REGEX WHAT: a line of FILE matches the extended regex.
has() { check "$3" grep -Eq "$2" "$1"; }
hasnt() { check "$3" bash -c '! grep -Eq "$0" "$1"' "$2" "$1"; }
val() { sed -n "s/^$(sed 's/[][\.*^${}]/\\&/g' <<<"$2") //p" "$1" | head -1; }

start_svc svc $P --store.url="sqlite:$T/db" --redis.url="$SEEDS" --kafka.brokers="$BROKERS" \
  --kafka.delay_consumer=false --kafka.invalidation_delay_ms=200 --kafka.instance_id=m1 \
  --server.shutdown_delay_ms=3000 || { fail "cachesvc start"; finish; }
SPID=$LAST_PID

printf '[kafka]\ninvalidation_delay_ms = 200\n[log]\nlevel = info\n' >"$T/inv.ini"
"$INVALIDATOR_BIN" --stats-ms 500 -c "$T/inv.ini" --invalidator.listen=127.0.0.1:$IP \
  --redis.url="$SEEDS" --kafka.brokers="$BROKERS" --server.workers=2 >"$T/inv.log" 2>&1 &
IPID=$!; SVC_PIDS+=("$IPID")
for i in $(seq 1 200); do curl -sf "$IU/healthz" >/dev/null 2>&1 && break; sleep 0.05; done

# --version matches what the scrape says.
ver=$("$INVALIDATOR_BIN" --version); rc=$?
check "invalidator --version exits 0" [ $rc = 0 ]
check "invalidator --version: 'invalidator <version> (<commit>)' ($ver)" \
  grep -Eq '^invalidator [0-9]+\.[0-9]+\.[0-9]+ \(.+\)$' <<<"$ver"

# Before any traffic: the zero-valued series (scraped before /readyz too,
# so the gauges cannot owe anything to a readiness poll).
scrape $U "$T/svc0.prom"
scrape $IU "$T/inv0.prom"
has "$T/svc0.prom" '^http_requests_total\{route="/v1/items/\{sku\}",method="GET",code="200"\} 0$' \
  "cachesvc: GET item code=200 exists at 0"
has "$T/svc0.prom" '^http_requests_total\{route="/v1/items/\{sku\}/decrement",method="POST",code="422"\} 0$' \
  "cachesvc: decrement code=422 exists at 0"
has "$T/svc0.prom" '^http_requests_total\{route="/readyz",method="GET",code="503"\} 0$' \
  "cachesvc: readyz code=503 exists at 0"
has "$T/svc0.prom" '^http_requests_total\{route="none",method="any",code="404"\} 0$' \
  "cachesvc: unrouted 404 exists at 0"
has "$T/svc0.prom" '^http_request_duration_seconds_count\{route="/admin/cache/purge",method="POST"\} 0$' \
  "cachesvc: a route's latency histogram exists at 0"
has "$T/svc0.prom" '^cachesvc_decrements_total\{outcome="sold_out"\} 0$' "cachesvc: decrement outcomes at 0"
has "$T/inv0.prom" '^http_requests_total\{route="/v1/items/\{sku\}",method="GET",code="501"\} 0$' \
  "invalidator: an unimplemented route is declared with 501"
hasnt "$T/inv0.prom" '^http_requests_total\{route="/v1/items/\{sku\}",method="GET",code="200"\}' \
  "invalidator: no 200 series for a route it does not serve"
has "$T/inv0.prom" '^http_requests_total\{route="/metrics",method="GET",code="200"\} 0$' \
  "invalidator: /metrics code=200 exists at 0"
has "$T/inv0.prom" '^cachesvc_inv_applied_total 0$' "invalidator: cachesvc_inv_applied_total at 0"

wait_ready $U || fail "cachesvc ready"
ready=0
for i in $(seq 1 300); do
  req GET "$IU/readyz"; [ "$CODE" = 200 ] && [[ "$BODY" == *'"kafka":"up"'* ]] && { ready=1; break; }
  sleep 0.1
done
check "invalidator /readyz 200 with kafka up ($CODE $BODY)" [ $ready = 1 ]
req GET "$IU/healthz"; expect 200 "" "invalidator /healthz"
req GET "$IU/v1/items/x"; expect 501 "" "invalidator: other routes 501"

# Traffic: a write whose invalidation the standalone invalidator applies.
req PUT $U/v1/items/m1 '{"stock":5}' "${ADMIN[@]}"; expect 201 "" "create"
req GET $U/v1/items/m1; expect 200 "" "read"
req POST $U/v1/items/m1/decrement '{"user_id":"u","qty":1}'; expect 200 "" "decrement"
req GET $U/v1/items/nope; expect 404 "" "unknown item"
applied=0
for i in $(seq 1 100); do
  applied=$(curl -s "$IU/metrics" | sed -n 's/^cachesvc_inv_applied_total //p')
  [ "${applied:-0}" -ge 2 ] && break; sleep 0.1
done
check "the invalidator applied the deletes (cachesvc_inv_applied_total=$applied)" [ "${applied:-0}" -ge 2 ]

scrape $U "$T/svc1.prom"
scrape $IU "$T/inv1.prom"
now=$(date +%s)
for f in "$T/svc1.prom" "$T/inv1.prom"; do
  n=$(basename "$f" .prom)
  for m in process_cpu_seconds_total process_resident_memory_bytes process_virtual_memory_bytes \
           process_open_fds process_max_fds process_start_time_seconds; do
    has "$f" "^# TYPE $m (counter|gauge)$" "$n: $m"
  done
  st=$(val "$f" process_start_time_seconds); st=${st%.*}
  check "$n: process_start_time_seconds is within a minute of now ($st vs $now)" \
    bash -c '[ -n "$0" ] && [ $(($1 - $0)) -ge 0 ] && [ $(($1 - $0)) -lt 60 ]' "$st" "$now"
  v=$(sed -E 's/^invalidator ([^ ]+) \((.*)\)$/\1/' <<<"$ver"); c=$(sed -E 's/^invalidator ([^ ]+) \((.*)\)$/\2/' <<<"$ver")
  has "$f" "^cachesvc_build_info\{version=\"$v\",commit=\"$c\"\} 1$" "$n: cachesvc_build_info of the build"
  has "$f" '^cachesvc_dependency_up\{dependency="redis"\} 1$' "$n: dependency_up redis 1"
  has "$f" '^cachesvc_dependency_up\{dependency="kafka"\} 1$' "$n: dependency_up kafka 1"
  has "$f" '^cachesvc_ready 1$' "$n: cachesvc_ready 1"
  has "$f" '^cachesvc_draining 0$' "$n: cachesvc_draining 0"
  has "$f" '^cachesvc_inv_delay_seconds 0.2$' "$n: cachesvc_inv_delay_seconds (was _ms)"
  hasnt "$f" 'le="[^"]*e[-+]' "$n: no exponent in any le label"
  hasnt "$f" '^cachesvc_inv_delay_ms|^[a-z_]+_ms(\{| )' "$n: no metric in milliseconds"
  hasnt "$f" '^cachesvc_rt_worker_(spawns|switches|steals|stolen_tasks|parks|polls)\{' "$n: old rt_worker names gone"
  # Every counter ends in _total (promtool says so too; asserted on its own).
  bad=$(awk '$1=="#" && $2=="TYPE" && $4=="counter" && $3 !~ /_total$/ {print $3}' "$f")
  check "$n: every counter ends in _total ($bad)" [ -z "$bad" ]
done
has "$T/svc1.prom" '^cachesvc_dependency_up\{dependency="store"\} 1$' "svc: dependency_up store 1"
hasnt "$T/inv1.prom" 'dependency="store"' "invalidator: no store series (it has none)"
has "$T/svc1.prom" '^cachesvc_rt_worker_spawns_total\{worker="0"\} [0-9]+$' "svc: cachesvc_rt_worker_spawns_total"
has "$T/svc1.prom" '^http_request_duration_seconds_bucket\{route="/v1/items/\{sku\}",method="GET",le="0.00005"\} ' \
  "svc: the HTTP histogram's le in plain decimals"
has "$T/svc1.prom" '^cachesvc_read_seconds_bucket\{tier="db",le="0.00005"\} ' "svc: the service histograms' le the same way"
has "$T/svc1.prom" '^cachesvc_store_commit_seconds_bucket\{le="0.0001"\} ' "svc: the store histograms' le the same way"
has "$T/inv1.prom" '^cachesvc_invalidation_lag_seconds_bucket\{le="0.001"\} ' "invalidator: lag histogram, plain le"
has "$T/inv1.prom" '^cachesvc_redis_node_up\{node="127.0.0.1:' "invalidator: its Redis client's node gauges"

# Logs: logfmt, every line.
bad=$(grep -cv '^ts=[^ ]* level=[a-z]* msg=' "$T/inv.log")
check "invalidator logs are logfmt ($bad other lines)" [ "$bad" = 0 ]
check "invalidator logs a stats line" grep -q 'msg="stats" received=' "$T/inv.log"

# SIGHUP: a run-time key applied, a static one named, a bad file refused.
printf '[kafka]\ninvalidation_delay_ms = 700\n[redis]\ntimeout_ms = 150\n[log]\nlevel = info\n' >"$T/inv.ini"
kill -HUP $IPID
for i in $(seq 1 50); do grep -q 'msg="config reloaded"' "$T/inv.log" && break; sleep 0.1; done
check "SIGHUP applies kafka.invalidation_delay_ms" \
  grep -q 'msg="reload: setting applied" key=kafka.invalidation_delay_ms value="700"' "$T/inv.log"
check "SIGHUP names redis.timeout_ms as needing a restart" \
  grep -q 'msg="reload: this setting applies after a restart" key=redis.timeout_ms' "$T/inv.log"
scrape $IU "$T/inv2.prom"
has "$T/inv2.prom" '^cachesvc_inv_delay_seconds 0.7$' "the new delay shows in the invalidator's gauge"
has "$T/inv2.prom" '^cachesvc_reloads_total\{result="ok"\} 1$' "the reload is counted"
printf '[log]\nlevel = loud\n' >"$T/inv.ini"
kill -HUP $IPID
for i in $(seq 1 50); do grep -q 'msg="reload refused' "$T/inv.log" && break; sleep 0.1; done
check "a bad file is refused on SIGHUP" grep -q 'msg="reload refused; keeping the running settings"' "$T/inv.log"
check "the invalidator still runs" kill -0 $IPID
check "the invalidator still answers" curl -sf "$IU/healthz" -o /dev/null
curl -s "$IU/metrics" >"$T/inv3.prom"
has "$T/inv3.prom" '^cachesvc_reloads_total\{result="error"\} 1$' "the refused reload is counted"

# Redis down: both scrapes say so without anyone polling /readyz; cachesvc
# stays ready (degraded).
"$SRC/scripts/redis-cluster" down --dir "$T/redis" >/dev/null 2>&1
sok=0; iok=0
for i in $(seq 1 100); do
  curl -s $U/metrics >"$T/svc4.prom"; curl -s $IU/metrics >"$T/inv4.prom"
  grep -q '^cachesvc_dependency_up{dependency="redis"} 0$' "$T/svc4.prom" && sok=1
  grep -q '^cachesvc_dependency_up{dependency="redis"} 0$' "$T/inv4.prom" && iok=1
  [ $sok = 1 ] && [ $iok = 1 ] && break
  sleep 0.2
done
check "cachesvc: dependency_up redis 0 after Redis stopped" [ $sok = 1 ]
check "invalidator: dependency_up redis 0 after Redis stopped" [ $iok = 1 ]
has "$T/svc4.prom" '^cachesvc_ready 1$' "cachesvc still ready without Redis (degraded)"
has "$T/svc4.prom" '^cachesvc_dependency_up\{dependency="store"\} 1$' "the store still up"

# The drain: during cachesvc's lame duck the gauges say draining, not
# ready, and the store is not called down.
kill -TERM $SPID
sleep 0.5
curl -s $U/metrics >"$T/svc5.prom"
has "$T/svc5.prom" '^cachesvc_draining 1$' "cachesvc_draining 1 after SIGTERM"
has "$T/svc5.prom" '^cachesvc_ready 0$' "cachesvc_ready 0 while draining"
has "$T/svc5.prom" '^cachesvc_dependency_up\{dependency="store"\} 1$' "draining does not mark the store down"
req GET $U/readyz; expect 503 "" "cachesvc /readyz 503 while draining"
stop_svc $SPID
check "cachesvc exits 0" [ "$STOP_RC" = 0 ]
stop_svc $IPID
check "invalidator exits 0 on SIGTERM" [ "$STOP_RC" = 0 ]
check "invalidator logs its stop" grep -q 'msg="stopped" code=0' "$T/inv.log"
finish
