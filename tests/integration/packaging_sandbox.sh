#!/usr/bin/env bash
# Does the hardening of packaging/cachesvc.service let the service run?
# There is no systemd to start the unit here, so the test runs the real
# binary the way the unit would, as far as a plain process can: an
# unprivileged user (nobody), no capabilities, no_new_privs, the shipped
# cachesvc.ini, its state in one directory. Under strace it goes through a
# start, item writes, reads, a decrement, /metrics, a SIGHUP reload and a
# SIGTERM stop. Then every system call it made must be allowed by the
# unit's SystemCallFilter= lines (the groups expanded by this machine's
# systemd-analyze), every socket family by RestrictAddressFamilies=; no
# mapping may be writable and executable or become executable
# (MemoryDenyWriteExecute=), no namespace may be created
# (RestrictNamespaces=), no realtime policy set (RestrictRealtime=), and no
# file written outside the state directory (ProtectSystem=strict).
. "$(dirname "$0")/../support/packaging_lib.sh"
: "${CACHESVC_BIN:?}"
need strace setpriv systemd-analyze curl pgrep

unit="$SRC/packaging/cachesvc.service"
port=28100

# ---- the unit's policy
unit_values() {   # unit_values KEY: the values of every KEY= line, one per line
  sed -n "s/^$1=//p" "$unit"
}
expand_group() {   # expand_group NAME: the system calls a group (or a name) stands for
  case $1 in
    @*) systemd-analyze syscall-filter "$1" | tail -n +2 | awk 'NF == 1 && $1 !~ /^#/ {print $1}' |
          while read -r s; do expand_group "$s"; done ;;
    *) echo "$1" ;;
  esac
}
: >"$T/allow.txt"; : >"$T/deny.txt"
while IFS= read -r line; do
  dest="$T/allow.txt"
  case $line in "~"*) dest="$T/deny.txt"; line=${line#\~} ;; esac
  for item in $line; do expand_group "$item" >>"$dest"; done
done < <(unit_values SystemCallFilter)
sort -u "$T/allow.txt" -o "$T/allow.txt"
sort -u "$T/deny.txt" -o "$T/deny.txt"
comm -23 "$T/allow.txt" "$T/deny.txt" >"$T/allowed.txt"
if [ "$(wc -l <"$T/allowed.txt")" -lt 100 ]; then
  fail "the unit's SystemCallFilter= did not expand (systemd-analyze syscall-filter)"; finish
fi
read -r -a families <<<"$(unit_values RestrictAddressFamilies | tr '\n' ' ')"
check "the unit restricts socket families" test "${#families[@]}" -gt 0

# ---- the service, as the unit would run it
uid=nobody
gid=$(id -gn nobody)
chmod 755 "$T"
mkdir -p "$T/etc" "$T/state"
cp "$SRC/packaging/cachesvc.ini" "$T/etc/cachesvc.ini"
echo "sandbox-token" >"$T/etc/admin-token"
chown root:"$gid" "$T/etc/admin-token"; chmod 0640 "$T/etc/admin-token"
chmod 0644 "$T/etc/cachesvc.ini"
chown "$uid:$gid" "$T/state"; chmod 0750 "$T/state"
# The binary must be reachable by the unprivileged user.
if ! setpriv --reuid="$uid" --regid="$gid" --clear-groups test -x "$CACHESVC_BIN"; then
  fail "$CACHESVC_BIN is not executable by $uid (a build tree under a private home?)"; finish
fi

(cd "$T/state" && exec strace -f -qq -o "$T/trace.txt" \
   setpriv --reuid="$uid" --regid="$gid" --clear-groups --no-new-privs \
           --bounding-set=-all --inh-caps=-all -- \
   "$CACHESVC_BIN" --config="$T/etc/cachesvc.ini" \
     --server.listen=127.0.0.1:$port --server.admin_token_file="$T/etc/admin-token" \
     --store.url="sqlite:$T/state/cachesvc.db" --server.workers=2 \
     --server.shutdown_delay_ms=100 --server.drain_timeout_ms=3000) >"$T/svc.log" 2>&1 &
tracer=$!
PIDS+=("$tracer")
up=0
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && { up=1; break; }
  kill -0 "$tracer" 2>/dev/null || break
  sleep 0.1
done
check "the service starts as $uid without capabilities, with no_new_privs" test "$up" = 1
[ "$up" = 1 ] || finish
svc=$(pgrep -P "$tracer" | head -1)
PIDS+=("$svc")

u="http://127.0.0.1:$port"
auth=(-H "Authorization: Bearer sandbox-token")
check "an item is written (admin token from the file)" \
  curl -sf -X PUT "${auth[@]}" -d '{"stock":100,"per_user_limit":1}' "$u/v1/items/hot" -o /dev/null
check "it is read" curl -sf "$u/v1/items/hot" -o /dev/null
check "a unit is sold" \
  curl -sf -X POST -H 'Idempotency-Key: k1' -d '{"user_id":"u1","qty":1}' "$u/v1/items/hot/decrement" -o /dev/null
check "/metrics answers" curl -sf "$u/metrics" -o /dev/null
check "/readyz answers" curl -sf "$u/readyz" -o /dev/null
kill -HUP "$svc"
for _ in $(seq 1 50); do grep -q 'config reloaded\|reload refused' "$T/svc.log" && break; sleep 0.1; done
check "a SIGHUP reload is applied" grep -q 'config reloaded' "$T/svc.log"
check "the item is read after the reload" curl -sf "$u/v1/items/hot" -o /dev/null
kill -TERM "$svc"
wait "$tracer"
rc=$?
check "SIGTERM stops it with exit 0 (got $rc)" test "$rc" -eq 0

# ---- what it did, from its own execve on (setpriv's calls are not the
# service's)
start=$(grep -n "execve(\"$CACHESVC_BIN\"" "$T/trace.txt" | grep ' = 0' | head -1 | cut -d: -f1)
if [ -z "$start" ]; then fail "no execve of the service in the trace"; finish; fi
tail -n +"$start" "$T/trace.txt" | sed -E 's/^[0-9]+ +//' >"$T/svc-trace.txt"

grep -oE '^[a-z_0-9]+\(' "$T/svc-trace.txt" | tr -d '(' | sort -u >"$T/used.txt"
comm -23 "$T/used.txt" "$T/allowed.txt" >"$T/refused.txt"
check "every system call ($(wc -l <"$T/used.txt") kinds) passes SystemCallFilter= (refused: $(tr '\n' ' ' <"$T/refused.txt"))" \
  test ! -s "$T/refused.txt"

grep -oE '^socket(pair)?\(AF_[A-Z0-9]+' "$T/svc-trace.txt" | sed 's/.*(//' | sort -u >"$T/families.txt"
bad_fam=""
while read -r f; do
  printf '%s\n' "${families[@]}" | grep -qx "$f" || bad_fam+=" $f"
done <"$T/families.txt"
check "socket families $(tr '\n' ' ' <"$T/families.txt")pass RestrictAddressFamilies=${bad_fam:+ (refused:$bad_fam)}" \
  test -z "$bad_fam"

check "no writable and executable mapping, nothing made executable (MemoryDenyWriteExecute=)" \
  bash -c "! grep -E '^(mmap2?\(.*PROT_WRITE\|PROT_EXEC|mmap2?\(.*PROT_EXEC\|PROT_WRITE|(pkey_)?mprotect\(.*PROT_EXEC)' '$T/svc-trace.txt'"
check "no namespace created (RestrictNamespaces=)" \
  bash -c "! grep -E '^(clone3?|unshare|setns)\(.*CLONE_NEW' '$T/svc-trace.txt'"
check "no realtime scheduling (RestrictRealtime=)" \
  bash -c "! grep -E '^sched_set(scheduler|attr)\(.*SCHED_(FIFO|RR|DEADLINE)' '$T/svc-trace.txt'"

# Files opened for writing, created, renamed or removed: only in the state
# directory (or relative to it: it is the working directory), /dev (a
# private one under PrivateDevices=) and /tmp (PrivateTmp=).
grep -E '^(open|openat|creat)\(' "$T/svc-trace.txt" | grep -E 'O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|^creat' |
  grep -v '= -1 ' | sed -nE 's/^[a-z]+\((AT_FDCWD, )?"([^"]*)".*/\2/p' >"$T/written.txt"
grep -E '^(unlink|unlinkat|rename|renameat2?|mkdir|mkdirat|rmdir)\(' "$T/svc-trace.txt" | grep -v '= -1 ' |
  grep -oE '"[^"]*"' | tr -d '"' >>"$T/written.txt"
sort -u "$T/written.txt" | grep -vE "^($T/state/|/dev/|/tmp/|[^/])" >"$T/outside.txt"
check "no file written outside the state directory (ProtectSystem=strict): $(tr '\n' ' ' <"$T/outside.txt")" \
  test ! -s "$T/outside.txt"
check "the database is in the state directory, owned by the service's user" \
  test "$(stat -c %U "$T/state/cachesvc.db" 2>/dev/null)" = "$uid"

finish
