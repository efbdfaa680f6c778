/*
 * schema.c: the versioned schema migrations, one entry per version and
 * dialect. store_open() applies every version above the one recorded in
 * schema_version, each in its own transaction; entries are never edited
 * once released, only appended.
 */
#include <stddef.h>

#include "cachesvc/store/store_int.h"

/* Version 1: items, orders, per-user purchases, outbox.
 *
 * Every batch appends its orders, so their write-ahead log volume is what
 * a batch's fsync pays for: PostgreSQL keeps orders clustered on
 * (sku, order_id), one index serving both uniqueness and the audit, and
 * indexes only the idempotency keys that exist. purchases holds each
 * user's total per item and is kept only while the item has a per-user
 * limit; when a limit is switched on, the batch rebuilds it from orders. */
static const char sqlite_v1[] =
    "CREATE TABLE items ("
    " sku TEXT PRIMARY KEY,"
    " stock INTEGER NOT NULL CHECK (stock >= 0),"
    " version INTEGER NOT NULL CHECK (version >= 0),"
    " per_user_limit INTEGER NOT NULL DEFAULT 0 CHECK (per_user_limit >= 0),"
    " sale_starts_at_ms INTEGER NOT NULL DEFAULT 0,"
    " units_supplied INTEGER NOT NULL DEFAULT 0,"
    " updated_at_ms INTEGER NOT NULL DEFAULT 0"
    ") WITHOUT ROWID;"
    "CREATE TABLE orders ("
    " order_id INTEGER PRIMARY KEY,"
    " sku TEXT NOT NULL,"
    " user_id TEXT NOT NULL,"
    " qty INTEGER NOT NULL CHECK (qty > 0),"
    " idempotency_key TEXT,"
    " created_at_ms INTEGER NOT NULL,"
    " stock_after INTEGER NOT NULL,"
    " version_after INTEGER NOT NULL"
    ");"
    "CREATE INDEX orders_sku ON orders (sku, user_id);"
    "CREATE UNIQUE INDEX orders_key ON orders (idempotency_key)"
    " WHERE idempotency_key IS NOT NULL;"
    "CREATE TABLE purchases ("
    " sku TEXT NOT NULL,"
    " user_id TEXT NOT NULL,"
    " qty INTEGER NOT NULL CHECK (qty >= 0),"
    " PRIMARY KEY (sku, user_id)"
    ") WITHOUT ROWID;"
    "CREATE TABLE outbox ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " sku TEXT NOT NULL,"
    " version INTEGER NOT NULL,"
    " committed_at_ms INTEGER NOT NULL"
    ");";

static const char pg_v1[] =
    "CREATE TABLE items ("
    " sku TEXT PRIMARY KEY,"
    " stock BIGINT NOT NULL CHECK (stock >= 0),"
    " version BIGINT NOT NULL CHECK (version >= 0),"
    " per_user_limit BIGINT NOT NULL DEFAULT 0 CHECK (per_user_limit >= 0),"
    " sale_starts_at_ms BIGINT NOT NULL DEFAULT 0,"
    " units_supplied BIGINT NOT NULL DEFAULT 0,"
    " updated_at_ms BIGINT NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE orders ("
    " order_id BIGSERIAL,"
    " sku TEXT NOT NULL,"
    " user_id TEXT NOT NULL,"
    " qty BIGINT NOT NULL CHECK (qty > 0),"
    " idempotency_key TEXT,"
    " created_at_ms BIGINT NOT NULL,"
    " stock_after BIGINT NOT NULL,"
    " version_after BIGINT NOT NULL,"
    " PRIMARY KEY (sku, order_id)"
    ");"
    "CREATE UNIQUE INDEX orders_key ON orders (idempotency_key)"
    " WHERE idempotency_key IS NOT NULL;"
    "CREATE TABLE purchases ("
    " sku TEXT NOT NULL,"
    " user_id TEXT NOT NULL,"
    " qty BIGINT NOT NULL CHECK (qty >= 0),"
    " PRIMARY KEY (sku, user_id)"
    ");"
    "CREATE TABLE outbox ("
    " id BIGSERIAL PRIMARY KEY,"
    " sku TEXT NOT NULL,"
    " version BIGINT NOT NULL,"
    " committed_at_ms BIGINT NOT NULL"
    ");";

/* Version 2: outbox claims. A relay claims the rows it publishes for a
 * lease (claimed_by, claimed_until_ms on the database's clock), so that
 * each row is published by one relay of the fleet and a dead relay's rows
 * are taken over when the lease ends. */
static const char sqlite_v2[] =
    "ALTER TABLE outbox ADD COLUMN claimed_by TEXT;"
    "ALTER TABLE outbox ADD COLUMN claimed_until_ms INTEGER NOT NULL DEFAULT 0;";

static const char pg_v2[] =
    "ALTER TABLE outbox ADD COLUMN claimed_by TEXT;"
    "ALTER TABLE outbox ADD COLUMN claimed_until_ms BIGINT NOT NULL DEFAULT 0;";

static const char *const migrations[][2] = {
    {sqlite_v1, pg_v1},
    {sqlite_v2, pg_v2},
};

int store__schema_version(void)
{
    return (int)(sizeof migrations / sizeof migrations[0]);
}

const char *store__migration(int dialect, int v)
{
    if (v < 1 || v > store__schema_version() || (dialect != STORE__SQLITE && dialect != STORE__PG))
        return NULL;
    return migrations[v - 1][dialect];
}
