#!/usr/bin/env bash
# Two instances sharing PostgreSQL, a Redis Cluster and one dev broker:
# a decrement on A is visible on A at once and on B within broadcast
# latency (measured), Redis holds no older version after delay + margin,
# and the audit is exact after 20,000 concurrent decrements across both.
. "$(dirname "$0")/../support/service_lib.sh"
: "${DEVBROKER:?cachesvc-devbroker not built}"
PA=25200; PB=25201; RP=25210; PGP=25220
A=http://127.0.0.1:$PA; B=http://127.0.0.1:$PB
DELAY=200

PG=$("$SRC/scripts/postgres" up --dir "$T/pg" --port $PGP | tail -1) || { fail "postgres up"; finish; }
CLEANUPS+=("'$SRC/scripts/postgres' down --dir '$T/pg'")
CLEANUPS+=("'$SRC/scripts/redis-cluster' down --dir '$T/redis'")
SEEDS=$(cluster_up "$T/redis" $RP) || { fail "redis-cluster up"; finish; }
"$DEVBROKER" >"$T/broker.out" 2>"$T/broker.log" &
BPID=$!; CLEANUPS+=("kill $BPID")
for i in $(seq 1 100); do [ -s "$T/broker.out" ] && break; sleep 0.05; done
BROKERS=$(head -1 "$T/broker.out")

common=(--store.url="$PG" --redis.url="$SEEDS" --kafka.brokers="$BROKERS"
        --kafka.invalidation_delay_ms=$DELAY --cache.local_ttl_ms=60000 ${TWO_EXTRA:-})
start_svc a $PA "${common[@]}" --kafka.instance_id=a || exit 1
start_svc b $PB "${common[@]}" --kafka.instance_id=b || exit 1
for u in $A $B; do
  wait_ready $u
  expect 200 "" "ready: $u"
done

req PUT $A/v1/items/hot '{"stock":15000}' "${ADMIN[@]}"; expect 201 "" "create on A"
sleep 0.5
req GET $B/v1/items/hot; expect 200 '"stock":15000' "B reads it"
req GET $B/v1/items/hot; check "B serves it locally" [ "$(header X-Cache)" = local ]

# Negative caching across the fleet: B's database miss leaves an absent
# entry in Redis, which A then answers from; creating the item on A
# replaces it on A at once, in Redis at once, and on B by the broadcast.
metric() { curl -s "$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
req GET $B/v1/items/newbie; expect 404 '"not_found"' "unknown sku on B: 404"
r=$(redis-cli -c -h 127.0.0.1 -p $RP GET 'stock:{newbie}' 2>/dev/null)
check "Redis remembers it as absent at version 0 (got '$r')" [ "$r" = "0|-" ]
req GET $A/v1/items/newbie; expect 404 '"not_found"' "unknown sku on A: 404"
check "A's 404 came from Redis" [ "$(metric $A 'cachesvc_reads_not_found_total{tier="redis"}')" = 1 ]
for i in 1 2 3; do req GET $A/v1/items/newbie; req GET $B/v1/items/newbie; done
la=$(metric $A 'cachesvc_reads_not_found_total{tier="local"}')
lb=$(metric $B 'cachesvc_reads_not_found_total{tier="local"}')
check "then from the local caches (A $la, B $lb)" [ "$la" = 3 -a "$lb" = 3 ]
check "the database was asked once in all" \
  [ "$(( $(metric $A 'cachesvc_reads_not_found_total{tier="db"}') + $(metric $B 'cachesvc_reads_not_found_total{tier="db"}') ))" = 1 ]
req PUT $A/v1/items/newbie '{"stock":7}' "${ADMIN[@]}"; expect 201 "" "create newbie on A"
req GET $A/v1/items/newbie; expect 200 '"stock":7' "A serves the new item at once"
r=$(redis-cli -c -h 127.0.0.1 -p $RP GET 'stock:{newbie}' 2>/dev/null)
check "Redis holds the new item at once (got '$r')" [ "${r%%|*}" = 1 -a "$r" != "1|-" ]
w=$("$SERVICE_CLIENT" wait 127.0.0.1:$PB newbie 1 5000) && ok "B serves the new item within broadcast latency ($w)" \
  || fail "B still answers 404 for the new item after 5 s"

db_b0=$(metric $B 'cachesvc_reads_total{tier="db"}')
inst_b0=$(metric $B 'cachesvc_local_installs_total')
lat=()
for round in 1 2 3 4 5; do
  req POST $A/v1/items/hot/decrement "{\"user_id\":\"r$round\",\"qty\":1}"; expect 200 "" "decrement $round on A"
  v=$(json_num version <<<"$BODY")
  req GET $A/v1/items/hot; expect 200 "\"version\":$v" "A sees version $v at once"
  w=$("$SERVICE_CLIENT" wait 127.0.0.1:$PB hot "$v" 5000) || fail "B did not see version $v within 5 s"
  lat+=("${w#waited_us=}")
done
sorted=$(printf '%s\n' "${lat[@]}" | sort -n | tr '\n' ' ')
echo "broadcast_latency_us (A commit answered -> B serves it): $sorted"
med=$(printf '%s\n' "${lat[@]}" | sort -n | sed -n 3p)
echo "broadcast_latency_ms_median=$((med / 1000))"

# The update protocol (kafka.broadcast_mode = update, the default): each
# event carries the committed row, so B installs every version in memory
# instead of going back to the database for it, and the writer's Redis
# refresh at version v survives the delayed delete of v.
req GET $B/v1/items/hot; expect 200 "\"version\":$v" "B serves the last version"
check "B serves it from memory (X-Cache $(header X-Cache))" [ "$(header X-Cache)" = local ]
db_b1=$(metric $B 'cachesvc_reads_total{tier="db"}')
inst_b1=$(metric $B 'cachesvc_local_installs_total')
check "B read none of the five versions from the database (db reads $db_b0 -> $db_b1)" [ "$db_b1" = "$db_b0" ]
check "B installed them from the events (installs $inst_b0 -> $inst_b1)" [ "$((inst_b1 - inst_b0))" -ge 5 ]

sleep $(( (DELAY + 800) / 1000 )).$(( (DELAY + 800) % 1000 ))
r=$(redis-cli -c -h 127.0.0.1 -p $RP GET 'stock:{hot}' 2>/dev/null); rv=${r%%|*}
check "Redis holds no older version after delay + margin (got '$r', want >= $v)" [ -z "$r" -o "${rv:-0}" -ge "$v" ]
check "Redis holds the writer's copy of version $v, spared by its delayed delete (got '$r')" \
  [ "$rv" = "$v" -a "${r#*|}" != "~" ]

# A rolling upgrade: an instance of the old protocol (E, broadcast_mode
# evict) joins and writes. Which relay publishes E's commit is the
# outbox's choice (E's sends no row, A's and B's do), so B either evicts
# or installs on it; either way B serves E's version, and installs again
# on A's next write. (That an event without a row evicts is checked
# deterministically in invalidator_integration, test_update_events.)
PE=$((PA + 7)); E=http://127.0.0.1:$PE
start_svc e $PE "${common[@]}" --kafka.instance_id=e --kafka.broadcast_mode=evict || exit 1
EPID=$LAST_PID
wait_ready $E
req POST $E/v1/items/hot/decrement '{"user_id":"old1","qty":1}'; expect 200 "" "a decrement on the old-protocol instance"
ve=$(json_num version <<<"$BODY")
w=$("$SERVICE_CLIENT" wait 127.0.0.1:$PB hot "$ve" 5000) && ok "B sees version $ve of the old-protocol write ($w)" \
  || fail "B did not see version $ve within 5 s"
req GET $B/v1/items/hot; expect 200 "\"version\":$ve" "B serves the old-protocol write's version"
req POST $A/v1/items/hot/decrement '{"user_id":"new1","qty":1}'; expect 200 "" "then a decrement on A"
va=$(json_num version <<<"$BODY")
"$SERVICE_CLIENT" wait 127.0.0.1:$PB hot "$va" 5000 >/dev/null || fail "B did not see version $va within 5 s"
inst_b2=$(metric $B 'cachesvc_local_installs_total')
check "B installed A's row again (installs $inst_b1 -> $inst_b2)" [ "$inst_b2" -gt "$inst_b1" ]
# E's share of the fleet's publications and commits, for the count below.
em=$(curl -s $E/metrics)
e_pub=$(awk '$1 == "cachesvc_inv_published_total" {print $2}' <<<"$em")
e_com=$(awk '$1 == "cachesvc_store_commits_total" {print $2}' <<<"$em")
stop_svc "$EPID" TERM
v=$va

"$SERVICE_CLIENT" decr 127.0.0.1:$PA,127.0.0.1:$PB hot 20000 64 flash >"$T/load.out" 2>&1
cat "$T/load.out"
n200=$(sed -n 's/^status_200=//p' "$T/load.out"); n409=$(sed -n 's/^status_409=//p' "$T/load.out")
check "14993 units sold in the flash sale" [ "${n200:-0}" = 14993 ]
check "the rest refused sold out" [ "${n409:-0}" = 5007 ]
req GET "$A/admin/items/hot/audit" "" "${ADMIN[@]}"
echo "$BODY"
check "audit: stock 0" [ "$(json_num stock <<<"$BODY")" = 0 ]
check "audit: units_sold 15000" [ "$(json_num units_sold <<<"$BODY")" = 15000 ]
check "audit: orders 15000" [ "$(json_num orders <<<"$BODY")" = 15000 ]
check "audit: no duplicate keys" [ "$(json_num duplicate_idempotency_keys <<<"$BODY")" = 0 ]
check "audit: max user qty 1" [ "$(json_num max_user_qty <<<"$BODY")" = 1 ]
sleep 0.5
for u in $A $B; do req GET $u/v1/items/hot; expect 200 '"stock":0' "sold out seen on $u"; done

# A delete leaves a tombstone: a fill older than it is refused.
r=$(redis-cli -c -h 127.0.0.1 -p $RP GET 'stock:{hot}' 2>/dev/null)
hv=$(json_num version <<<"$(curl -s -H 'Authorization: Bearer secret' $A/admin/items/hot/audit)")
check "after the delay Redis holds the audited version or its tombstone (got '$r', audit $hv)" \
  [ "${r%%|*}" = "$hv" ]

# A Redis copy older than the database (a lost delete, set here by hand),
# and a fresh instance C that knows no floor: C serves the old copy until
# one decrement is refused at the newer version; from then on C answers
# the database's version, and so does Redis.
# The hand-set copy must come after the delayed delete of the decrement's
# event (which would remove it): wait until the delay consumers have read
# both events and hold none.
recv() { echo $(( $(metric $A cachesvc_inv_received_total) + $(metric $B cachesvc_inv_received_total) )); }
r0=$(recv)
req PUT $A/v1/items/stale '{"stock":1}' "${ADMIN[@]}"
req POST $A/v1/items/stale/decrement '{"user_id":"s1","qty":1}'; expect 200 '"stock":0' "stale: sold out on A"
sv=$(json_num version <<<"$BODY")
sleep $(( DELAY / 1000 )).$(( DELAY % 1000 ))
for i in $(seq 1 300); do
  [ "$(recv)" -ge $((r0 + 2)) ] && [ "$(metric $A cachesvc_inv_pending)" = 0 ] &&
    [ "$(metric $B cachesvc_inv_pending)" = 0 ] && break
  sleep 0.1
done
redis-cli -c -h 127.0.0.1 -p $RP SET 'stock:{stale}' "$((sv - 1))|1|0|0" PX 3600000 >/dev/null
PC=$((PA + 2)); C=http://127.0.0.1:$PC
start_svc c $PC "${common[@]}" --kafka.instance_id=c || exit 1
CPID=$LAST_PID
wait_ready $C
req GET $C/v1/items/stale; expect 200 "\"version\":$((sv - 1))" "C serves the old Redis copy (no floor yet)"
req POST $C/v1/items/stale/decrement '{"user_id":"s2","qty":1}'; expect 409 '"sold_out"' "C's decrement refused by the database"
req GET $C/v1/items/stale; expect 200 "\"version\":$sv" "C serves the database's version right after the refusal"
r=$(redis-cli -c -h 127.0.0.1 -p $RP GET 'stock:{stale}' 2>/dev/null)
check "Redis holds the database's version again (got '$r')" [ "${r%%|*}" = "$sv" ]

# An instance cut off from the broadcasts (D, with a broker of its own):
# the item sells out, D's sold-out set is loaded by a keyed request; A
# restocks and key K buys on A; K retried on D is answered as the replay of
# K's order (not sold_out), and D drops its stale copy on the way.
"$DEVBROKER" >"$T/broker2.out" 2>"$T/broker2.log" &
B2PID=$!; CLEANUPS+=("kill $B2PID")
for i in $(seq 1 100); do [ -s "$T/broker2.out" ] && break; sleep 0.05; done
PD=$((PA + 3)); D=http://127.0.0.1:$PD
start_svc d $PD --store.url="$PG" --redis.url="$SEEDS" --kafka.brokers="$(head -1 "$T/broker2.out")" \
  --kafka.invalidation_delay_ms=$DELAY --cache.local_ttl_ms=60000 --kafka.instance_id=d \
  --monitor.sample_every=1 || exit 1
DPID=$LAST_PID
wait_ready $D
# The consistency monitor (D checks every read): cut off from the
# broadcasts, D keeps serving its local copy after A's next commit; a read
# of it more than the window (delay + 250 ms) after that commit is counted
# as a violation once its check is due (delay + 1 s later).
req PUT $A/v1/items/mon '{"stock":10}' "${ADMIN[@]}"; expect 201 "" "monitor: create on A"
req GET $D/v1/items/mon; req GET $D/v1/items/mon; check "monitor: D holds mon locally" [ "$(header X-Cache)" = local ]
req POST $A/v1/items/mon/decrement '{"user_id":"m1","qty":1}'; expect 200 '"stock":9' "monitor: a buy on A"
sleep 0.7
req GET $D/v1/items/mon; expect 200 '"stock":10' "monitor: D serves its stale copy"
mviol() { curl -s $D/metrics | awk '$1 == "cachesvc_consistency_violations_total{tier=\"local\"}" {print $2}'; }
for i in $(seq 1 60); do [ "$(mviol)" -ge 1 ] 2>/dev/null && break; sleep 0.1; done
check "monitor: the stale read is counted as a violation (got '$(mviol)')" [ "$(mviol)" = 1 ]
mchk=$(curl -s $D/metrics | awk '$1 == "cachesvc_consistency_checks_total{tier=\"local\"}" {print $2}')
check "monitor: the fresh reads were checked too ($mchk local checks)" [ "${mchk:-0}" -ge 2 ]
check "monitor: the violation is logged" grep -q 'msg="stale read served" sku=mon tier=local' "$T/d.log"
req PUT $A/v1/items/cutoff '{"stock":1}' "${ADMIN[@]}"
req POST $A/v1/items/cutoff/decrement '{"user_id":"c1","qty":1}'; expect 200 '"stock":0' "cutoff: sold out on A"
cv=$(json_num version <<<"$BODY")
# D reads it once Redis's older copy is deleted (every relay publishes
# every outbox row, D's to its own broker, so that can wait for D's
# consumer group).
for i in $(seq 1 200); do
  r=$(redis-cli -c -h 127.0.0.1 -p $RP GET 'stock:{cutoff}' 2>/dev/null)
  [ "${r%%|*}" = "$cv" ] && break; sleep 0.1
done
req GET $D/v1/items/cutoff; expect 200 '"stock":0' "D sees it sold out (Redis held '$r')"
req POST $D/v1/items/cutoff/decrement '{"user_id":"c2","qty":1}' -H 'Idempotency-Key: cut-k0'
expect 409 '"sold_out"' "a keyed request on D loads D's sold-out set"
req PUT $A/v1/items/cutoff '{"stock":5}' "${ADMIN[@]}"; expect 200 "" "restock on A (D hears nothing)"
req POST $A/v1/items/cutoff/decrement '{"user_id":"c3","qty":1}' -H 'Idempotency-Key: cut-K'
expect 200 '"replayed":false' "K buys on A"
kid=$(json_num order_id <<<"$BODY"); kv=$(json_num version <<<"$BODY")
req POST $D/v1/items/cutoff/decrement '{"user_id":"c3","qty":1}' -H 'Idempotency-Key: cut-K'
expect 200 "\"order_id\":$kid," "K retried on D: the replay of K's order"
check "and marked as a replay" grep -q '"replayed":true' <<<"$BODY"
req GET $D/v1/items/cutoff; expect 200 "\"version\":$kv" "D dropped its stale copy: the database's version"
req POST $D/v1/items/cutoff/decrement '{"user_id":"c4","qty":1}'; expect 200 '"stock":3' "a keyless buyer on D buys"
# D leaves now: its relay claims outbox rows like any other and publishes
# them to its own broker, where the fleet's broadcast consumers never read
# them (the local TTL, a minute here, would be all that moved A and B off
# those items). Its publications and commits count in the check below.
# outbox_drained: waits up to 15 s for the outbox to empty; OUTBOX_ROWS
# holds the last count.
outbox_drained() {
  local i
  for i in $(seq 1 150); do
    OUTBOX_ROWS=$(psql "$PG" -Atc 'SELECT count(*) FROM outbox' 2>/dev/null)
    [ "$OUTBOX_ROWS" = 0 ] && return 0; sleep 0.1
  done
  return 1
}
outbox_drained   # D's relay idle: nothing left in the outbox to publish
dm=$(curl -s $D/metrics)
d_pub=$(awk '$1 == "cachesvc_inv_published_total" {print $2}' <<<"$dm")
d_com=$(awk '$1 == "cachesvc_store_commits_total" {print $2}' <<<"$dm")
stop_svc "$DPID" TERM

# Restart convergence: the fresh instance serves every item at its audited
# version.
for item in hot newbie stale; do
  av=$(json_num version <<<"$(curl -s -H 'Authorization: Bearer secret' $A/admin/items/$item/audit)")
  req GET $C/v1/items/$item; expect 200 "\"version\":$av" "C serves $item at its audited version $av"
done

# Many items written concurrently from both instances, five rounds: after
# the delay plus a margin every item reads its audited version on both and
# the outbox is empty (no row skipped, whatever order the commits became
# visible in).
for i in $(seq 0 47); do req PUT $A/v1/items/many$i '{"stock":100000}' "${ADMIN[@]}"; done
for round in 1 2 3 4 5; do
  pids=()
  for i in $(seq 0 47); do
    "$SERVICE_CLIENT" decr 127.0.0.1:$PA,127.0.0.1:$PB many$i 10 2 "r$round-i$i-" >/dev/null 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
done
# Every instance must converge through the broadcasts, well before the
# local TTL (a minute) could hide a lost event: polled for up to 20 s, how
# long it took is printed (the broadcast's latency, longer on a loaded
# machine or under a sanitizer).
sleep $(( (DELAY + 1500) / 1000 )).$(( (DELAY + 1500) % 1000 ))
t0=$(date +%s%N)
for attempt in $(seq 1 40); do
  [ $(( ($(date +%s%N) - t0) / 1000000 )) -gt 20000 ] && break
  bad=0; late=""
  for i in $(seq 0 47); do
    av=$(json_num version <<<"$(curl -s -H 'Authorization: Bearer secret' $A/admin/items/many$i/audit)")
    for u in $A $B; do
      req GET $u/v1/items/many$i
      [ "$(json_num version <<<"$BODY")" = "$av" ] || { bad=$((bad + 1)); late+="many$i on $u: $BODY X-Cache $(header X-Cache) (audit version $av)"$'\n'; }
    done
  done
  [ "$bad" = 0 ] && break
  echo "attempt $attempt: $bad reads behind the audit"; printf '%s' "$late" | head -3
  if [ "$attempt" = 2 ]; then   # what the fleet knows of the late items
    psql "$PG" -Atc "SELECT id, sku, version, claimed_by, claimed_until_ms FROM outbox ORDER BY id LIMIT 10"
    for u in $A $B; do curl -s $u/metrics | grep -E '^cachesvc_inv_(installed|evicted|bcast_gaps|decode_errors|published|relay_inflight)_?'; done
  fi
  sleep 0.5
done
echo "converged $(( ($(date +%s%N) - t0) / 1000000 )) ms after delay + 1.5 s"
check "48 items after five concurrent rounds: every read on both instances is the audited version" [ "$bad" = 0 ]

# One publication per outbox row across the fleet: every relay claims the
# rows it publishes, so the events published by all five instances (E's
# and D's counted before their stops) add up to the batches they committed, and the
# outbox ends empty.
outbox_drained
check "the outbox is empty (${OUTBOX_ROWS:-?} rows)" [ "$OUTBOX_ROWS" = 0 ]
pub=$(( ${e_pub:-0} + ${d_pub:-0} )); com=$(( ${e_com:-0} + ${d_com:-0} ))
for u in $A $B $C; do
  m=$(curl -s $u/metrics)
  pub=$((pub + $(awk '$1 == "cachesvc_inv_published_total" {print $2}' <<<"$m")))
  com=$((com + $(awk '$1 == "cachesvc_store_commits_total" {print $2}' <<<"$m")))
done
check "each outbox row published once by the fleet ($pub events for $com commits)" [ "$pub" = "$com" ]
# The broker gone for longer than a consumer group's session (10 s) while
# A commits: B keeps its broadcast position (no group to rejoin) and reads
# the backlog when the broker returns, although its local copy would last
# a minute.
req PUT $A/v1/items/gap '{"stock":10}' "${ADMIN[@]}"
sleep 0.5
req GET $B/v1/items/gap; req GET $B/v1/items/gap; check "B holds gap locally" [ "$(header X-Cache)" = local ]
kill -STOP $BPID
req POST $A/v1/items/gap/decrement '{"user_id":"g1","qty":1}'; expect 200 '"stock":9' "A commits while the broker is stopped"
gv=$(json_num version <<<"$BODY")
sleep 12
kill -CONT $BPID
w=$("$SERVICE_CLIENT" wait 127.0.0.1:$PB gap "$gv" 10000) && ok "B serves the version committed during the outage after the broker returned ($w)" \
  || fail "B did not see version $gv within 10 s of the broker's return"

# An instance killed with -9 and started again is ready without waiting
# for a consumer group (its broadcast consumer assigns itself).
kill -KILL "$CPID"; wait "$CPID" 2>/dev/null
t0=$(date +%s%N)
start_svc c2 $PC "${common[@]}" --kafka.instance_id=c || exit 1
wait_ready $C 300
t1=$(date +%s%N)
expect 200 "" "C ready again after kill -9"
echo "restart_ready_ms=$(( (t1 - t0) / 1000000 ))"

# A database restored from a backup reuses version numbers: the fleet-wide
# purge drops every cached copy (Redis, A's, every other instance's through
# the broadcast) and every floor, so the restored rows are served at once.
req PUT $A/v1/items/restored '{"stock":50}' "${ADMIN[@]}"; expect 201 "" "restore: create"
for i in 1 2 3; do req POST $A/v1/items/restored/decrement "{\"user_id\":\"r$i\",\"qty\":1}"; done
expect 200 '"stock":47' "restore: three buys"
rv=$(json_num version <<<"$BODY")
"$SERVICE_CLIENT" wait 127.0.0.1:$PB restored "$rv" 5000 >/dev/null || fail "B did not see version $rv"
req GET $B/v1/items/restored; req GET $B/v1/items/restored
check "restore: B holds version $rv locally" [ "$(header X-Cache)" = local ]
psql "$PG" -qAtc "UPDATE items SET stock = 50, version = 1 WHERE sku = 'restored'" >/dev/null
req GET $B/v1/items/restored; expect 200 "\"version\":$rv" "restore: before the purge B still serves the pre-restore copy"
req POST $A/admin/cache/purge ""; expect 401 "" "purge needs the admin token"
req POST $A/admin/cache/purge "" "${ADMIN[@]}"; expect 200 '"broadcast":"published"' "purge answered"
check "purge: Redis was purged" grep -q '"redis":"purged"' <<<"$BODY"
for i in $(seq 1 50); do
  req GET $B/v1/items/restored; [[ "$BODY" == *'"version":1,'* ]] && break; sleep 0.1
done
expect 200 '"stock":50' "restore: B serves the restored row after the purge"
check "restore: at the restored version" grep -q '"version":1,' <<<"$BODY"
req GET $A/v1/items/restored; expect 200 '"version":1,' "restore: A serves the restored row"
r=$(redis-cli -c -h 127.0.0.1 -p $RP GET 'stock:{restored}' 2>/dev/null)
check "restore: Redis holds no pre-restore copy (got '$r')" [ "${r%%|*}" -le 1 ] 2>/dev/null
# B applies the purge event when its broadcast consumer gets it (it may
# already serve the restored row through a local miss before then).
for i in $(seq 1 50); do
  curl -s $B/metrics | grep -q '^cachesvc_local_purges_total 1' && break; sleep 0.1
done
check "B counted the purge" grep -q '^cachesvc_local_purges_total 1' <(curl -s $B/metrics)
# Floors are gone too: the restored item's next versions are installed.
req POST $A/v1/items/restored/decrement '{"user_id":"r9","qty":1}'; expect 200 '"version":2' "restore: a buy after the purge"
"$SERVICE_CLIENT" wait 127.0.0.1:$PB restored 2 5000 >/dev/null && ok "B serves version 2 after the purge" \
  || fail "B did not serve version 2"
req GET $B/v1/items/restored; req GET $B/v1/items/restored
check "B caches the post-purge version locally" [ "$(header X-Cache)" = local ]

finish
