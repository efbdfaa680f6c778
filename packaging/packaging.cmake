# packaging.cmake: what `cmake --install` puts where, and the Debian package
# (`cmake --build build --target package`, or `cpack` in the build tree).
# Included last by the top-level CMakeLists.txt, after every module has added
# its own install(TARGETS) (bin/: cachesvc, invalidator, flashsale,
# cachesvc-devbroker). The list of installed files is in
# docs/operations.md, "Installing"; tests/integration/packaging_*.sh hold
# both to it.

# Documentation: share/doc/cachesvc (cachesvc.ini.example comes from
# cachesvc/CMakeLists.txt).
install(FILES ${CMAKE_SOURCE_DIR}/README.md ${CMAKE_SOURCE_DIR}/api/openapi.yaml
        DESTINATION share/doc/cachesvc)
file(GLOB CACHESVC_DOCS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/docs/*.md)
install(FILES ${CACHESVC_DOCS} DESTINATION share/doc/cachesvc)

# Configuration and systemd units: their place depends on the prefix, known
# only at install time (see install-system.cmake).
install(CODE "
  set(CACHESVC_PACKAGING_DIR \"${CMAKE_SOURCE_DIR}/packaging\")
  set(CACHESVC_STAGE_DIR \"${CMAKE_BINARY_DIR}/packaging-stage\")
  include(\"${CMAKE_SOURCE_DIR}/packaging/install-system.cmake\")
")

# The Debian package: cachesvc_<version>_<arch>.deb, one package holding the
# service, the standalone invalidator and the two tools (flashsale, the
# development broker), so a host has the load tester and the broker of the
# same version at hand. Prefix /usr; /etc and /lib/systemd/system by the
# rule above. Binaries keep their symbols (perf and gdb on a production
# host); the package is about 2 MB.
set(CACHESVC_PACKAGE_MAINTAINER "cachesvc maintainers <cachesvc@localhost>"
    CACHE STRING "Maintainer field of the Debian package")
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME cachesvc)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "flash-sale stock service")
set(CPACK_PACKAGE_DESCRIPTION
"cachesvc sells every unit of a flash sale exactly once, answers stock reads
from memory, and keeps its in-process cache, Redis Cluster and the database
(SQLite or PostgreSQL) consistent within a bound operators tune. The package
holds the service with its systemd unit and configuration, the standalone
invalidator, the flashsale load tester and cachesvc-devbroker.")
set(CPACK_PACKAGE_CONTACT "${CACHESVC_PACKAGE_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${CACHESVC_PACKAGE_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
# Depends: the libraries the binaries link (dpkg-shlibdeps), and adduser for
# postinst.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "postgresql, redis-server, sqlite3")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_SOURCE_DIR}/packaging/debian/conffiles
    ${CMAKE_SOURCE_DIR}/packaging/debian/postinst
    ${CMAKE_SOURCE_DIR}/packaging/debian/prerm
    ${CMAKE_SOURCE_DIR}/packaging/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# Install with DESTDIR and the real prefix, so install-system.cmake sees
# /usr and places /etc and /lib/systemd/system.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
# `package_source` (not used for releases) leaves out build trees and git.
set(CPACK_SOURCE_GENERATOR TGZ)
set(CPACK_SOURCE_IGNORE_FILES "/\\\\.git/" "/build[^/]*/" "\\\\.log$")
include(CPack)
