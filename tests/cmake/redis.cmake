# Tests of the Redis Cluster client (cachesvc/redis/). Ports 22000-22999.
add_executable(test_redis ${CMAKE_SOURCE_DIR}/tests/unit/test_redis.c)
target_link_libraries(test_redis PRIVATE PkgConfig::HIREDIS PkgConfig::CMOCKA)
add_test(NAME redis_unit COMMAND test_redis)
set_tests_properties(redis_unit PROPERTIES LABELS unit TIMEOUT 60)
