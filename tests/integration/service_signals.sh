#!/usr/bin/env bash
# SIGHUP reloads the run-time settings from the file (a bad file keeps the
# old ones); SIGTERM with requests in flight answers every one of them,
# exits 0 within the drain deadline, and no acknowledged order is lost.
. "$(dirname "$0")/../support/service_lib.sh"
P=25050
U=http://127.0.0.1:$P
printf '[kafka]\ninvalidation_delay_ms = 500\n[store]\nurl = sqlite:%s\n' "$T/db" >"$T/svc.ini"
start_svc a $P --config="$T/svc.ini" || exit 1
PID=$LAST_PID
req GET $U/admin/config "" "${ADMIN[@]}"; expect 200 '"invalidation_delay_ms":500' "delay 500 from the file"
printf '[kafka]\ninvalidation_delay_ms = 1234\n[cache]\nlocal_ttl_ms = 777\n[log]\nlevel = debug\n[store]\nurl = sqlite:%s\n' "$T/db" >"$T/svc.ini"
kill -HUP $PID
for i in $(seq 1 50); do
  req GET $U/admin/config "" "${ADMIN[@]}"; [[ "$BODY" == *1234* ]] && break; sleep 0.1
done
expect 200 '"invalidation_delay_ms":1234' "SIGHUP changes the delay"
check "SIGHUP changes the local TTL" grep -q '"local_ttl_ms":777' <<<"$BODY"
check "SIGHUP changes the log level" grep -q '"log_level":"debug"' <<<"$BODY"
check "metrics show the new delay" grep -q '^cachesvc_inv_delay_seconds 1.234$' <(curl -s $U/metrics)
printf '[kafka]\ninvalidation_delay_ms = never\n' >"$T/svc.ini"
kill -HUP $PID; sleep 0.5
req GET $U/admin/config "" "${ADMIN[@]}"; expect 200 '"invalidation_delay_ms":1234' "a bad file on SIGHUP keeps the running settings"
check "the refused reload is logged with the key" grep -q 'kafka.invalidation_delay_ms' "$T/a.log"
check "the refused reload is counted" grep -q '^cachesvc_reloads_total{result="error"} 1' <(curl -s $U/metrics)

req PUT $U/v1/items/hot '{"stock":1000000}' "${ADMIN[@]}"; expect 201 "" "setup"
"$SERVICE_CLIENT" decr 127.0.0.1:$P hot 200000 32 drain >"$T/load.out" 2>&1 &
LOADPID=$!
sleep 1
t0=$(date +%s%N)
kill -TERM $PID
wait $PID; rc=$?
t1=$(date +%s%N)
wait $LOADPID
cat "$T/load.out"
check "SIGTERM exits 0" [ $rc = 0 ]
ms=$(( (t1 - t0) / 1000000 ))
echo "drain_ms=$ms"
# The bound is the drain deadline (10 s) plus the watchdog's 5 s for closing
# the components; on an idle machine the whole stop takes a second or two.
check "exit within the drain deadline + grace (15 s)" [ $ms -lt 15000 ]
ok200=$(sed -n 's/^status_200=//p' "$T/load.out")
start_svc b $P --store.url=sqlite:"$T/db" || exit 1
req GET "$U/admin/items/hot/audit" "" "${ADMIN[@]}"; expect 200 "" "audit after restart"
orders=$(json_num orders <<<"$BODY")
echo "acknowledged=$ok200 orders=$orders"
check "every acknowledged order is in the database and nothing unacknowledged was applied" [ "$orders" = "$ok200" ]
check "audit invariant" [ $(( $(json_num units_supplied <<<"$BODY") - $(json_num units_sold <<<"$BODY") )) = "$(json_num stock <<<"$BODY")" ]
# SIGINT drains the same way.
stop_svc $LAST_PID INT
check "SIGINT exits 0" [ "$STOP_RC" = 0 ]
check "SIGINT stops" grep -q 'msg="stopping" signal=SIGINT' "$T/b.log"
check "SIGINT drains" grep -q 'msg="draining" deadline_ms=' "$T/b.log"
finish
