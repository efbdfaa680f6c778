# Tests of api/ (HTTP server, router, limits, the API contract).
set(API_CORE_SOURCES buf.c config.c conn.c handlers.c metrics.c response.c router.c memservice.c)

if(TARGET http_core AND NOT FUZZ)
  add_executable(test_api_parse unit/test_api_parse.c)
  target_link_libraries(test_api_parse PRIVATE http_core PkgConfig::CMOCKA)
  add_test(NAME api_unit_parse COMMAND test_api_parse)
  set_tests_properties(api_unit_parse PROPERTIES LABELS unit TIMEOUT 60
    ENVIRONMENT "CACHESVC_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
endif()

if(FUZZ)
  # The api sources are compiled into the target so libFuzzer's coverage
  # instrumentation reaches them.
  list(TRANSFORM API_CORE_SOURCES PREPEND ${CMAKE_SOURCE_DIR}/api/ OUTPUT_VARIABLE _api_fuzz_src)
  add_executable(fuzz_http fuzz/fuzz_http.c ${_api_fuzz_src})
  target_compile_options(fuzz_http PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz_http PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_http PRIVATE http_parser_dep PkgConfig::CJSON Threads::Threads m)
  file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fuzz_http_corpus)
  add_test(NAME api_fuzz_http
    COMMAND fuzz_http -max_total_time=60 -rss_limit_mb=2048 -timeout=10
            ${CMAKE_CURRENT_BINARY_DIR}/fuzz_http_corpus ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/http)
  set_tests_properties(api_fuzz_http PROPERTIES LABELS fuzz TIMEOUT 180)
endif()

# The server on the runtime over loopback, ports 21400-21420.
if(TARGET http AND NOT FUZZ)
  add_executable(test_api_server unit/test_api_server.c)
  target_link_libraries(test_api_server PRIVATE http PkgConfig::CMOCKA)
  add_test(NAME api_unit_server COMMAND test_api_server)
  set_tests_properties(api_unit_server PROPERTIES LABELS unit TIMEOUT 120)
endif()

# Integration: the server binary on 127.0.0.1, ports 21200-21210.
if(TARGET http-memserver AND NOT FUZZ)
  add_executable(api_server_it integration/api_server.c)
  target_link_libraries(api_server_it PRIVATE Threads::Threads)
  add_test(NAME api_integration_server
    COMMAND api_server_it $<TARGET_FILE:http-memserver> 21200)
  add_test(NAME api_integration_curl
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/integration/api_curl.sh $<TARGET_FILE:http-memserver> 21210)
  set_tests_properties(api_integration_server api_integration_curl PROPERTIES
    LABELS integration TIMEOUT 120)
endif()
