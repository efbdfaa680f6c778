# Tests of the systemd integration and the Debian package (packaging/,
# cachesvc/sd_notify.c). See docs/operations.md, "Installing". Port range:
# 28xxx.
add_executable(test_packaging_sd_notify ${CMAKE_SOURCE_DIR}/tests/unit/test_packaging_sd_notify.c)
target_link_libraries(test_packaging_sd_notify PRIVATE svc_core PkgConfig::CMOCKA)
add_test(NAME packaging_unit_sd_notify COMMAND test_packaging_sd_notify)
set_tests_properties(packaging_unit_sd_notify PROPERTIES LABELS unit TIMEOUT 60)

# The integration tests use every installed binary.
add_executable(packaging_notify_listen
               ${CMAKE_SOURCE_DIR}/tests/support/packaging_notify_listen.c)
set(PKG_TEST_ENV
    "SRC=${CMAKE_SOURCE_DIR}"
    "BUILD_DIR=${CMAKE_BINARY_DIR}"
    "VERSION=${PROJECT_VERSION}"
    "CACHESVC_BIN=$<TARGET_FILE:cachesvc>"
    "NOTIFY_LISTEN=$<TARGET_FILE:packaging_notify_listen>")
if(NOT CACHESVC_USE_JEMALLOC)
  list(APPEND PKG_TEST_ENV "CACHESVC_NO_JEMALLOC=1")
endif()
# tests/integration/packaging_<name>.sh as packaging_int_<name>, timeouts
# in seconds. The package, the install tree and the sandbox check are
# about release binaries: a sanitizer build has its own runtime (libasan in
# Depends, its own system calls), so it runs only the notification
# protocol.
set(PKG_TESTS notify:120)
if(NOT (ASAN OR TSAN OR UBSAN))
  list(APPEND PKG_TESTS deb:300 install:120 sandbox:120)
endif()
cachesvc_script_tests(packaging "${PKG_TEST_ENV}" ${PKG_TESTS})
