# Tests of api/ (HTTP server, router, limits, the API contract).
if(TARGET http_core)
  add_executable(test_api_parse unit/test_api_parse.c)
  target_link_libraries(test_api_parse PRIVATE http_core PkgConfig::CMOCKA)
  add_test(NAME api_unit_parse COMMAND test_api_parse)
  set_tests_properties(api_unit_parse PROPERTIES LABELS unit TIMEOUT 60
    ENVIRONMENT "CACHESVC_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
endif()
