# Tests of the cachesvc service (cachesvc/). See docs/service.md.
add_executable(test_service_config ${CMAKE_SOURCE_DIR}/tests/unit/test_service_config.c)
target_link_libraries(test_service_config PRIVATE svc_core PkgConfig::CMOCKA)
add_test(NAME service_unit_config COMMAND test_service_config)
set_tests_properties(service_unit_config PROPERTIES LABELS unit TIMEOUT 60)

# The metric conventions (docs/metrics.md): bounds, process and health
# families, the http_requests_total series at zero against api/openapi.yaml.
add_executable(test_service_metrics ${CMAKE_SOURCE_DIR}/tests/unit/test_service_metrics.c)
target_link_libraries(test_service_metrics PRIVATE svc_core http_core PkgConfig::CMOCKA)
add_test(NAME service_unit_metrics COMMAND test_service_metrics)
set_tests_properties(service_unit_metrics PROPERTIES LABELS unit TIMEOUT 60
                     ENVIRONMENT "CACHESVC_SOURCE_DIR=${CMAKE_SOURCE_DIR}")

add_executable(test_service_paths ${CMAKE_SOURCE_DIR}/tests/unit/test_service_paths.c)
target_link_libraries(test_service_paths PRIVATE svc_service PkgConfig::CMOCKA)
add_test(NAME service_unit_paths COMMAND test_service_paths)
set_tests_properties(service_unit_paths PROPERTIES LABELS unit TIMEOUT 120)

add_executable(service_client ${CMAKE_SOURCE_DIR}/tests/support/service_client.c)
target_link_libraries(service_client PRIVATE Threads::Threads)
set(SVC_TEST_ENV
    "CACHESVC_BIN=$<TARGET_FILE:cachesvc>"
    "SERVICE_CLIENT=$<TARGET_FILE:service_client>"
    "DEVBROKER=$<TARGET_FILE:cachesvc-devbroker>"
    "INVALIDATOR_BIN=$<TARGET_FILE:invalidator>"
    "SRC=${CMAKE_SOURCE_DIR}")
if(NOT CACHESVC_USE_JEMALLOC)
  list(APPEND SVC_TEST_ENV "CACHESVC_NO_JEMALLOC=1")
endif()
# tests/integration/service_<name>.sh as service_int_<name>, timeouts in
# seconds.
cachesvc_script_tests(service "${SVC_TEST_ENV}"
  sqlite:120 errors:180 hostile:180 config:60 signals:120 ops:120 metrics:240
  connectivity:300 pg_redis:300 two_instances:400)

# The stack a connection coroutine's code uses, library calls included.
add_executable(test_service_stack_budget ${CMAKE_SOURCE_DIR}/tests/unit/test_service_stack_budget.c)
target_link_libraries(test_service_stack_budget PRIVATE svc_service memservice PkgConfig::CJSON
                      PkgConfig::HIREDIS PkgConfig::LIBPQ PkgConfig::CMOCKA)
add_test(NAME service_unit_stack_budget COMMAND test_service_stack_budget)
set_tests_properties(service_unit_stack_budget PROPERTIES LABELS unit TIMEOUT 60)
