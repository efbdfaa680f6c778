#!/usr/bin/env bash
# The service's side of Type=notify, as systemd would see it: the real
# binary with the shipped cachesvc.ini, NOTIFY_SOCKET naming a datagram
# socket that packaging_notify_listen reads (with the sender's pid, as
# NotifyAccess=main checks it) and WATCHDOG_USEC set. Expected: READY=1
# only once it answers HTTP; WATCHDOG=1 every half interval; on SIGHUP
# RELOADING=1 with MONOTONIC_USEC, then READY=1; on SIGTERM STOPPING=1,
# then exit 0. Every message from the main process.
. "$(dirname "$0")/../support/packaging_lib.sh"
: "${CACHESVC_BIN:?}" "${NOTIFY_LISTEN:?}"
need curl

port=28200
sock="$T/notify.sock"
out="$T/notify.out"
"$NOTIFY_LISTEN" "$sock" 100 >"$out" 2>"$T/listen.log" &
PIDS+=("$!")
for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.05; done
check "the notification socket is up" test -S "$sock"

mkdir -p "$T/etc"
cp "$SRC/packaging/cachesvc.ini" "$T/etc/cachesvc.ini"
echo "notify-token" >"$T/etc/admin-token"; chmod 0600 "$T/etc/admin-token"
# WATCHDOG_USEC=1 s: a ping every 0.5 s.
NOTIFY_SOCKET="$sock" WATCHDOG_USEC=1000000 "$CACHESVC_BIN" \
  --config="$T/etc/cachesvc.ini" --server.listen=127.0.0.1:$port \
  --server.admin_token_file="$T/etc/admin-token" --store.url="sqlite:$T/cachesvc.db" \
  --server.workers=2 --server.shutdown_delay_ms=200 --server.drain_timeout_ms=3000 \
  >"$T/svc.log" 2>&1 &
svc=$!
PIDS+=("$svc")

has() {   # has ASSIGNMENT [FILE]: a message with exactly this VAR=value
  grep -qE "^pid=[0-9]+ (.*\|)?$1(\||$)" "${2:-$out}"
}
wait_for() {   # wait_for ASSIGNMENT SECONDS
  for _ in $(seq 1 $(($2 * 20))); do has "$1" && return 0; sleep 0.05; done
  return 1
}

# READY=1 must not come before the port answers: check at the moment it
# arrives.
ready=0
for _ in $(seq 1 400); do
  if has READY=1; then ready=1; break; fi
  kill -0 "$svc" 2>/dev/null || break
  sleep 0.025
done
check "READY=1 arrives" test "$ready" = 1
[ "$ready" = 1 ] || finish
check "the service answers when READY=1 has arrived" \
  curl -sf --max-time 5 "http://127.0.0.1:$port/healthz" -o /dev/null

sleep 2
n=$(grep -cE '^pid=[0-9]+ (.*\|)?WATCHDOG=1(\||$)' "$out")
check "WATCHDOG=1 every half of WATCHDOG_USEC (got $n in about 2 s, want 3 or more)" test "$n" -ge 3

cp "$out" "$T/before-hup.out"
kill -HUP "$svc"
wait_for 'RELOADING=1' 5
sed -n "$(($(wc -l <"$T/before-hup.out") + 1)),\$p" "$out" >"$T/after-hup.out"
check "SIGHUP: RELOADING=1 with MONOTONIC_USEC" \
  grep -qE '^pid=[0-9]+ (.*\|)?RELOADING=1(\|.*)?\|MONOTONIC_USEC=[0-9]+|^pid=[0-9]+ (.*\|)?MONOTONIC_USEC=[0-9]+(\|.*)?\|RELOADING=1' "$T/after-hup.out"
for _ in $(seq 1 100); do
  sed -n "$(($(wc -l <"$T/before-hup.out") + 1)),\$p" "$out" >"$T/after-hup.out"
  awk '/RELOADING=1/ {r = 1} r && /(^| |\|)READY=1(\||$)/ && !/RELOADING=1/ {ok = 1} END {exit !ok}' \
    "$T/after-hup.out" && break
  sleep 0.05
done
check "then READY=1 once the reload is done" \
  awk '/RELOADING=1/ {r = 1} r && /(^| |\|)READY=1(\||$)/ && !/RELOADING=1/ {ok = 1} END {exit !ok}' "$T/after-hup.out"
usec=$(sed -nE 's/.*MONOTONIC_USEC=([0-9]+).*/\1/p' "$T/after-hup.out" | head -1)
check "MONOTONIC_USEC is a plausible CLOCK_MONOTONIC time (${usec:-none})" \
  test "${usec:-0}" -gt 1000000

kill -TERM "$svc"
wait_for 'STOPPING=1' 5
check "SIGTERM: STOPPING=1" has STOPPING=1
wait "$svc"
rc=$?
check "the service exits 0 (got $rc)" test "$rc" -eq 0
check "no READY=1 after STOPPING=1" \
  awk '/STOPPING=1/ {s = 1; next} s && /(^| |\|)READY=1(\||$)/ {bad = 1} END {exit bad}' "$out"
bad_pid=$(grep -vE "^pid=$svc " "$out" | head -3)
check "every message comes from the main process (pid $svc)${bad_pid:+; not: $bad_pid}" test -z "$bad_pid"

finish
