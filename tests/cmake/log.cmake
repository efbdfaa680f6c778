# The one log stream: the runtime's log hook (runtime/log.c: default
# handler, quoting, redaction) and the service's logger as its handler
# (cachesvc/log.c: module and request id, rate limit). See docs/service.md,
# "Logs".
add_executable(test_service_log ${CMAKE_SOURCE_DIR}/tests/unit/test_service_log.c)
target_link_libraries(test_service_log PRIVATE svc_core rt PkgConfig::CMOCKA Threads::Threads)
add_test(NAME service_unit_log COMMAND test_service_log)
set_tests_properties(service_unit_log PROPERTIES LABELS unit TIMEOUT 60)

# The binary's log stream end to end: PostgreSQL (stopped mid-run), a Redis
# Cluster, the embedded Kafka. Ports 25700-25739.
add_test(NAME service_int_logs COMMAND bash ${CMAKE_SOURCE_DIR}/tests/integration/service_logs.sh)
set_tests_properties(service_int_logs PROPERTIES LABELS integration TIMEOUT 240
  SKIP_RETURN_CODE 77
  ENVIRONMENT "CACHESVC_BIN=$<TARGET_FILE:cachesvc>;SRC=${CMAKE_SOURCE_DIR}")
