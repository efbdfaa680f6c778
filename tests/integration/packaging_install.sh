#!/usr/bin/env bash
# `cmake --install` into a temporary prefix: exactly the files the table of
# docs/operations.md ("Installing") names, the paths inside the units and
# the configuration rewritten to the prefix, both units pass
# systemd-analyze verify (their ExecStart exists under the prefix), and a
# second install keeps a changed cachesvc.ini.
. "$(dirname "$0")/../support/packaging_lib.sh"
need cmake systemd-analyze

P="$T/prefix"
if ! cmake --install "$BUILD_DIR" --prefix "$P" >"$T/install.log" 2>&1; then
  fail "cmake --install"; finish
fi
(cd "$P" && find . -type f -o -type l) | sed 's|^\./||' | sort >"$T/files.out"
match_list "cmake --install puts exactly the files docs/operations.md lists" 1 "$T/files.out"

unit="$P/lib/systemd/system/cachesvc.service"
ini="$P/etc/cachesvc/cachesvc.ini"
check "the unit starts the prefix's binary with the prefix's configuration" \
  grep -qx "ExecStart=$P/bin/cachesvc --config=$P/etc/cachesvc/cachesvc.ini" "$unit"
check "the invalidator's unit too" \
  grep -qx "ExecStart=$P/bin/invalidator --config=$P/etc/cachesvc/cachesvc.ini" \
  "$P/lib/systemd/system/cachesvc-invalidator.service"
check "the configuration names the prefix's admin token file" \
  grep -qx "admin_token_file = $P/etc/cachesvc/admin-token" "$ini"
check "no /usr/bin or /etc/cachesvc path is left in the installed files" \
  bash -c "! grep -nE '(^|[= ])(/usr/bin/|/etc/cachesvc/)' '$unit' '$ini' '$P/lib/systemd/system/cachesvc-invalidator.service'"
check "the state directory stays systemd's /var/lib/cachesvc" \
  grep -qx 'url = sqlite:/var/lib/cachesvc/cachesvc.db' "$ini"
check "installed binaries are executable" \
  bash -c "for b in cachesvc invalidator flashsale cachesvc-devbroker; do test -x '$P/bin/'\$b || exit 1; done"
check "the installed configuration validates (cachesvc --check-config)" \
  bash -c "printf 'tok\n' >'$T/token' && chmod 600 '$T/token' &&
           '$P/bin/cachesvc' --check-config --config='$ini' --server.admin_token_file='$T/token' >'$T/check.log' 2>&1"
check "systemd-analyze verify: the units as installed under the prefix" \
  verify_units "" "$unit" "$P/lib/systemd/system/cachesvc-invalidator.service"

# A second install over a changed configuration keeps it.
echo "; changed by the operator" >>"$ini"
if cmake --install "$BUILD_DIR" --prefix "$P" >"$T/install2.log" 2>&1; then
  check "a second install keeps a changed cachesvc.ini" grep -q 'changed by the operator' "$ini"
  check "and says so" grep -q "Keeping: $ini" "$T/install2.log"
else
  fail "second cmake --install"
fi

finish
