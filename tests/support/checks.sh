# shellcheck shell=bash
# checks.sh: the check helpers the shell tests share (sourced).
#
#   check "what" <command...>   passes when the command succeeds
#   ok "what" / fail "what"     one line each; fail counts in FAILS
#   finish                      exit 1 when a check failed, else 0
#
# The sourcing script owns cleanup: its EXIT trap reads FAILS to decide
# whether to print its logs.
FAILS=${FAILS:-0}

fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
ok() { echo "ok: $*"; }
check() {   # check "what" <command...>: passes when the command succeeds
  local what=$1; shift
  if "$@"; then ok "$what"; else fail "$what"; fi
}
finish() {
  if [ "$FAILS" -ne 0 ]; then echo "$FAILS check(s) failed"; exit 1; fi
  echo "all checks passed"; exit 0
}
