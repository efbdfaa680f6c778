# Tests of the cachesvc service (cachesvc/). See docs/service.md.
if(TARGET svc_core)
  add_executable(test_service_config ${CMAKE_SOURCE_DIR}/tests/unit/test_service_config.c)
  target_link_libraries(test_service_config PRIVATE svc_core PkgConfig::CMOCKA)
  add_test(NAME service_unit_config COMMAND test_service_config)
  set_tests_properties(service_unit_config PROPERTIES LABELS unit TIMEOUT 60)
endif()
