# Tests, fuzz target and benchmark program of localcache/ (docs/localcache.md).
if(NOT FUZZ)
  # Zipf traces, trace replay and the plain LRU, shared by the unit test and
  # the benchmark.
  add_library(lc_trace STATIC ${CMAKE_SOURCE_DIR}/tests/bench/localcache/lc_trace.c)
  target_link_libraries(lc_trace PUBLIC lc m)

  add_executable(test_localcache ${CMAKE_SOURCE_DIR}/tests/unit/test_localcache.c)
  target_link_libraries(test_localcache PRIVATE lc lc_trace PkgConfig::CMOCKA Threads::Threads)
  add_test(NAME localcache_unit COMMAND test_localcache)
  set_tests_properties(localcache_unit PROPERTIES LABELS unit TIMEOUT 300)

  add_executable(lc_bench ${CMAKE_SOURCE_DIR}/tests/bench/localcache/lc_bench.c)
  target_link_libraries(lc_bench PRIVATE lc lc_trace Threads::Threads)
  if(CACHESVC_USE_JEMALLOC)
    target_link_libraries(lc_bench PRIVATE PkgConfig::JEMALLOC)
  endif()
endif()

if(FUZZ)
  # The cache's sources are compiled into the target so that libFuzzer's
  # coverage reaches them.
  add_executable(fuzz_localcache ${CMAKE_SOURCE_DIR}/tests/unit/test_localcache_fuzz.c
                 ${CMAKE_SOURCE_DIR}/localcache/lc.c ${CMAKE_SOURCE_DIR}/localcache/lc_policy.c)
  target_compile_options(fuzz_localcache PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz_localcache PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_localcache PRIVATE Threads::Threads)
  file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fuzz_localcache_corpus)
  add_test(NAME localcache_fuzz
    COMMAND fuzz_localcache -max_total_time=60 -rss_limit_mb=2048 -timeout=10 -max_len=4096
            ${CMAKE_CURRENT_BINARY_DIR}/fuzz_localcache_corpus)
  set_tests_properties(localcache_fuzz PROPERTIES LABELS fuzz TIMEOUT 180)
endif()
