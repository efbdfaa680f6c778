# flashsale: the flash-sale load tester (tests/load/, issue 9).
add_subdirectory(${CMAKE_SOURCE_DIR}/tests/load ${CMAKE_BINARY_DIR}/tests/load)

add_executable(test_flashsale ${CMAKE_SOURCE_DIR}/tests/unit/test_flashsale.c)
target_link_libraries(test_flashsale PRIVATE flashsale_core PkgConfig::CMOCKA)
add_test(NAME flashsale_unit COMMAND test_flashsale)
set_tests_properties(flashsale_unit PROPERTIES LABELS unit TIMEOUT 60)
