# flashsale: the flash-sale load tester (tests/load/, issue 9).
add_subdirectory(${CMAKE_SOURCE_DIR}/tests/load ${CMAKE_BINARY_DIR}/tests/load)

add_executable(test_flashsale ${CMAKE_SOURCE_DIR}/tests/unit/test_flashsale.c)
target_link_libraries(test_flashsale PRIVATE flashsale_core PkgConfig::CMOCKA)
add_test(NAME flashsale_unit COMMAND test_flashsale)
set_tests_properties(flashsale_unit PROPERTIES LABELS unit TIMEOUT 60)

# The tester against the in-memory service (http-memserver and its
# faults): clean sale, wrong audits, retries, open-loop sweep. Ports
# 26100-26149.
add_test(NAME flashsale_fake
         COMMAND bash ${CMAKE_SOURCE_DIR}/tests/integration/flashsale_fake.sh
                 $<TARGET_FILE:flashsale> $<TARGET_FILE:http-memserver>)
set_tests_properties(flashsale_fake PROPERTIES LABELS integration TIMEOUT 180)

# A short sale against the real service (SQLite, embedded Kafka, a local
# Redis Cluster). Ports 26200-26299.
add_test(NAME flashsale_service
         COMMAND bash ${CMAKE_SOURCE_DIR}/tests/integration/flashsale_service.sh
                 $<TARGET_FILE:flashsale> $<TARGET_FILE:cachesvc>)
set_tests_properties(flashsale_service PROPERTIES LABELS integration TIMEOUT 300)
# scripts/demo at a reduced size, on the binaries of this build tree.
add_test(NAME flashsale_demo_small
         COMMAND ${CMAKE_SOURCE_DIR}/scripts/demo --small --build-dir ${CMAKE_BINARY_DIR})
set_tests_properties(flashsale_demo_small PROPERTIES LABELS integration TIMEOUT 300)
# scripts/demo at full size, interrupted by SIGINT to its process group one
# second into the sale: exit 130, the part sold verified, nothing left
# running. Ports 26600-26620 (the demo's); skipped (exit 77) when
# something else holds them.
add_test(NAME flashsale_demo_interrupt
         COMMAND bash ${CMAKE_SOURCE_DIR}/tests/integration/flashsale_demo_interrupt.sh
                 ${CMAKE_BINARY_DIR})
set_tests_properties(flashsale_demo_interrupt PROPERTIES LABELS integration TIMEOUT 300
                     SKIP_RETURN_CODE 77)

# Two instances sharing PostgreSQL, Redis Cluster and a dev Kafka broker:
# a sweep across both, stale reads per instance. Ports 26300-26399.
add_test(NAME flashsale_two_instances
         COMMAND bash ${CMAKE_SOURCE_DIR}/tests/integration/flashsale_two_instances.sh
                 $<TARGET_FILE:flashsale> $<TARGET_FILE:cachesvc>
                 $<TARGET_FILE:cachesvc-devbroker>)
set_tests_properties(flashsale_two_instances PROPERTIES LABELS integration TIMEOUT 300)

# The fleet under faults (scripts/chaos --quick, docs/chaos.md): three
# instances, PostgreSQL, a 3+3 Redis Cluster and the dev broker through
# every fault kind once while a sale runs. Label chaos: scripts/test runs
# it alone, after the integration tests. Ports 27000-27099.
add_test(NAME chaos_quick
         COMMAND bash ${CMAKE_SOURCE_DIR}/scripts/chaos --quick --out ${CMAKE_BINARY_DIR}/chaos-out)
set_tests_properties(chaos_quick PROPERTIES LABELS chaos TIMEOUT 600
                     ENVIRONMENT "CACHESVC_BUILD=${CMAKE_BINARY_DIR}")
