#!/usr/bin/env bash
# Cross-compiles the runtime and its unit tests for aarch64 with Debian's
# gcc-aarch64-linux-gnu and runs them under qemu-user. Exits 77 (CTest
# SKIP_RETURN_CODE) with a message when the cross tools are absent.
# Usage: test_runtime_aarch64.sh <repo-root> <work-dir>
# Environment: RT_TEST_FILTER=<glob> runs only the matching tests;
# RT_AARCH64_RUNS=<n> runs them n times in a row, each under a timeout of
# RT_AARCH64_TIMEOUT seconds (default 300), and stops at the first failure.
set -euo pipefail
root=${1:?repo root}
work=${2:?work dir}
cc=aarch64-linux-gnu-gcc
qemu=$(command -v qemu-aarch64 || command -v qemu-aarch64-static || true)
if ! command -v "$cc" >/dev/null 2>&1 || [ -z "$qemu" ]; then
  echo "SKIP: aarch64 cross tools absent (apt-get install gcc-aarch64-linux-gnu qemu-user)"
  exit 77
fi
mkdir -p "$work"
"$cc" -std=gnu11 -O2 -g -Wall -Wextra -Wno-unused-parameter -Werror -D_GNU_SOURCE \
  -DRT_TEST_SHIM -I"$root" \
  "$root"/runtime/{sched,stack,timer,netpoll,sync,blocking,util,log}.c \
  "$root"/runtime/switch_aarch64.S "$root"/tests/unit/test_runtime.c \
  -o "$work/test_runtime_aarch64" -lpthread -lm
runs=${RT_AARCH64_RUNS:-1}
if [ "$runs" -le 1 ]; then
  exec "$qemu" -L /usr/aarch64-linux-gnu "$work/test_runtime_aarch64"
fi
for ((i = 1; i <= runs; i++)); do
  start=$SECONDS
  if ! timeout -k 5 "${RT_AARCH64_TIMEOUT:-300}" \
       "$qemu" -L /usr/aarch64-linux-gnu "$work/test_runtime_aarch64" >"$work/run.log" 2>&1; then
    cat "$work/run.log"
    echo "run $i of $runs failed or timed out after $((SECONDS - start)) s"
    exit 1
  fi
  echo "run $i of $runs passed in $((SECONDS - start)) s"
done
