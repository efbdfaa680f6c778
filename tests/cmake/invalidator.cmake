# Tests of the invalidator (invalidator/). See docs/invalidator.md.
add_executable(test_invalidator ${CMAKE_SOURCE_DIR}/tests/unit/test_invalidator.c)
target_link_libraries(test_invalidator PRIVATE inv_core PkgConfig::CMOCKA)
add_test(NAME invalidator_unit COMMAND test_invalidator)
set_tests_properties(invalidator_unit PROPERTIES LABELS unit TIMEOUT 60)

# Integration: librdkafka's mock cluster in process, a 3-master Redis Cluster
# on 127.0.0.1:24100-24102 (scripts/redis-cluster, started and stopped by the
# test) reached through the cluster client; the dev broker and the
# standalone invalidator binary as child processes.
add_library(inv_test_support STATIC
  ${CMAKE_SOURCE_DIR}/tests/support/invalidator_support.c)
target_link_libraries(inv_test_support PUBLIC inv rc PkgConfig::HIREDIS)
add_executable(test_invalidator_kafka
  ${CMAKE_SOURCE_DIR}/tests/integration/invalidator_kafka.c)
target_link_libraries(test_invalidator_kafka PRIVATE inv_test_support
  PkgConfig::CMOCKA)
target_compile_definitions(test_invalidator_kafka PRIVATE
  CACHESVC_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
  INV_TEST_DEVBROKER="$<TARGET_FILE:cachesvc-devbroker>"
  INV_TEST_INVALIDATOR="$<TARGET_FILE:invalidator>")
add_dependencies(test_invalidator_kafka cachesvc-devbroker invalidator)
# All scenarios share one cluster start (about 15 s on a busy machine);
# cmocka's output names a failing scenario, and
# `test_invalidator_kafka test_<name>` runs one alone.
add_test(NAME invalidator_integration COMMAND test_invalidator_kafka)
set_tests_properties(invalidator_integration PROPERTIES LABELS integration
  TIMEOUT 600 RESOURCE_LOCK invalidator_redis_24100)

# The librdkafka properties passed through (inv_config.kafka_props).
add_executable(test_invalidator_props ${CMAKE_SOURCE_DIR}/tests/unit/test_invalidator_props.c)
target_link_libraries(test_invalidator_props PRIVATE inv PkgConfig::CMOCKA)
add_test(NAME invalidator_props COMMAND test_invalidator_props)
set_tests_properties(invalidator_props PROPERTIES LABELS unit TIMEOUT 60)

# The benchmark driver (scripts/bench.d/invalidator): needs the cluster client.
add_executable(invalidator_bench
  ${CMAKE_SOURCE_DIR}/tests/integration/invalidator_bench.c)
target_link_libraries(invalidator_bench PRIVATE inv_test_support)
