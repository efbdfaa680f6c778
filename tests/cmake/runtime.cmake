# Tests of the coroutine runtime (runtime/). See docs/runtime.md.
if(TARGET rt)
  add_executable(test_runtime ${CMAKE_SOURCE_DIR}/tests/unit/test_runtime.c)
  target_link_libraries(test_runtime PRIVATE rt PkgConfig::CMOCKA m)
  add_test(NAME runtime_unit COMMAND test_runtime)
  set_tests_properties(runtime_unit PROPERTIES LABELS unit TIMEOUT 300)
endif()
