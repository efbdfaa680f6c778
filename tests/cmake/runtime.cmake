# Tests of the coroutine runtime (runtime/). See docs/runtime.md.
if(TARGET rt)
  add_executable(test_runtime ${CMAKE_SOURCE_DIR}/tests/unit/test_runtime.c)
  target_link_libraries(test_runtime PRIVATE rt PkgConfig::CMOCKA m)
  add_test(NAME runtime_unit COMMAND test_runtime)
  set_tests_properties(runtime_unit PROPERTIES LABELS unit TIMEOUT 300)
endif()

# The benchmark driver of scripts/bench runtime (not a test).
if(TARGET rt)
  add_executable(bench_runtime ${CMAKE_SOURCE_DIR}/tests/bench/runtime/bench_runtime.c)
  target_link_libraries(bench_runtime PRIVATE rt)
endif()
