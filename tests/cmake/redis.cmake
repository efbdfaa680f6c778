# Tests of the Redis Cluster client (cachesvc/redis/). Ports 22000-22999.
add_executable(test_redis ${CMAKE_SOURCE_DIR}/tests/unit/test_redis.c)
target_link_libraries(test_redis PRIVATE PkgConfig::HIREDIS PkgConfig::CMOCKA)
add_test(NAME redis_unit COMMAND test_redis)
set_tests_properties(redis_unit PROPERTIES LABELS unit TIMEOUT 60)

# Integration cases against real redis-server processes (and fake ones),
# each started in a fresh temp dir by tests/support/redis_run.sh. They use
# the raw command API of rc_int.h, hence hiredis's headers.
add_executable(redis_cluster_test ${CMAKE_SOURCE_DIR}/tests/integration/redis_cluster.c)
target_link_libraries(redis_cluster_test PRIVATE rc rt PkgConfig::HIREDIS)
set(_redis_cases routing:22100:120 reshard:22110:300 failover:22120:300
                 standalone:22130:60 faults:22140:60)
foreach(_c ${_redis_cases})
  string(REPLACE ":" ";" _p ${_c})
  list(GET _p 0 _name)
  list(GET _p 1 _port)
  list(GET _p 2 _timeout)
  add_test(NAME redis_${_name}
           COMMAND ${CMAKE_SOURCE_DIR}/tests/support/redis_run.sh
                   $<TARGET_FILE:redis_cluster_test> ${_name} ${_port})
  set_tests_properties(redis_${_name} PROPERTIES LABELS integration TIMEOUT ${_timeout})
endforeach()

# Authentication (AUTH with an ACL user) on every connection, against a
# cluster started with a password.
add_executable(redis_auth_test ${CMAKE_SOURCE_DIR}/tests/integration/redis_auth.c)
target_link_libraries(redis_auth_test PRIVATE rc rt PkgConfig::HIREDIS)
add_test(NAME redis_auth
         COMMAND ${CMAKE_SOURCE_DIR}/tests/integration/redis_auth.sh
                 $<TARGET_FILE:redis_auth_test> 22150)
set_tests_properties(redis_auth PROPERTIES LABELS integration TIMEOUT 180)

# The throughput benchmark's driver (scripts/bench.d/redis runs it).
add_executable(redis_bench ${CMAKE_SOURCE_DIR}/tests/integration/redis_bench.c)
target_link_libraries(redis_bench PRIVATE rc rt PkgConfig::HIREDIS)
