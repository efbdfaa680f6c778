#!/usr/bin/env bash
# Starts a 3+3 Redis Cluster that requires a password and knows an ACL user
# (scripts/redis-cluster up --password --user) in a fresh temp dir, runs
# redis_auth_test against it, and stops the servers on every way out. The
# password is random; the test fails if it appears anywhere in what the
# client printed.
#
# Usage: redis_auth.sh TEST_BINARY PORT      (the cluster on PORT..PORT+5)
set -u
bin=$1 port=$2
top=$(cd "$(dirname "$0")/../.." && pwd)
exec 9>"/tmp/cachesvc-redis-test-$port.lock"
flock -w 900 9 || { echo "redis_auth: port $port busy for 900 s" >&2; exit 1; }
dir=$(mktemp -d /tmp/cachesvc-redis-auth.XXXXXX)
cleanup() {
  "$top/scripts/redis-cluster" down --dir "$dir"
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

user=cachesvc-test
password=pw-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
seeds=$(REDIS_CLUSTER_PASSWORD=$password "$top/scripts/redis-cluster" up --dir "$dir" \
          --port "$port" --user "$user" | tail -1)
[ -n "$seeds" ] || { echo "redis_auth: the cluster did not start" >&2; exit 1; }
REDIS_TEST_PASSWORD=$password REDISCLI_AUTH=$password "$bin" "$seeds" "$dir" "$user" \
  >"$dir/test.out" 2>&1
rc=$?
cat "$dir/test.out"
if grep -qF -- "$password" "$dir/test.out"; then
  echo "FAIL: the password appears in the client's output"
  rc=1
fi
if [ $rc -ne 0 ]; then
  for f in "$dir"/*.log; do [ -f "$f" ] && { echo "== $f"; tail -15 "$f"; }; done
fi
exit $rc
