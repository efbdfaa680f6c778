# Tests of cachesvc/store/ (stores, schema, per-item batcher).
# test_store runs the decision rules and the SQLite backend without the
# runtime (its sources compiled in, two runtime calls stubbed).
set(STORE_SRC ${CMAKE_SOURCE_DIR}/cachesvc/store)
add_executable(test_store unit/test_store.c unit/test_store_rtstub.c
  ${STORE_SRC}/decide.c ${STORE_SRC}/schema.c ${STORE_SRC}/sqlite.c)
target_link_libraries(test_store PRIVATE PkgConfig::SQLITE3 PkgConfig::CMOCKA Threads::Threads)
add_test(NAME store_unit_rules COMMAND test_store)
set_tests_properties(store_unit_rules PROPERTIES LABELS unit TIMEOUT 120)
