# install-system.cmake: installs the configuration and the systemd units.
# Runs at install time (`cmake --install`, and cpack, which installs with
# DESTDIR and the prefix /usr), from the install(CODE) in packaging.cmake,
# with CACHESVC_PACKAGING_DIR (the source folder packaging/) and
# CACHESVC_STAGE_DIR (a scratch folder of the build tree) set.
#
# Their place follows the install prefix the way GNUInstallDirs places
# SYSCONFDIR, decided here because the prefix is only known now:
#   prefix /usr          /etc/cachesvc/cachesvc.ini, /lib/systemd/system/*.service
#                        (the files as they are in packaging/)
#   any other prefix P   P/etc/cachesvc/cachesvc.ini, P/lib/systemd/system/*.service,
#                        with /usr/bin, /usr/share and /etc/cachesvc in them
#                        rewritten to P/bin, P/share and P/etc/cachesvc
#                        (systemd reads /usr/local/lib/systemd/system too).
# The state directory stays /var/lib/cachesvc: systemd's StateDirectory=.
# An existing cachesvc.ini is never overwritten (the operator's settings);
# the package gets the same from dpkg's conffile handling.

string(REGEX REPLACE "/+$" "" _p "${CMAKE_INSTALL_PREFIX}")
if(_p STREQUAL "/usr")
  set(_etc "/etc/cachesvc")
  set(_units "/lib/systemd/system")
else()
  set(_etc "${_p}/etc/cachesvc")
  set(_units "${_p}/lib/systemd/system")
endif()

# Returns in ${out} the file to install for ${name}: the source file for
# /usr, else a copy with the paths rewritten, in a scratch folder of its own
# per prefix (two installs to different prefixes may run at once).
function(_cachesvc_for_prefix name out)
  set(src "${CACHESVC_PACKAGING_DIR}/${name}")
  if(_p STREQUAL "/usr")
    set(${out} "${src}" PARENT_SCOPE)
    return()
  endif()
  string(MD5 tag "${_p}")
  set(dst "${CACHESVC_STAGE_DIR}/${tag}/${name}")
  file(READ "${src}" text)
  string(REPLACE "/usr/bin/" "${_p}/bin/" text "${text}")
  string(REPLACE "/usr/share/" "${_p}/share/" text "${text}")
  string(REPLACE "/etc/cachesvc/" "${_etc}/" text "${text}")
  file(WRITE "${dst}.tmp" "${text}")
  file(RENAME "${dst}.tmp" "${dst}")
  set(${out} "${dst}" PARENT_SCOPE)
endfunction()

_cachesvc_for_prefix(cachesvc.ini _ini)
if(EXISTS "$ENV{DESTDIR}${_etc}/cachesvc.ini")
  message(STATUS "Keeping: $ENV{DESTDIR}${_etc}/cachesvc.ini (the shipped one is ${_ini})")
else()
  file(INSTALL DESTINATION "${_etc}" TYPE FILE
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
       FILES "${_ini}")
endif()

foreach(_unit cachesvc.service cachesvc-invalidator.service)
  _cachesvc_for_prefix(${_unit} _f)
  file(INSTALL DESTINATION "${_units}" TYPE FILE
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
       FILES "${_f}")
endforeach()
