# Tests of api/ (HTTP server, router, limits, the API contract).
if(NOT FUZZ)
  add_executable(test_api_parse unit/test_api_parse.c)
  target_link_libraries(test_api_parse PRIVATE http_core memservice PkgConfig::CMOCKA)
  add_test(NAME api_unit_parse COMMAND test_api_parse)
  set_tests_properties(api_unit_parse PROPERTIES LABELS unit TIMEOUT 60
    ENVIRONMENT "CACHESVC_SOURCE_DIR=${CMAKE_SOURCE_DIR}")

  # The API contract through a real OpenAPI linter (Redocly CLI, installed by
  # scripts/setup): any error or warning fails.
  add_test(NAME api_openapi_lint
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/integration/api_openapi_lint.sh ${CMAKE_SOURCE_DIR})
  set_tests_properties(api_openapi_lint PROPERTIES LABELS unit TIMEOUT 60)

  # The server on the runtime over loopback, ports 21400-21420.
  add_executable(test_api_server unit/test_api_server.c)
  target_link_libraries(test_api_server PRIVATE http memservice PkgConfig::CMOCKA)
  add_test(NAME api_unit_server COMMAND test_api_server)
  set_tests_properties(api_unit_server PROPERTIES LABELS unit TIMEOUT 120)

  # Integration: http-memserver (tests/support/) on 127.0.0.1, ports
  # 21200-21211.
  add_executable(api_server_it integration/api_server.c)
  target_link_libraries(api_server_it PRIVATE Threads::Threads)
  add_test(NAME api_integration_server
    COMMAND api_server_it $<TARGET_FILE:http-memserver> 21200)
  add_test(NAME api_integration_curl
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/integration/api_curl.sh $<TARGET_FILE:http-memserver> 21210)
  set_tests_properties(api_integration_server api_integration_curl PROPERTIES
    LABELS integration TIMEOUT 120)
endif()

if(FUZZ)
  # The api sources are compiled into the targets so libFuzzer's coverage
  # instrumentation reaches them, with the in-memory service they serve;
  # so are the runtime's, with its AddressSanitizer fiber annotations
  # (RT_ASAN), because every input runs on a coroutine of the production
  # stack size (fuzz/fuzz_co.h).
  get_target_property(_api_src http_core SOURCES)
  list(TRANSFORM _api_src PREPEND ${CMAKE_SOURCE_DIR}/api/ OUTPUT_VARIABLE _api_fuzz_src)
  list(APPEND _api_fuzz_src ${CMAKE_SOURCE_DIR}/tests/support/memservice.c)
  get_target_property(_kit_src kit SOURCES)
  list(TRANSFORM _kit_src PREPEND ${CMAKE_SOURCE_DIR}/kit/)
  list(APPEND _api_fuzz_src ${_kit_src})
  get_target_property(_rt_src rt SOURCES)
  list(TRANSFORM _rt_src PREPEND ${CMAKE_SOURCE_DIR}/runtime/ OUTPUT_VARIABLE _rt_fuzz_src)
  # Bodies up to the default 64 KiB limit, for nesting as deep as it allows.
  set(_fuzz_http_args)
  set(_fuzz_json_args -max_len=66000)
  foreach(t http json)
    add_executable(fuzz_${t} fuzz/fuzz_${t}.c ${_api_fuzz_src} ${_rt_fuzz_src})
    target_compile_definitions(fuzz_${t} PRIVATE RT_ASAN=1)
    target_compile_options(fuzz_${t} PRIVATE $<$<COMPILE_LANGUAGE:C>:-fsanitize=fuzzer,address,undefined>)
    target_link_options(fuzz_${t} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(fuzz_${t} PRIVATE http_parser_dep Threads::Threads m)
    file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fuzz_${t}_corpus)
    add_test(NAME api_fuzz_${t}
      COMMAND fuzz_${t} -max_total_time=60 -rss_limit_mb=2048 -timeout=10 ${_fuzz_${t}_args}
              ${CMAKE_CURRENT_BINARY_DIR}/fuzz_${t}_corpus ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/${t})
    set_tests_properties(api_fuzz_${t} PROPERTIES LABELS fuzz TIMEOUT 180)
  endforeach()
endif()
