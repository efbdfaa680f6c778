# Tests of the operator files under ops/: the Prometheus alert rules and
# their unit tests, the Grafana dashboard, and the metric names both use,
# checked against a live scrape of cachesvc (ops/check; docs/operations.md).
# Needs promtool (Debian's prometheus) and python3-yaml: scripts/setup.
# Ports 29xxx.
set(OPS_CHECK ${CMAKE_SOURCE_DIR}/ops/check)

add_test(NAME ops_unit_rules COMMAND ${OPS_CHECK} rules)
set_tests_properties(ops_unit_rules PROPERTIES LABELS unit TIMEOUT 60)

add_test(NAME ops_unit_dashboard COMMAND ${OPS_CHECK} dashboard)
set_tests_properties(ops_unit_dashboard PROPERTIES LABELS unit TIMEOUT 60)

# A Redis Cluster and cachesvc on loopback, one scrape: a few seconds.
add_test(NAME ops_unit_names COMMAND ${OPS_CHECK} names --bin $<TARGET_FILE:cachesvc>)
set_tests_properties(ops_unit_names PROPERTIES LABELS unit TIMEOUT 120)

# Prometheus scraping cachesvc during a 20 s sale; every dashboard and
# alert expression evaluated through its HTTP API.
add_test(NAME ops_int_prometheus
         COMMAND ${OPS_CHECK} live --bin $<TARGET_FILE:cachesvc> --flashsale $<TARGET_FILE:flashsale>)
set_tests_properties(ops_int_prometheus PROPERTIES LABELS integration TIMEOUT 300)
