# Tests of cachesvc/store/ (stores, schema, per-item batcher).
# test_store runs the decision rules and the SQLite backend without the
# runtime (its sources compiled in, two runtime calls stubbed).
set(STORE_SRC ${CMAKE_SOURCE_DIR}/cachesvc/store)
# The PostgreSQL backend's files (pg_int.h says what each holds).
set(STORE_PG_SRC ${STORE_SRC}/pg.c ${STORE_SRC}/pg_conn.c ${STORE_SRC}/pg_batch.c ${STORE_SRC}/pg_known.c
  ${STORE_SRC}/pg_read.c)
add_executable(test_store unit/test_store.c support/store_rtstub.c
  ${CMAKE_SOURCE_DIR}/runtime/log.c ${STORE_SRC}/decide.c ${STORE_SRC}/schema.c ${STORE_SRC}/sqlite.c
  ${STORE_SRC}/soldout.c)
target_link_libraries(test_store PRIVATE kit PkgConfig::SQLITE3 PkgConfig::CMOCKA Threads::Threads)
add_test(NAME store_unit_rules COMMAND test_store)
set_tests_properties(store_unit_rules PROPERTIES LABELS unit TIMEOUT 120)

# The PostgreSQL store against a real server (scripts/postgres, port 23100),
# on the same runtime stand-in.
add_executable(test_store_pg integration/store_pg.c support/store_rtstub.c
  ${CMAKE_SOURCE_DIR}/runtime/log.c ${STORE_SRC}/store.c ${STORE_SRC}/decide.c ${STORE_SRC}/schema.c ${STORE_SRC}/sqlite.c
  ${STORE_PG_SRC} ${STORE_SRC}/soldout.c)
target_compile_definitions(test_store_pg PRIVATE STORE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
target_link_libraries(test_store_pg PRIVATE kit PkgConfig::SQLITE3 PkgConfig::LIBPQ
  PkgConfig::CMOCKA Threads::Threads)
add_test(NAME store_integration_pg COMMAND test_store_pg)
set_tests_properties(store_integration_pg PROPERTIES LABELS integration TIMEOUT 180)

# On the real runtime: concurrency through the batcher (store.c included by
# the test, so the store's other sources are compiled in, not the library).
set(STORE_RT_SRC ${STORE_SRC}/decide.c ${STORE_SRC}/schema.c ${STORE_SRC}/sqlite.c
  ${STORE_PG_SRC} ${STORE_SRC}/soldout.c)
add_executable(test_store_rt unit/test_store_rt.c ${STORE_RT_SRC})
target_link_libraries(test_store_rt PRIVATE kit rt PkgConfig::SQLITE3 PkgConfig::LIBPQ
  PkgConfig::CMOCKA Threads::Threads)
add_test(NAME store_unit_concurrent COMMAND test_store_rt)
set_tests_properties(store_unit_concurrent PROPERTIES LABELS unit TIMEOUT 180)

# On the real runtime against PostgreSQL (port 23110) and SQLite: the
# concurrent model, the server stopped mid-load, kill -9 mid-load.
add_executable(test_store_rt_pg integration/store_rt.c ${STORE_RT_SRC})
target_compile_definitions(test_store_rt_pg PRIVATE STORE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
target_link_libraries(test_store_rt_pg PRIVATE kit rt PkgConfig::SQLITE3 PkgConfig::LIBPQ
  PkgConfig::CMOCKA Threads::Threads)
add_test(NAME store_integration_concurrent COMMAND test_store_rt_pg)
set_tests_properties(store_integration_concurrent PROPERTIES LABELS integration TIMEOUT 300)

# The benchmark driver of scripts/bench store (not a test): the store's
# batched decrements and their anchors, the bare batch transaction loops.
add_executable(store_bench ${CMAKE_SOURCE_DIR}/tests/bench/store/store_bench.c
  ${CMAKE_SOURCE_DIR}/tests/bench/store/store_bare.c)
target_link_libraries(store_bench PRIVATE store rt)
if(CACHESVC_USE_JEMALLOC)
  target_link_libraries(store_bench PRIVATE PkgConfig::JEMALLOC)
endif()
