# fixtures.sh: shell helpers shared by flashsale's tests, scripts/demo and
# scripts/bench.d/flashsale (sourced, never run).

# fs_redis_up TOP DIR PORT: starts a local Redis Cluster in DIR on PORT with
# TOP/scripts/redis-cluster and prints its seed list. On a loaded machine a
# node can miss its start-up deadline, so a failed start is shown (the
# script's message and the nodes' log tails, on stderr), torn down and tried
# once more. Returns 1 when both attempts failed (nothing is left running).
fs_redis_up() {
  local top=$1 dir=$2 port=$3 seeds attempt f
  for attempt in 1 2; do
    seeds=$("$top/scripts/redis-cluster" up --dir "$dir" --port "$port" 2>"$dir.err" | tail -1)
    if [[ "$seeds" == 127.0.0.1:* ]]; then
      echo "$seeds"
      return 0
    fi
    {
      echo "redis cluster start, attempt $attempt, failed:"
      cat "$dir.err"
      for f in "$dir"/redis-*.log; do [ -f "$f" ] && { echo "-- $f"; tail -5 "$f"; }; done
    } >&2
    "$top/scripts/redis-cluster" down --dir "$dir" >/dev/null 2>&1
    rm -rf "$dir"
  done
  return 1
}

# The last value of KEY in a name=value file: fs_kv KEY FILE.
fs_kv() { sed -n "s/^$1=//p" "$2" | tail -1; }
