# Tests of the invalidator (invalidator/). See docs/invalidator.md.
if(TARGET inv_core)
  add_executable(test_invalidator ${CMAKE_SOURCE_DIR}/tests/unit/test_invalidator.c)
  target_link_libraries(test_invalidator PRIVATE inv_core PkgConfig::CMOCKA)
  add_test(NAME invalidator_unit COMMAND test_invalidator)
  set_tests_properties(invalidator_unit PROPERTIES LABELS unit TIMEOUT 60)
endif()
