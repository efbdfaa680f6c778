/*
 * store_bare.h: the store bench's anchors (store_bare.c). Each runs the
 * transaction of one store batch of `batch` decrements (qty 1, one user
 * per order, no idempotency key) of item sku, whose row must exist (the
 * store created the schema and the row), in a plain loop on one
 * connection for `seconds` seconds, then checks that the item's stock
 * went down by exactly the decrements committed. Prints name=value lines
 * (bare_decr_per_s, bare_tx_per_s, batch, transactions) on stdout and
 * returns 0, or says why on stderr and returns 1.
 */
#ifndef CACHESVC_TESTS_BENCH_STORE_BARE_H
#define CACHESVC_TESTS_BENCH_STORE_BARE_H

/* On the SQLite database file path. */
int bare_sqlite(const char *path, const char *sku, int batch, int seconds);

/* On the PostgreSQL database of url (a libpq URL). */
int bare_pg(const char *url, const char *sku, int batch, int seconds);

#endif /* CACHESVC_TESTS_BENCH_STORE_BARE_H */
