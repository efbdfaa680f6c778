/*
 * store_bare.c: the limit the store's batched decrements are measured
 * against. The transaction one store batch runs for the bench's requests
 * (decrements of one item, qty 1, one user each, no idempotency key, an
 * item without a per-user limit), statement for statement as the store
 * sends it, in a plain loop on one connection: no batcher, no coroutines,
 * no runtime, no decisions beyond stock - batch and version + 1. The SQL
 * is copied from the store (see each array); keep it in step with it.
 *
 * What the store runs for such a batch, and so what runs here:
 *   SQLite (sqlite.c, batch_blocking): BEGIN IMMEDIATE; read the item;
 *     one INSERT per order; no purchases (kept only under a per-user
 *     limit, store__keep_purchases); UPDATE the item (stock, version);
 *     INSERT the outbox row; COMMIT. WAL, synchronous=FULL.
 *   PostgreSQL (pg_batch.c, batch_known: the one-round-trip batch every
 *     batch after the first takes while the item's state is known): one
 *     pipeline of prepared statements up to one Sync: BEGIN; lock_timeout;
 *     the version check that locks the row (SELECT ... FOR UPDATE); the
 *     orders by INSERT ... SELECT unnest(...) taking their ids from the
 *     sequence; no purchases; UPDATE the item; INSERT the outbox row;
 *     COMMIT. The store's session settings (generic plans, no seq scans);
 *     synchronous_commit as the server has it (on for scripts/postgres).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "kit/kit.h"
#include "tests/bench/store/store_bare.h"

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The item's columns as the store reads them. */
typedef struct item_row {
    int64_t stock, version, per_user_limit, sale_starts_at_ms, units_supplied;
} item_row;

static void print_result(long tx, int batch, double secs)
{
    printf("bare_decr_per_s=%.0f\n", (double)tx * batch / secs);
    printf("bare_tx_per_s=%.1f\n", (double)tx / secs);
    printf("batch=%d\n", batch);
    printf("transactions=%ld\n", tx);
}

/* ---- SQLite ------------------------------------------------------------ */

/* From cachesvc/store/sqlite.c (w_sql). */
enum { SQ_BEGIN, SQ_COMMIT, SQ_ROLLBACK, SQ_SEL_ITEM, SQ_INS_ORDER, SQ_UPD_ITEM,
       SQ_INS_OUTBOX, SQ_N };
static const char *const sq_sql[SQ_N] = {
    [SQ_BEGIN] = "BEGIN IMMEDIATE",
    [SQ_COMMIT] = "COMMIT",
    [SQ_ROLLBACK] = "ROLLBACK",
    [SQ_SEL_ITEM] = "SELECT stock, version, per_user_limit, sale_starts_at_ms, units_supplied"
                    " FROM items WHERE sku = ?1",
    [SQ_INS_ORDER] = "INSERT INTO orders (sku, user_id, qty, idempotency_key, created_at_ms,"
                     " stock_after, version_after) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [SQ_UPD_ITEM] = "UPDATE items SET stock = ?2, version = ?3, per_user_limit = ?4,"
                    " sale_starts_at_ms = ?5, units_supplied = ?6, updated_at_ms = ?7"
                    " WHERE sku = ?1",
    [SQ_INS_OUTBOX] = "INSERT INTO outbox (sku, version, committed_at_ms) VALUES (?1, ?2, ?3)",
};

typedef struct sq_bare {
    sqlite3 *db;
    sqlite3_stmt *st[SQ_N];
    const char *sku;
    int batch;
    char (*users)[16];
} sq_bare;

static int sq_fail(sqlite3 *db, const char *what)
{
    fprintf(stderr, "store_bench: sqlite %s: %s\n", what, sqlite3_errmsg(db));
    return -1;
}

/* Steps a statement expected to finish without rows. */
static int sq_done(sq_bare *q, int i, const char *what)
{
    int rc = sqlite3_step(q->st[i]);
    sqlite3_reset(q->st[i]);
    return rc == SQLITE_DONE ? 0 : sq_fail(q->db, what);
}

static int sq_read_item(sq_bare *q, item_row *it)
{
    sqlite3_stmt *s = q->st[SQ_SEL_ITEM];
    sqlite3_bind_text(s, 1, q->sku, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        it->stock = sqlite3_column_int64(s, 0);
        it->version = sqlite3_column_int64(s, 1);
        it->per_user_limit = sqlite3_column_int64(s, 2);
        it->sale_starts_at_ms = sqlite3_column_int64(s, 3);
        it->units_supplied = sqlite3_column_int64(s, 4);
    }
    sqlite3_reset(s);
    if (rc == SQLITE_DONE)
        fprintf(stderr, "store_bench: sqlite: no item %s\n", q->sku);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -1 : sq_fail(q->db, "read item");
}

/* One batch transaction. Returns 0 or -1 (rolled back, said why). */
static int sq_tx(sq_bare *q)
{
    item_row it;
    sqlite3_stmt *t;

    if (sq_done(q, SQ_BEGIN, "begin") < 0)
        return -1;
    if (sq_read_item(q, &it) < 0)
        goto rollback;
    if (it.per_user_limit > 0 || it.stock < q->batch) {
        fprintf(stderr, "store_bench: sqlite: item %s has a per-user limit or too little stock\n",
                q->sku);
        goto rollback;
    }
    int64_t now = kit_wall_ms(), stock = it.stock - q->batch, version = it.version + 1;
    t = q->st[SQ_INS_ORDER];
    for (int i = 0; i < q->batch; i++) {
        sqlite3_bind_text(t, 1, q->sku, -1, SQLITE_STATIC);
        sqlite3_bind_text(t, 2, q->users[i], -1, SQLITE_STATIC);
        sqlite3_bind_int64(t, 3, 1);
        sqlite3_bind_null(t, 4);
        sqlite3_bind_int64(t, 5, now);
        sqlite3_bind_int64(t, 6, stock);
        sqlite3_bind_int64(t, 7, version);
        if (sq_done(q, SQ_INS_ORDER, "insert order") < 0)
            goto rollback;
        (void)sqlite3_last_insert_rowid(q->db);   /* the order's id, as the store takes it */
    }
    t = q->st[SQ_UPD_ITEM];
    sqlite3_bind_text(t, 1, q->sku, -1, SQLITE_STATIC);
    sqlite3_bind_int64(t, 2, stock);
    sqlite3_bind_int64(t, 3, version);
    sqlite3_bind_int64(t, 4, it.per_user_limit);
    sqlite3_bind_int64(t, 5, it.sale_starts_at_ms);
    sqlite3_bind_int64(t, 6, it.units_supplied);
    sqlite3_bind_int64(t, 7, now);
    if (sq_done(q, SQ_UPD_ITEM, "write item") < 0)
        goto rollback;
    t = q->st[SQ_INS_OUTBOX];
    sqlite3_bind_text(t, 1, q->sku, -1, SQLITE_STATIC);
    sqlite3_bind_int64(t, 2, version);
    sqlite3_bind_int64(t, 3, now);
    if (sq_done(q, SQ_INS_OUTBOX, "insert outbox") < 0 || sq_done(q, SQ_COMMIT, "commit") < 0)
        goto rollback;
    return 0;
rollback:
    if (sqlite3_get_autocommit(q->db) == 0)
        sq_done(q, SQ_ROLLBACK, "rollback");
    return -1;
}

int bare_sqlite(const char *path, const char *sku, int batch, int seconds)
{
    sq_bare q = {.sku = sku, .batch = batch};
    item_row first, last;
    long tx = 0;
    int rc = 1;

    /* The store's connection (sqlite.c, conn_open). */
    if (sqlite3_open_v2(path, &q.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        sq_fail(q.db, "open");
        goto out;
    }
    sqlite3_busy_timeout(q.db, 5000);
    if (sqlite3_exec(q.db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL, NULL,
                     NULL) != SQLITE_OK) {
        sq_fail(q.db, "pragmas");
        goto out;
    }
    for (int i = 0; i < SQ_N; i++)
        if (sqlite3_prepare_v3(q.db, sq_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &q.st[i], NULL) !=
            SQLITE_OK) {
            sq_fail(q.db, sq_sql[i]);
            goto out;
        }
    if ((q.users = calloc((size_t)batch, sizeof *q.users)) == NULL)
        goto out;
    for (int i = 0; i < batch; i++)
        snprintf(q.users[i], sizeof q.users[i], "u%d", i);
    if (sq_read_item(&q, &first) < 0)
        goto out;

    int64_t t0 = mono_ns(), stop = t0 + (int64_t)seconds * 1000000000;
    while (mono_ns() < stop) {
        if (sq_tx(&q) < 0)
            goto out;
        tx++;
    }
    double secs = (double)(mono_ns() - t0) / 1e9;

    if (sq_read_item(&q, &last) < 0)
        goto out;
    if (first.stock - last.stock != (int64_t)tx * batch || last.version - first.version != tx) {
        fprintf(stderr, "store_bench: sqlite: stock went down by %lld in %ld transactions"
                        " of %d\n", (long long)(first.stock - last.stock), tx, batch);
        goto out;
    }
    print_result(tx, batch, secs);
    rc = 0;
out:
    for (int i = 0; i < SQ_N; i++)
        sqlite3_finalize(q.st[i]);
    sqlite3_close(q.db);
    free(q.users);
    return rc;
}

/* ---- PostgreSQL -------------------------------------------------------- */

/* From cachesvc/store/pg_conn.c (ps_sql). */
enum { PB_BEGIN, PB_LOCK_TIMEOUT, PB_GUARD, PB_INS_ORDERS_NEW, PB_UPD_ITEM, PB_INS_OUTBOX,
       PB_COMMIT, PB_TX, PB_GET_ITEM = PB_TX, PB_N };
static const char *const pb_sql[PB_N] = {
    [PB_BEGIN] = "BEGIN",
    [PB_LOCK_TIMEOUT] = "SELECT set_config('lock_timeout', $1, true)",
    [PB_GUARD] = "SELECT 1 / coalesce((SELECT 1 FROM items WHERE sku = $1 AND version = $2"
                 " AND stock = $3 AND per_user_limit = $4 AND sale_starts_at_ms = $5"
                 " AND units_supplied = $6 FOR UPDATE), 0)",
    [PB_INS_ORDERS_NEW] = "WITH t AS MATERIALIZED (SELECT nextval('orders_order_id_seq') AS o,"
                          " u, q, k, n FROM unnest($5::text[], $6::bigint[], $7::text[])"
                          " WITH ORDINALITY AS a(u, q, k, n)),"
                          " i AS (INSERT INTO orders (order_id, sku, user_id, qty,"
                          " idempotency_key, created_at_ms, stock_after, version_after)"
                          " SELECT o, $1, u, q, k, $2, $3, $4 FROM t)"
                          " SELECT o FROM t ORDER BY n",
    [PB_UPD_ITEM] = "UPDATE items SET stock = $2, version = $3, per_user_limit = $4,"
                    " sale_starts_at_ms = $5, units_supplied = $6, updated_at_ms = $7"
                    " WHERE sku = $1",
    [PB_INS_OUTBOX] = "INSERT INTO outbox (sku, version, committed_at_ms) VALUES ($1, $2, $3)",
    [PB_COMMIT] = "COMMIT",
    [PB_GET_ITEM] = ("SELECT stock, version, per_user_limit, sale_starts_at_ms, units_supplied"
                     " FROM items WHERE sku = $1"),
};

static int pg_fail(PGconn *c, const char *what, PGresult *r)
{
    const char *m = r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(c);
    size_t n = strlen(m);
    fprintf(stderr, "store_bench: postgresql %s: %s%s", what, n ? m : "failed",
            n && m[n - 1] == '\n' ? "" : "\n");
    return -1;
}

static void quiet_notice(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

static int64_t col_i64(PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* Reads the item (outside pipeline mode). */
static int pg_read_item(PGconn *c, const char *sku, item_row *it)
{
    char name[8];
    const char *p[1] = {sku};
    snprintf(name, sizeof name, "b%d", PB_GET_ITEM);
    PGresult *r = PQexecPrepared(c, name, 1, p, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        rc = pg_fail(c, "read item", PQresultStatus(r) == PGRES_TUPLES_OK ? NULL : r);
    } else {
        it->stock = col_i64(r, 0, 0);
        it->version = col_i64(r, 0, 1);
        it->per_user_limit = col_i64(r, 0, 2);
        it->sale_starts_at_ms = col_i64(r, 0, 3);
        it->units_supplied = col_i64(r, 0, 4);
    }
    PQclear(r);
    return rc;
}

static int pg_send(PGconn *c, int ps, int n, const char *const *p)
{
    char name[8];
    snprintf(name, sizeof name, "b%d", ps);
    return PQsendQueryPrepared(c, name, n, p, NULL, NULL, 0) == 1 ? 0 : pg_fail(c, "send", NULL);
}

/* One batch transaction in one round trip, on the state *it (advanced on
 * commit). users/qtys/keys: the orders' array literals. Returns 0 or -1. */
static int pg_tx(PGconn *c, const char *sku, int batch, item_row *it, const char *users,
                 const char *qtys, const char *keys)
{
    char v[9][24];
    const char *p[7];
    int rc = 0;
    int64_t now = kit_wall_ms(), stock = it->stock - batch, version = it->version + 1;

    snprintf(v[0], sizeof v[0], "%lld", (long long)it->version);
    snprintf(v[1], sizeof v[1], "%lld", (long long)it->stock);
    snprintf(v[2], sizeof v[2], "%lld", (long long)it->per_user_limit);
    snprintf(v[3], sizeof v[3], "%lld", (long long)it->sale_starts_at_ms);
    snprintf(v[4], sizeof v[4], "%lld", (long long)it->units_supplied);
    snprintf(v[5], sizeof v[5], "%lld", (long long)stock);
    snprintf(v[6], sizeof v[6], "%lld", (long long)version);
    snprintf(v[7], sizeof v[7], "%lld", (long long)now);
    snprintf(v[8], sizeof v[8], "4000ms");   /* the store: 4/5 of its 5 s timeout */

    if (pg_send(c, PB_BEGIN, 0, NULL) < 0)
        return -1;
    p[0] = v[8];
    if (pg_send(c, PB_LOCK_TIMEOUT, 1, p) < 0)
        return -1;
    p[0] = sku; p[1] = v[0]; p[2] = v[1]; p[3] = v[2]; p[4] = v[3]; p[5] = v[4];
    if (pg_send(c, PB_GUARD, 6, p) < 0)
        return -1;
    p[0] = sku; p[1] = v[7]; p[2] = v[5]; p[3] = v[6]; p[4] = users; p[5] = qtys; p[6] = keys;
    if (pg_send(c, PB_INS_ORDERS_NEW, 7, p) < 0)
        return -1;
    p[0] = sku; p[1] = v[5]; p[2] = v[6]; p[3] = v[2]; p[4] = v[3]; p[5] = v[4]; p[6] = v[7];
    if (pg_send(c, PB_UPD_ITEM, 7, p) < 0)
        return -1;
    p[0] = sku; p[1] = v[6]; p[2] = v[7];
    if (pg_send(c, PB_INS_OUTBOX, 3, p) < 0)
        return -1;
    if (pg_send(c, PB_COMMIT, 0, NULL) < 0)
        return -1;
    if (PQpipelineSync(c) != 1)
        return pg_fail(c, "sync", NULL);

    /* Every answer, in order: each result, then the NULL that ends it;
     * then the Sync. */
    for (int i = 0; i < PB_TX; i++) {
        PGresult *r = PQgetResult(c);
        if (r == NULL)
            return pg_fail(c, "answers out of step", NULL);
        ExecStatusType s = PQresultStatus(r);
        if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
            if (rc == 0)
                rc = pg_fail(c, pb_sql[i], r);
        } else if (i == PB_INS_ORDERS_NEW) {
            if (PQntuples(r) != batch)
                rc = pg_fail(c, "insert orders: too few ids", NULL);
            for (int j = 0; j < PQntuples(r); j++)
                (void)col_i64(r, j, 0);   /* the orders' ids, as the store reads them */
        } else if (i == PB_COMMIT && strcmp(PQcmdStatus(r), "COMMIT") != 0) {
            rc = pg_fail(c, "commit rolled back", NULL);
        }
        PQclear(r);
        if ((r = PQgetResult(c)) != NULL) {
            PQclear(r);
            return pg_fail(c, "answers out of step", NULL);
        }
    }
    PGresult *r = PQgetResult(c);
    if (PQresultStatus(r) != PGRES_PIPELINE_SYNC)
        rc = pg_fail(c, "no sync", NULL);
    PQclear(r);
    if (rc == 0) {
        it->stock = stock;
        it->version = version;
    }
    return rc;
}

int bare_pg(const char *url, const char *sku, int batch, int seconds)
{
    PGconn *c = PQconnectdb(url);
    item_row first, it, last;
    char *users = NULL, *qtys = NULL, *keys = NULL;
    long tx = 0;
    int rc = 1;

    if (PQstatus(c) != CONNECTION_OK) {
        pg_fail(c, "connect", NULL);
        goto out;
    }
    PQsetNoticeProcessor(c, quiet_notice, NULL);
    /* The store's session (pg_conn.c, conn_prepare). */
    const char *setup[] = {"SET plan_cache_mode = force_generic_plan", "SET enable_seqscan = off"};
    for (size_t i = 0; i < sizeof setup / sizeof setup[0]; i++) {
        PGresult *r = PQexec(c, setup[i]);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            pg_fail(c, setup[i], r);
        PQclear(r);
        if (!ok)
            goto out;
    }
    for (int i = 0; i < PB_N; i++) {
        char name[8];
        snprintf(name, sizeof name, "b%d", i);
        PGresult *r = PQprepare(c, name, pb_sql[i], 0, NULL);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            pg_fail(c, pb_sql[i], r);
        PQclear(r);
        if (!ok)
            goto out;
    }
    if (pg_read_item(c, sku, &first) < 0)
        goto out;
    if (first.per_user_limit > 0) {
        fprintf(stderr, "store_bench: postgresql: item %s has a per-user limit\n", sku);
        goto out;
    }
    size_t cap = (size_t)batch * 24 + 3;
    users = malloc(cap);
    qtys = malloc(cap);
    keys = malloc(cap);
    if (users == NULL || qtys == NULL || keys == NULL)
        goto out;
    /* The orders' arrays as the store writes them (store__pg_sb_elem). */
    size_t lu = 0, lq = 0, lk = 0;
    for (int i = 0; i < batch; i++) {
        lu += (size_t)snprintf(users + lu, cap - lu, "%s\"u%d\"", i ? "," : "{", i);
        lq += (size_t)snprintf(qtys + lq, cap - lq, "%s1", i ? "," : "{");
        lk += (size_t)snprintf(keys + lk, cap - lk, "%sNULL", i ? "," : "{");
    }
    snprintf(users + lu, cap - lu, "}");
    snprintf(qtys + lq, cap - lq, "}");
    snprintf(keys + lk, cap - lk, "}");
    if (PQenterPipelineMode(c) != 1) {
        pg_fail(c, "pipeline mode", NULL);
        goto out;
    }

    it = first;
    int64_t t0 = mono_ns(), stop = t0 + (int64_t)seconds * 1000000000;
    while (mono_ns() < stop) {
        if (it.stock < batch) {
            fprintf(stderr, "store_bench: postgresql: item %s is out of stock\n", sku);
            goto out;
        }
        if (pg_tx(c, sku, batch, &it, users, qtys, keys) < 0)
            goto out;
        tx++;
    }
    double secs = (double)(mono_ns() - t0) / 1e9;

    if (PQexitPipelineMode(c) != 1) {
        pg_fail(c, "pipeline mode", NULL);
        goto out;
    }
    if (pg_read_item(c, sku, &last) < 0)
        goto out;
    if (first.stock - last.stock != (int64_t)tx * batch || last.version - first.version != tx) {
        fprintf(stderr, "store_bench: postgresql: stock went down by %lld in %ld transactions"
                        " of %d\n", (long long)(first.stock - last.stock), tx, batch);
        goto out;
    }
    print_result(tx, batch, secs);
    rc = 0;
out:
    free(users);
    free(qtys);
    free(keys);
    PQfinish(c);
    return rc;
}
