#!/usr/bin/env bash
# The Debian package, built by cpack from the build tree's binaries into a
# temporary folder: its name, control fields (Depends from dpkg-shlibdeps),
# conffiles, maintainer scripts, its file list against the table of
# docs/operations.md ("Installing"), and systemd-analyze verify on its
# units in a root made of the package.
. "$(dirname "$0")/../support/packaging_lib.sh"
: "${VERSION:?}"
need cpack dpkg-deb dpkg-shlibdeps systemd-analyze

arch=$(dpkg --print-architecture)
deb="$T/pkg/cachesvc_${VERSION}_${arch}.deb"
if ! cpack -G DEB -B "$T/pkg" --config "$BUILD_DIR/CPackConfig.cmake" >"$T/cpack.log" 2>&1; then
  fail "cpack"; finish
fi
check "cpack made $(basename "$deb")" test -f "$deb"
[ -f "$deb" ] || finish

# ---- control fields
dpkg-deb -f "$deb" >"$T/control.out"
field() { dpkg-deb -f "$deb" "$1"; }
check "Package: cachesvc" test "$(field Package)" = cachesvc
check "Version: $VERSION (project VERSION)" test "$(field Version)" = "$VERSION"
check "Architecture: $arch" test "$(field Architecture)" = "$arch"
depends=$(field Depends)
want_deps=(adduser libc6 libcjson1 libhiredis libhttp-parser libinih1 libpq5 librdkafka1 libsqlite3-0)
[ -z "${CACHESVC_NO_JEMALLOC:-}" ] && want_deps+=(libjemalloc2)
missing=""
for d in "${want_deps[@]}"; do   # a name, or a name with its soname version
  grep -qE "(^|, )${d}[^ ,]*( |,|$)" <<<"$depends" || missing+=" $d"
done
check "Depends names every linked library and adduser (got: $depends)${missing:+; missing:$missing}" \
  test -z "$missing"
check "Depends carries versions from dpkg-shlibdeps" grep -qE 'libc6 \(>= [0-9]' <<<"$depends"
check "Maintainer and Description are set" \
  test -n "$(field Maintainer)" -a -n "$(field Description)"

# ---- control archive: conffiles and maintainer scripts
dpkg-deb -e "$deb" "$T/ctl"
check "conffiles is exactly /etc/cachesvc/cachesvc.ini" \
  test "$(cat "$T/ctl/conffiles" 2>/dev/null)" = /etc/cachesvc/cachesvc.ini
for s in postinst prerm postrm; do
  check "$s is there, executable (0755) and parses" \
    bash -c "test \"\$(stat -c %a '$T/ctl/$s')\" = 755 && sh -n '$T/ctl/$s'"
done
check "postinst makes the system user and group" \
  bash -c "grep -q 'addgroup --system' '$T/ctl/postinst' && grep -q 'adduser --system' '$T/ctl/postinst'"
check "postinst makes the admin token once, group-readable only" \
  bash -c "grep -q '\[ ! -e /etc/cachesvc/admin-token \]' '$T/ctl/postinst' && grep -q 'chmod 0640' '$T/ctl/postinst'"
check "postinst keeps cachesvc.ini root:cachesvc 0640 (dpkg-statoverride)" \
  grep -q 'dpkg-statoverride --update --add root cachesvc 0640 /etc/cachesvc/cachesvc.ini' "$T/ctl/postinst"
check "postinst reloads systemd and starts nothing on a first install" \
  bash -c "grep -v '^ *#' '$T/ctl/postinst' >'$T/postinst.code' && grep -q 'systemctl daemon-reload' '$T/postinst.code' && ! grep -qE 'systemctl (enable|start)' '$T/postinst.code'"
check "prerm stops both units on removal" \
  grep -q 'systemctl stop cachesvc.service cachesvc-invalidator.service' "$T/ctl/prerm"
check "postrm purge removes the token and the override, keeps the data" \
  bash -c "grep -q 'rm -f /etc/cachesvc/admin-token' '$T/ctl/postrm' && grep -q 'dpkg-statoverride --remove' '$T/ctl/postrm' && ! grep -q 'rm -rf* /var/lib' '$T/ctl/postrm'"

# ---- files: the docs' table, column "in the package"
dpkg-deb -c "$deb" | awk '$1 ~ /^-/ {print $6}' | sed 's|^\./|/|' | sort >"$T/files.out"
match_list "the package holds exactly the files docs/operations.md lists" 2 "$T/files.out"
dpkg-deb -c "$deb" | awk '$1 ~ /^-/ && $6 ~ /usr\/bin\// {print $1, $2}' | sort -u >"$T/bin-modes.out"
check "binaries are root:root 0755" test "$(cat "$T/bin-modes.out")" = "-rwxr-xr-x root/root"

# ---- the units as packaged, verified in a root made of the package plus
# what they reference from the host (its units for the targets, /bin/kill)
root="$T/root"
dpkg-deb -x "$deb" "$root"
check "the packaged unit starts /usr/bin/cachesvc with /etc/cachesvc/cachesvc.ini" \
  grep -qx 'ExecStart=/usr/bin/cachesvc --config=/etc/cachesvc/cachesvc.ini' "$root/lib/systemd/system/cachesvc.service"
check "the packaged configuration keeps SQLite in the state directory" \
  grep -qx 'url = sqlite:/var/lib/cachesvc/cachesvc.db' "$root/etc/cachesvc/cachesvc.ini"
cp -an /lib/systemd/system/. "$root/lib/systemd/system/" 2>/dev/null
mkdir -p "$root/bin" && cp /bin/kill "$root/bin/kill"
check "systemd-analyze verify: the packaged units" \
  verify_units "$root" /lib/systemd/system/cachesvc.service /lib/systemd/system/cachesvc-invalidator.service

finish
