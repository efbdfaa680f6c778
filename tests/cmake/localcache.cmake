# Tests and benchmark program of localcache/ (docs/localcache.md).
if(TARGET lc)
  # Zipf traces, trace replay and the plain LRU, shared by the unit test and
  # the benchmark.
  add_library(lc_trace STATIC ${CMAKE_SOURCE_DIR}/tests/bench/localcache/lc_trace.c)
  target_link_libraries(lc_trace PUBLIC lc m)

  add_executable(test_localcache ${CMAKE_SOURCE_DIR}/tests/unit/test_localcache.c)
  target_link_libraries(test_localcache PRIVATE lc lc_trace PkgConfig::CMOCKA Threads::Threads)
  add_test(NAME localcache_unit COMMAND test_localcache)
  set_tests_properties(localcache_unit PROPERTIES LABELS unit TIMEOUT 300)

  if(EXISTS ${CMAKE_SOURCE_DIR}/tests/bench/localcache/lc_bench.c)
    add_executable(lc_bench ${CMAKE_SOURCE_DIR}/tests/bench/localcache/lc_bench.c)
    target_link_libraries(lc_bench PRIVATE lc lc_trace Threads::Threads)
    if(CACHESVC_USE_JEMALLOC)
      target_link_libraries(lc_bench PRIVATE PkgConfig::JEMALLOC)
    endif()
  endif()
endif()
