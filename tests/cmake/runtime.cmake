# Tests of the coroutine runtime (runtime/). See docs/runtime.md.
add_executable(test_runtime ${CMAKE_SOURCE_DIR}/tests/unit/test_runtime.c)
target_link_libraries(test_runtime PRIVATE rt PkgConfig::CMOCKA m)
add_test(NAME runtime_unit COMMAND test_runtime)
set_tests_properties(runtime_unit PROPERTIES LABELS unit TIMEOUT 600)

# The same tests cross-compiled for aarch64 and run under qemu-user;
# skipped (exit 77) with a message when the cross tools are absent
# (scripts/setup installs them). Plain builds only.
if(NOT ASAN AND NOT TSAN AND NOT UBSAN)
  add_test(NAME runtime_unit_aarch64
           COMMAND bash ${CMAKE_SOURCE_DIR}/tests/unit/test_runtime_aarch64.sh
                   ${CMAKE_SOURCE_DIR} ${CMAKE_CURRENT_BINARY_DIR}/runtime_aarch64)
  set_tests_properties(runtime_unit_aarch64 PROPERTIES LABELS unit TIMEOUT 300
                       SKIP_RETURN_CODE 77)
endif()

# The benchmark driver of scripts/bench runtime (not a test).
add_executable(bench_runtime ${CMAKE_SOURCE_DIR}/tests/bench/runtime/bench_runtime.c)
target_link_libraries(bench_runtime PRIVATE rt)
