#!/usr/bin/env bash
# flashsale against http-memserver (the API of docs/api.md over the
# in-memory service, tests/support/memservice.c), "the fake":
#   - a clean sale passes verification; JSON summary and plot are written;
#   - an audit answer spread over several reads is assembled and verifies;
#   - each deliberately wrong audit makes it fail (exit 1);
#   - unknown outcomes are retried with the same idempotency key and pass;
#   - a sale that opens later answers 425 first, then sells;
#   - an open-loop sweep of the invalidation delay counts stale reads where
#     the fake serves stale data, and none where it does not;
#   - in the open loop a stall of the server is charged to every request
#     that was due during it (latency from the intended send time);
#   - a --nemesis schedule: its faults run at their times, with their exit
#     status and windows, and reads inside the windows are counted apart;
#   - bad usage and an unreachable target exit 2.
# Usage: flashsale_fake.sh FLASHSALE HTTP_MEMSERVER   (ports 26100-26149)
set -uo pipefail
FS=$1
FAKE=$2
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

# start_fake PORT [fake options...]: starts a fake whose reads are as
# stale as its invalidation delay (0 until the tester sets one) and waits
# until it listens.
start_fake() {
  local port=$1; shift
  "$FAKE" --port "$port" --workers 2 --admin-token tok --stale-ms 0 "$@" \
    >"$dir/fake-$port.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    grep -q "listening on" "$dir/fake-$port.log" 2>/dev/null && return 0
    sleep 0.05
  done
  fail "fake on $port did not start: $(cat "$dir/fake-$port.log")"
}

kv() { sed -n "s/^$1=//p" "$2" | tail -1; }

# 1. A clean sale, two targets that are the same fake, JSON and plot.
start_fake 26101
"$FS" --targets http://127.0.0.1:26101,http://localhost:26101 --admin-token tok \
  --skus 2 --stock 200 --users 500 --requests 3000 --connections 16 --workers 2 \
  --quiet --kv --json "$dir/s.json" --plot "$dir/s.png" >"$dir/clean.out" 2>&1
rc=$?
cat "$dir/clean.out"
[ $rc -eq 0 ] || fail "clean sale exited $rc"
[ "$(kv verify "$dir/clean.out")" = pass ] || fail "clean sale: verify != pass"
[ "$(kv oversold "$dir/clean.out")" = 0 ] || fail "clean sale: oversold"
[ "$(kv lost "$dir/clean.out")" = 0 ] || fail "clean sale: lost"
[ "$(kv requests "$dir/clean.out")" = 3000 ] || fail "clean sale: not 3000 requests"
sold=$(kv sold "$dir/clean.out")
[ "$sold" -gt 0 ] && [ "$sold" -le 400 ] || fail "clean sale: sold $sold"
grep -Eq '"passed":[[:space:]]*true' "$dir/s.json" || fail "JSON summary lacks passed: true"
command -v gnuplot >/dev/null || fail "gnuplot is not installed (scripts/setup)"
[ -s "$dir/s.png" ] || fail "no plot written"
grep -q "http://localhost:26101\|http://127.0.0.1:26101" "$dir/clean.out" || fail "no per-target rows"

# 1b. An audit answer larger than several reads (20,000 order ids):
# the body is assembled from several reads and verifies.
start_fake 26102
"$FS" --targets http://127.0.0.1:26102 --admin-token tok --stock 20000 --per-user-limit 0 \
  --users 500 --read-ratio 0 --requests 21000 --connections 8 --workers 2 \
  --quiet --kv >"$dir/big.out" 2>&1
rc=$?
[ $rc -eq 0 ] || { cat "$dir/big.out"; fail "sale with a large audit exited $rc"; }
[ "$(kv sold "$dir/big.out")" = 20000 ] || fail "large audit: sold $(kv sold "$dir/big.out"), want 20000"

# 2. Each wrong audit fails verification with exit status 1.
port=26110
for mode in oversell lost dup limit ledger; do
  start_fake $port --wrong-audit $mode
  "$FS" --targets http://127.0.0.1:$port --admin-token tok --stock 50 --users 200 \
    --requests 400 --connections 4 --workers 2 --quiet --kv >"$dir/wrong-$mode.out" 2>&1
  rc=$?
  [ $rc -eq 1 ] || { cat "$dir/wrong-$mode.out"; fail "wrong audit '$mode': exit $rc, want 1"; }
  [ "$(kv verify "$dir/wrong-$mode.out")" = fail ] || fail "wrong audit '$mode': verify != fail"
  echo "wrong audit '$mode': detected"
  port=$((port + 1))
done

# 3. Unknown outcomes are retried with the same key and then pass.
start_fake 26120 --unknown-every 7
"$FS" --targets http://127.0.0.1:26120 --admin-token tok --stock 300 --users 1000 \
  --requests 2000 --connections 8 --workers 2 --read-ratio 0.2 --quiet --kv \
  --json "$dir/u.json" >"$dir/unknown.out" 2>&1
rc=$?
[ $rc -eq 0 ] || { cat "$dir/unknown.out"; fail "unknown outcomes: exit $rc"; }
grep -Eq '"retries":[[:space:]]*[1-9]' "$dir/u.json" || fail "unknown outcomes: no retries"
grep -q '"200 replayed"' "$dir/u.json" || fail "unknown outcomes: no replayed answers"
# Without keys nothing is retried: the applied-but-unknown buys stay in doubt
# and explain the units sold that nobody acknowledged.
"$FS" --targets http://127.0.0.1:26120 --admin-token tok --stock 300 --users 1000 \
  --requests 1000 --connections 8 --workers 2 --read-ratio 0.2 --no-idempotency-keys \
  --quiet --kv --json "$dir/nk.json" >"$dir/nokeys.out" 2>&1
rc=$?
[ $rc -eq 0 ] || { cat "$dir/nokeys.out"; fail "no keys: exit $rc"; }
grep -Eq '"retries":[[:space:]]*0' "$dir/nk.json" || fail "no keys: a buy was retried"
grep -Eq '"503 outcome_unknown":[[:space:]]*[1-9]' "$dir/nk.json" || fail "no keys: no unknown outcomes"

# 3b. A sale that opens 400 ms after seeding: early buys get 425, later ones sell.
start_fake 26125
"$FS" --targets http://127.0.0.1:26125 --admin-token tok --stock 1000 --users 1000 \
  --sale-start 400 --rate 400 --duration 1 --read-ratio 0 --connections 4 --workers 2 \
  --quiet --json "$dir/start.json" >"$dir/start.out" 2>&1
rc=$?
[ $rc -eq 0 ] || { cat "$dir/start.out"; fail "sale start: exit $rc"; }
grep -Eq '"425 sale_not_started":[[:space:]]*[1-9]' "$dir/start.json" || fail "sale start: no 425 answers"
grep -Eq '"200":[[:space:]]*[1-9]' "$dir/start.json" || fail "sale start: nothing sold after the start"

# 4. Open-loop sweep: delay 0 is never stale, 300 ms is stale within 1 s.
start_fake 26130
"$FS" --targets http://127.0.0.1:26130 --admin-token tok --stock 1000000 \
  --per-user-limit 0 --users 10000 --read-ratio 0.7 --rate 2000 --duration 1.5 \
  --connections 8 --workers 2 --stale-windows 0,100,1000 --sweep-delay 0,300 \
  --quiet --kv --plot "$dir/sweep.png" >"$dir/sweep.out" 2>&1
rc=$?
cat "$dir/sweep.out"
[ $rc -eq 0 ] || fail "sweep: exit $rc"
[ "$(kv delay_0ms_stale_reads_over_0ms "$dir/sweep.out")" = 0 ] || fail "sweep: stale reads at delay 0"
s300=$(kv delay_300ms_stale_reads_over_100ms "$dir/sweep.out")
[ -n "$s300" ] && [ "$s300" -gt 0 ] || fail "sweep: no stale reads over 100 ms at delay 300"
[ "$(kv delay_300ms_stale_reads_over_1s "$dir/sweep.out")" = 0 ] || fail "sweep: stale over 1 s at delay 300"
r300=$(kv delay_300ms_requests "$dir/sweep.out")
[ "$r300" -ge 2700 ] && [ "$r300" -le 3000 ] || fail "sweep: open loop sent $r300 requests, want ~3000"
grep -q "operator's tuning table" "$dir/sweep.out" || fail "sweep: no table"

# 4b. Coordinated omission: the fake is frozen for 0.6 s of a 2 s open-loop
# run at 1,000 requests/s. The ~600 requests due during the freeze are
# charged from their intended send time (0..600 ms late), so p90 is far
# above the fake's sub-millisecond service time and max is near 600 ms; a
# tester that timed from the actual send would see only the 8 in flight.
start_fake 26135
fake_pid=${pids[${#pids[@]}-1]}
"$FS" --targets http://127.0.0.1:26135 --admin-token tok --stock 1000000 --per-user-limit 0 \
  --users 1000 --read-ratio 0.5 --rate 1000 --duration 2 --connections 8 --workers 2 \
  --quiet --kv >"$dir/co.out" 2>&1 &
fs_pid=$!
sleep 0.7
kill -STOP "$fake_pid"; sleep 0.6; kill -CONT "$fake_pid"
wait $fs_pid
rc=$?
[ $rc -eq 0 ] || { cat "$dir/co.out"; fail "open loop with a stall: exit $rc"; }
awk -v p="$(kv p90_ms "$dir/co.out")" -v m="$(kv max_ms "$dir/co.out")" \
  'BEGIN { exit !(p > 100 && m > 400) }' \
  || { cat "$dir/co.out"; fail "open loop: a 0.6 s stall is not charged to the queued requests"; }
echo "stall charged: p90 $(kv p90_ms "$dir/co.out") ms, max $(kv max_ms "$dir/co.out") ms"

# 4c. The nemesis: a schedule freezes the fake for 0.5 s at 0.6 s (the
# command's run is the fault's window) and runs a failing command at 1.5 s;
# the report gives both faults with their exit status, the reads inside
# the windows apart from the others, and the JSON carries the same.
start_fake 26136
fake_pid=${pids[${#pids[@]}-1]}
printf '# at_ms name command\n600 freeze kill -STOP %s; sleep 0.5; kill -CONT %s\n1500 failing exit 3\n' \
  "$fake_pid" "$fake_pid" >"$dir/nemesis.txt"
"$FS" --targets http://127.0.0.1:26136 --admin-token tok --stock 1000000 --per-user-limit 0 \
  --users 1000 --read-ratio 0.5 --rate 1000 --duration 2.5 --connections 8 --workers 2 \
  --nemesis "$dir/nemesis.txt" --fault-grace 200 --quiet --kv --json "$dir/nem.json" \
  >"$dir/nem.out" 2>&1
rc=$?
[ $rc -eq 0 ] || { cat "$dir/nem.out"; fail "nemesis run: exit $rc"; }
[ "$(kv faults_run "$dir/nem.out")" = 2 ] || { cat "$dir/nem.out"; fail "nemesis: not both faults ran"; }
[ "$(kv fault_0_name "$dir/nem.out")" = freeze ] && [ "$(kv fault_0_rc "$dir/nem.out")" = 0 ] \
  || fail "nemesis: fault 0 not reported as freeze with status 0"
[ "$(kv fault_1_rc "$dir/nem.out")" = 3 ] || fail "nemesis: the failing command's status is not 3"
[ -n "$(kv fault_1_p99_recovery_ms "$dir/nem.out")" ] || fail "nemesis: no p99 recovery figure"
awk -v d="$(kv fault_0_duration_ms "$dir/nem.out")" 'BEGIN { exit !(d >= 450 && d < 1500) }' \
  || fail "nemesis: the freeze window lasted $(kv fault_0_duration_ms "$dir/nem.out") ms"
in=$(kv reads_in_faults "$dir/nem.out"); outside=$(kv reads_outside_faults "$dir/nem.out")
[ "${in:-0}" -gt 0 ] && [ "${outside:-0}" -gt "${in:-0}" ] \
  || fail "nemesis: reads inside $in, outside $outside"
grep -q '"faults"' "$dir/nem.json" && grep -q '"fault_windows"' "$dir/nem.json" \
  || fail "nemesis: the JSON has no faults"
# A restock in the middle and a limit on every second item only: the
# audits verify (units supplied grow by the restock; limited items keep
# their limit).
start_fake 26137
"$FS" --targets http://127.0.0.1:26137 --admin-token tok --skus 4 --stock 300 --per-user-limit 1 \
  --limit-every 2 --users 200 --read-ratio 0.2 --rate 1000 --duration 1.5 --restock-at 0.7 \
  --restock 100 --connections 8 --workers 2 --quiet --kv >"$dir/rst.out" 2>&1
rc=$?
[ $rc -eq 0 ] || { cat "$dir/rst.out"; fail "restock run: exit $rc"; }
[ "$(kv restocked_items "$dir/rst.out")" = 2 ] || { cat "$dir/rst.out"; fail "restock: not 2 items restocked"; }
[ "$(kv limit_violations "$dir/rst.out")" = 0 ] || fail "restock: limit violations"
printf '100 x\n' >"$dir/bad-nemesis.txt"
"$FS" --nemesis "$dir/bad-nemesis.txt" >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || fail "a nemesis line without a command: exit $rc, want 2"
echo "nemesis: reads inside $in, outside $outside, freeze $(kv fault_0_duration_ms "$dir/nem.out") ms"

# 5. Bad usage exits 2; so does a target nobody listens on.
"$FS" --read-ratio 2 >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || fail "bad usage: exit $rc, want 2"
"$FS" --targets http://127.0.0.1:26149 --admin-token tok --requests 10 --quiet \
  --timeout 1000 >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || fail "unreachable target: exit $rc, want 2"
echo "PASS"
