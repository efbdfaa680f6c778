#!/usr/bin/env bash
# scripts/demo interrupted as a terminal's Ctrl-C does it: SIGINT to the
# demo's whole process group one second into the full-size sale. The demo
# must stop sending, audit what was sold (verification passes), exit 130,
# and leave nothing it started running: no cachesvc, no Redis node.
# Exits 77 (CTest SKIP_RETURN_CODE) when something else holds the demo's
# ports: the demo runs on fixed ports and would fail for another reason.
# Usage: flashsale_demo_interrupt.sh BUILD_DIR   (the demo's ports 26600-26620)
set -uo pipefail
BUILD=$1
SRC=$(cd "$(dirname "$0")/../.." && pwd)
log=$(mktemp /tmp/flashsale-demo-int.XXXXXX)
demo=""
cleanup() {
  # Only when the demo is still running (the test failed): SIGTERM lets its
  # own cleanup stop the servers it started; SIGKILL if that hangs too.
  if [ -n "$demo" ] && kill -0 "$demo" 2>/dev/null; then
    kill -TERM -- -"$demo" 2>/dev/null
    for _ in $(seq 1 150); do kill -0 "$demo" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- -"$demo" 2>/dev/null
  fi
  rm -f "$log"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "---- demo output"; grep -v '^\[' "$log"; exit 1; }
listening() { ss -ltnH 2>/dev/null | awk '{print $4}' | grep -E ':26(6[01][0-9]|620)$'; }

[ -z "$(listening)" ] || { echo "SKIP: ports 26600-26620 busy: $(listening | tr '\n' ' ')"; exit 77; }

# A session of its own, so the signal reaches the demo's group only (as the
# terminal's foreground group would get it).
setsid "$SRC/scripts/demo" --build-dir "$BUILD" >"$log" 2>&1 &
demo=$!
for _ in $(seq 1 600); do
  grep -q "demo: the sale:" "$log" && break
  kill -0 "$demo" 2>/dev/null || fail "the demo exited before the sale"
  sleep 0.1
done
grep -q "demo: the sale:" "$log" || fail "the sale did not start within 60 s"
sleep 1
kill -INT -- -"$demo"
rc=""
for _ in $(seq 1 600); do
  kill -0 "$demo" 2>/dev/null || { wait "$demo"; rc=$?; break; }
  sleep 0.1
done
[ -n "$rc" ] || fail "the demo did not exit within 60 s of Ctrl-C"
demo=""
if [ "$rc" -eq 0 ] && grep -q "^200000 requests" "$log"; then
  echo "note: the sale ended before the interrupt arrived"
else
  [ "$rc" -eq 130 ] || fail "exit $rc after Ctrl-C, want 130"
  grep -q "demo: interrupted" "$log" || fail "no 'interrupted' message"
fi
grep -q "^verification: PASSED" "$log" || fail "the part that ran was not verified"
grep -q "demo: stopping cachesvc" "$log" || fail "cachesvc was not stopped"
grep -q "demo: stopping the Redis Cluster" "$log" || fail "the Redis Cluster was not stopped"
sleep 0.5
[ -z "$(listening)" ] || fail "still listening after the demo: $(listening | tr '\n' ' ')"
grep -E "^[0-9]+ requests in" "$log"
echo PASS
