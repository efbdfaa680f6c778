# Tests of the invalidator (invalidator/). See docs/invalidator.md.
if(TARGET inv_core)
  add_executable(test_invalidator ${CMAKE_SOURCE_DIR}/tests/unit/test_invalidator.c)
  target_link_libraries(test_invalidator PRIVATE inv_core PkgConfig::CMOCKA)
  add_test(NAME invalidator_unit COMMAND test_invalidator)
  set_tests_properties(invalidator_unit PROPERTIES LABELS unit TIMEOUT 60)
endif()

# Integration: librdkafka's mock cluster in process, redis-server on
# 127.0.0.1:24100 (started and stopped by the test). One CTest entry per
# scenario (a cmocka name filter), so a failure names its scenario.
if(TARGET inv)
  add_library(inv_test_support STATIC
    ${CMAKE_SOURCE_DIR}/tests/integration/invalidator_support.c)
  target_link_libraries(inv_test_support PUBLIC inv PkgConfig::HIREDIS)
  add_executable(test_invalidator_kafka
    ${CMAKE_SOURCE_DIR}/tests/integration/invalidator_test.c)
  target_link_libraries(test_invalidator_kafka PRIVATE inv_test_support
    PkgConfig::CMOCKA)
  foreach(t due_time older_event_keeps_newer delay_change broadcast_two_groups
            redis_outage pending_cap_pauses broker_down consumer_restart)
    add_test(NAME invalidator_int_${t} COMMAND test_invalidator_kafka test_${t})
    set_tests_properties(invalidator_int_${t} PROPERTIES LABELS integration
      TIMEOUT 120 RESOURCE_LOCK redis_24100)
  endforeach()
endif()

# The benchmark driver (scripts/bench.d/invalidator): needs the cluster client.
if(TARGET inv AND TARGET rc)
  add_executable(invalidator_bench
    ${CMAKE_SOURCE_DIR}/tests/integration/invalidator_bench.c)
  target_link_libraries(invalidator_bench PRIVATE inv_test_support rc)
endif()
