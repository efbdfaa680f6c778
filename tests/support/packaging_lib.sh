# shellcheck shell=bash disable=SC2016
# packaging_lib.sh: helpers for the packaging tests (sourced).
#
# Expects SRC (the source tree) and BUILD_DIR (the build tree, built) in the
# environment; tests/cmake/packaging.cmake sets them with VERSION,
# CACHESVC_BIN and NOTIFY_LISTEN. Every test works in a fresh temporary
# directory and stops what it started on exit, failure included. Ports:
# 28000-28999 only.
set -uo pipefail

: "${SRC:?}" "${BUILD_DIR:?}"
T=$(mktemp -d /tmp/pkg-test.XXXXXX)
PIDS=()
FAILS=0

cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$p" 2>/dev/null
  done
  if [ "$FAILS" -ne 0 ] || [ -n "${KEEP_LOGS:-}" ]; then
    for f in "$T"/*.log "$T"/*.out; do [ -f "$f" ] && { echo "---- $f (tail)"; tail -25 "$f"; }; done
  fi
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# shellcheck source=tests/support/checks.sh
. "$(dirname "${BASH_SOURCE[0]}")/checks.sh"
need() {    # need TOOL...: a missing tool is a failure (scripts/setup installs them)
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null 2>&1 || { fail "$t is not installed (scripts/setup)"; finish; }
  done
}

# doc_rows: the table of installed files in docs/operations.md, section
# "Installing", one line per row: "<path under the prefix> <path in the
# package>" (either may hold a * glob).
doc_rows() {
  awk '/^## Installing/ {on = 1; next} /^## / {on = 0} on' "$SRC/docs/operations.md" |
    sed -n 's/^| `P\/\([^`]*\)` | `\([^`]*\)` |.*/\1 \2/p'
}

# match_list WHAT COLUMN FILE: checks the sorted file list FILE against
# column COLUMN (1 = under the prefix, 2 = in the package) of doc_rows:
# every file matches one row and every row matches at least one file.
match_list() {
  local what=$1 col=$2 list=$3 f pat hit bad=0
  local -a pats
  mapfile -t pats < <(doc_rows | awk -v c="$col" '{print $c}')
  if [ "${#pats[@]}" -lt 5 ]; then
    fail "$what: the table of installed files in docs/operations.md was not found"
    return
  fi
  while IFS= read -r f; do
    hit=0
    for pat in "${pats[@]}"; do
      # shellcheck disable=SC2053  # the row is a glob on purpose
      [[ $f == $pat ]] && hit=$((hit + 1))
    done
    [ "$hit" -eq 1 ] || { echo "  $f: matches $hit rows of the docs' table"; bad=1; }
  done <"$list"
  for pat in "${pats[@]}"; do
    hit=0
    while IFS= read -r f; do
      # shellcheck disable=SC2053
      [[ $f == $pat ]] && { hit=1; break; }
    done <"$list"
    [ "$hit" -eq 1 ] || { echo "  $pat: in the docs' table, not installed"; bad=1; }
  done
  # The documentation row is a glob: it must hold README.md and every docs/*.md.
  local want have
  want=$(( $(find "$SRC/docs" -maxdepth 1 -name '*.md' | wc -l) + 1 ))
  have=$(grep -cE '(^|/)share/doc/cachesvc/[^/]*\.md$' "$list")
  [ "$have" -eq "$want" ] || { echo "  $have .md files installed, want $want (README.md + docs/*.md)"; bad=1; }
  if [ "$bad" -eq 0 ]; then ok "$what"; else fail "$what"; fi
}

# verify_units ROOT UNIT...: systemd-analyze verify, which must print
# nothing (it warns about unknown or bad settings and still exits 0).
# ROOT empty = the host's root.
verify_units() {
  local root=$1; shift
  local out rc
  if [ -n "$root" ]; then
    out=$(systemd-analyze verify --root="$root" "$@" 2>&1); rc=$?
  else
    out=$(systemd-analyze verify "$@" 2>&1); rc=$?
  fi
  if [ "$rc" -eq 0 ] && [ -z "$out" ]; then
    return 0
  fi
  echo "systemd-analyze verify (rc=$rc):"; echo "$out"
  return 1
}
