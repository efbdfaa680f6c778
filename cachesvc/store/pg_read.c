/*
 * pg_read.c: the PostgreSQL backend's calls other than the batch: item and
 * order reads, the audit, the sold-out snapshot, and the outbox relay's
 * queries (fetch, claim, delete, stats). Each takes a pooled connection for
 * one round trip; the reads run in their own implicit or read-only
 * transaction, the relay's bookkeeping in one that commits without waiting
 * for its WAL flush (async_tx).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "cachesvc/store/pg_int.h"

/* Sends what pc has queued, up to its Sync, and reads the n answers into
 * res[] (the caller PQclears them). Returns 0, -EIO when a statement
 * failed (logged as the operation what), or the transport's error.
 * *synced is set once every answer was read: the connection may then go
 * back to the pool. */
static int round_trip(store__pg_conn *pc, int64_t dl, PGresult **res, int n, const char *what,
                      int *synced)
{
    int rc, fe;

    if ((rc = store__pg_flush(pc, dl)) < 0 || (rc = store__pg_collect(pc, dl, res, n, &fe)) < 0)
        return rc;
    *synced = 1;
    if (fe >= 0) {
        store__pg_sql_error(what, res[fe]);
        return -EIO;
    }
    return 0;
}

/* Runs one statement (in its own implicit transaction) and returns its
 * result in *out (caller PQclears); with durable, PG_DURABLE_SQL in the
 * same transaction, so the answer waits until what it read is durable
 * (pg_int.h). Returns 0 or a negative errno. */
static int run1_durable(store *st, int ps, int np, const char *const *params, int durable,
                        PGresult **out)
{
    int64_t dl = store__pg_deadline(st);
    PGresult *res[2] = {0};
    store__pg_conn *pc;
    int rc, synced = 0;

    *out = NULL;
    if ((pc = store__pg_pool_get(st, dl, &rc)) == NULL)
        return rc;
    if (store__pg_exec(pc, ps, np, params) < 0 ||
        (durable && store__pg_send(pc, PG_DURABLE_SQL, 0, NULL) < 0) ||
        PQpipelineSync(pc->c) != 1) {
        rc = -EIO;
        goto out;
    }
    if ((rc = round_trip(pc, dl, res, 1 + durable, "query", &synced)) == 0) {
        *out = res[0];
        res[0] = NULL;
    }
out:
    store__pg_clear(res, 2);
    store__pg_pool_put(st, pc, !synced);   /* replies may still be due: not reusable */
    return rc;
}


static int run1(store *st, int ps, int np, const char *const *params, PGresult **out)
{
    return run1_durable(st, ps, np, params, 0, out);
}

/* run1 for a statement that answers one row: -ENOENT (and *out NULL)
 * when it answers none. */
static int run1_row(store *st, int ps, int np, const char *const *params, PGresult **out)
{
    int rc = run1(st, ps, np, params, out);
    if (rc == 0 && PQntuples(*out) != 1) {
        PQclear(*out);
        *out = NULL;
        rc = -ENOENT;
    }
    return rc;
}

/* The item row of r (one row, ITEM_COLS) as sku's store_item. */
static void fill_item(store_item *it, const char *sku, PGresult *r)
{
    store__state s;
    store__pg_row_state(r, &s);
    store__state_to_item(&s, sku, it);
}

int store__pg_get_item(store *st, const char *sku, store_item *out)
{
    PGresult *r;
    const char *p[1] = {sku};
    int rc = run1_row(st, PS_GET_ITEM, 1, p, &r);
    if (rc == 0)
        fill_item(out, sku, r);
    PQclear(r);
    return rc;
}

int store__pg_version_check(store *st, const char *sku, int64_t version,
                            store_version_info *out, int64_t *order_version,
                            int64_t *updated_at_ms)
{
    PGresult *r;
    char v[24];
    const char *p[2] = {sku, v};
    snprintf(v, sizeof v, "%lld", (long long)version);
    int rc = run1_row(st, PS_VERSION_CHECK, 2, p, &r);
    if (rc == 0) {
        out->version = store__pg_i64(r, 0, 0);
        *updated_at_ms = store__pg_i64(r, 0, 1);
        out->first_newer_ms = store__pg_i64(r, 0, 2);
        *order_version = store__pg_i64(r, 0, 3);
    }
    PQclear(r);
    return rc;
}

/* A transaction begun after a read commits after every commit the read
 * saw, so its wait for the standby covers them (PG_DURABLE_SQL). */
static int durable_barrier(store *st)
{
    PGresult *r;
    int rc = run1_durable(st, PS_PING, 0, NULL, 1, &r);
    PQclear(r);
    return rc;
}

/* The order found is answered once it is durable (pg_int.h); a key with
 * no order rests on no commit and waits for nothing (every buyer of a
 * sold-out item with a new key has it looked up). */
int store__pg_order_by_key(store *st, const char *key, store_order *out)
{
    PGresult *r;
    const char *p[1] = {key};
    int rc = run1(st, PS_ORDER_BY_KEY, 1, p, &r);
    if (rc == 0 && PQntuples(r) != 1)
        rc = -ENOENT;
    if (rc == 0)
        store__pg_row_order(r, 0, 0, out);
    PQclear(r);
    return rc == 0 ? durable_barrier(st) : rc;
}

int store__pg_orders_by_keys(store *st, const char *const *keys, int n, store_order *out,
                             int *found)
{
    kit_buf lit = {0};
    PGresult *r;
    int rc, any = 0;

    kit_buf_puts(&lit, "{");
    for (int i = 0; i < n; i++) {
        found[i] = 0;
        store__pg_sb_elem(&lit, keys[i]);
    }
    kit_buf_puts(&lit, "}");
    if (lit.oom) {
        free(lit.data);
        return -ENOMEM;
    }
    const char *p[1] = {lit.data};
    rc = run1(st, PS_KEYS, 1, p, &r);
    free(lit.data);
    if (rc < 0)
        return rc;
    for (int row = 0; row < PQntuples(r); row++)
        for (int i = 0; i < n; i++)
            if (strcmp(keys[i], PQgetvalue(r, row, 0)) == 0) {
                store__pg_row_order(r, row, 1, &out[i]);
                found[i] = any = 1;
            }
    PQclear(r);
    return any ? durable_barrier(st) : 0;
}

enum { A_BEGIN, A_ITEM, A_ORDERS, A_MAXUSER, A_DUPS, A_IDS, A_COMMIT, A_MAX };

int store__pg_audit(store *st, const char *sku, int with_orders, store_audit_result *out)
{
    int64_t dl = store__pg_deadline(st);
    PGresult *res[A_MAX] = {0};
    const char *p[1] = {sku};
    store__pg_conn *pc;
    int rc, nq = 0, synced = 0;

    memset(out, 0, sizeof *out);
    if ((pc = store__pg_pool_get(st, dl, &rc)) == NULL)
        return rc;
    rc = -EIO;
    if (store__pg_send(pc, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL) < 0 ||
        store__pg_send(pc, "SELECT " ITEM_COLS " FROM items WHERE sku = $1", 1, p) < 0 ||
        store__pg_send(pc, "SELECT count(*), coalesce(sum(qty), 0) FROM orders WHERE sku = $1",
                       1, p) < 0 ||
        store__pg_send(pc, "SELECT coalesce(max(q), 0) FROM (SELECT sum(qty) AS q FROM orders"
                       " WHERE sku = $1 GROUP BY user_id) t", 1, p) < 0 ||
        store__pg_send(pc, "SELECT count(*) FROM (SELECT idempotency_key FROM orders WHERE sku = $1"
                       " AND idempotency_key IS NOT NULL GROUP BY idempotency_key"
                       " HAVING count(*) > 1) t", 1, p) < 0)
        goto out;
    nq = 5;
    if (with_orders) {
        if (store__pg_send(pc, "SELECT order_id FROM orders WHERE sku = $1 ORDER BY order_id",
                           1, p) < 0)
            goto out;
        nq++;
    }
    if (store__pg_send(pc, "COMMIT", 0, NULL) < 0 || PQpipelineSync(pc->c) != 1)
        goto out;
    nq++;
    if ((rc = round_trip(pc, dl, res, nq, "audit", &synced)) < 0)
        goto out;
    if (PQntuples(res[A_ITEM]) != 1) {
        rc = -ENOENT;
        goto out;
    }
    fill_item(&out->item, sku, res[A_ITEM]);
    out->orders = store__pg_i64(res[A_ORDERS], 0, 0);
    out->units_sold = store__pg_i64(res[A_ORDERS], 0, 1);
    out->max_user_qty = store__pg_i64(res[A_MAXUSER], 0, 0);
    out->duplicate_idempotency_keys = store__pg_i64(res[A_DUPS], 0, 0);
    if (with_orders) {
        int nt = PQntuples(res[A_IDS]);
        if ((out->order_ids = malloc(sizeof *out->order_ids * (size_t)(nt + 1))) == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        for (int i = 0; i < nt; i++)
            out->order_ids[i] = store__pg_i64(res[A_IDS], i, 0);
        out->n_order_ids = (size_t)nt;
    }
    rc = 0;
out:
    store__pg_clear(res, A_MAX);
    store__pg_pool_put(st, pc, !synced);
    return rc;
}

/* The item and, when it is sold out, its orders, in one REPEATABLE READ
 * snapshot and one round trip. */
enum { S_BEGIN, S_ITEM, S_ORDERS, S_COMMIT, S_DURABLE, S_MAX };

int store__pg_sold_out_read(store *st, const char *sku, int64_t max, store__so_set *set)
{
    int64_t dl = store__pg_deadline(st);
    PGresult *res[S_MAX] = {0};
    char lim[24];
    const char *p[2] = {sku, lim};
    store__pg_conn *pc;
    int rc, synced = 0;

    snprintf(lim, sizeof lim, "%lld", (long long)max + 1);
    if ((pc = store__pg_pool_get(st, dl, &rc)) == NULL)
        return rc;
    rc = -EIO;
    if (store__pg_send(pc, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL) < 0 ||
        store__pg_send(pc, "SELECT " ITEM_COLS " FROM items WHERE sku = $1", 1, p) < 0 ||
        store__pg_send(pc, "SELECT user_id, qty, idempotency_key, order_id,"
                       " stock_after, version_after FROM orders WHERE sku = $1"
                       " AND EXISTS (SELECT 1 FROM items WHERE sku = $1 AND stock = 0) LIMIT $2",
                       2, p) < 0 ||
        store__pg_send(pc, "COMMIT", 0, NULL) < 0 ||
        store__pg_send(pc, PG_DURABLE_SQL, 0, NULL) < 0 || PQpipelineSync(pc->c) != 1)
        goto out;
    /* The set replays its orders: loaded once they are durable. */
    if ((rc = round_trip(pc, dl, res, S_MAX, "sold-out snapshot", &synced)) < 0)
        goto out;
    store__state s;
    store__pg_row_state(res[S_ITEM], &s);
    store__so_set_item(set, &s);
    PGresult *r = res[S_ORDERS];
    int nt = PQntuples(r);
    rc = 0;
    if (nt > max) {
        rc = -E2BIG;
        goto out;
    }
    for (int i = 0; i < nt && rc == 0; i++)
        rc = store__so_add(set, PQgetvalue(r, i, 0), store__pg_i64(r, i, 1),
                           PQgetisnull(r, i, 2) ? NULL : PQgetvalue(r, i, 2),
                           store__pg_i64(r, i, 3), store__pg_i64(r, i, 4), store__pg_i64(r, i, 5));
out:
    store__pg_clear(res, S_MAX);
    store__pg_pool_put(st, pc, !synced);
    return rc;
}

/* Copies nt outbox rows (id, sku, version, committed_at_ms, then the
 * item's stock, limit and sale start, NULL when it moved on) from r. */
static void outbox_rows(PGresult *r, int nt, store_outbox_row *rows)
{
    for (int i = 0; i < nt; i++) {
        rows[i].id = store__pg_i64(r, i, 0);
        snprintf(rows[i].sku, sizeof rows[i].sku, "%s", PQgetvalue(r, i, 1));
        rows[i].version = store__pg_i64(r, i, 2);
        rows[i].committed_at_ms = store__pg_i64(r, i, 3);
        rows[i].has_item = !PQgetisnull(r, i, 4);
        rows[i].stock = rows[i].has_item ? store__pg_i64(r, i, 4) : 0;
        rows[i].per_user_limit = rows[i].has_item ? store__pg_i64(r, i, 5) : 0;
        rows[i].sale_starts_at_ms = rows[i].has_item ? store__pg_i64(r, i, 6) : 0;
    }
}

int store__pg_outbox_fetch(store *st, int64_t after_id, size_t max, store_outbox_row *rows)
{
    PGresult *r;
    char a[24], m[24];
    const char *p[2] = {a, m};
    int rc, nt;

    snprintf(a, sizeof a, "%lld", (long long)after_id);
    snprintf(m, sizeof m, "%zu", max);
    rc = run1(st, PS_OUTBOX_FETCH, 2, p, &r);
    if (rc < 0)
        return rc;
    nt = PQntuples(r);
    outbox_rows(r, nt, rows);
    PQclear(r);
    return nt;
}

int store__pg_outbox_stats(store *st, int64_t *rows, int64_t *oldest_ms)
{
    PGresult *r;
    int rc = run1(st, PS_OUTBOX_STATS, 0, NULL, &r);
    if (rc < 0)
        return rc;
    *rows = store__pg_i64(r, 0, 0);
    *oldest_ms = store__pg_i64(r, 0, 1);
    PQclear(r);
    return 0;
}

/* Runs statement ps in a transaction that commits without waiting for its
 * WAL flush, and hands its result to *out (NULL when not wanted; the caller
 * PQclear()s it). For the outbox's bookkeeping, where a change lost in a
 * crash is harmless: a lost delete publishes a row again, which the
 * consumers' version guards absorb (at-least-once), and a lost claim lets
 * another relay claim the row; a flush per call doubled the fsyncs of a
 * busy item. Returns 0, -EIO, -ETIMEDOUT or -ENOMEM. */
static int async_tx(store *st, const char *what, int ps, int nparams, const char *const *params,
                    PGresult **out)
{
    int64_t dl = store__pg_deadline(st);
    PGresult *res[4] = {0};
    store__pg_conn *pc;
    int rc, synced = 0;

    if (out != NULL)
        *out = NULL;
    if ((pc = store__pg_pool_get(st, dl, &rc)) == NULL)
        return rc;
    rc = -EIO;
    if (store__pg_exec(pc, PS_BEGIN, 0, NULL) < 0 ||
        store__pg_exec(pc, PS_ASYNC_COMMIT, 0, NULL) < 0 ||
        store__pg_exec(pc, ps, nparams, params) < 0 ||
        store__pg_exec(pc, PS_COMMIT, 0, NULL) < 0 ||
        PQpipelineSync(pc->c) != 1)
        goto out;
    if ((rc = round_trip(pc, dl, res, 4, what, &synced)) < 0) {
        if (synced)   /* an SQL error: leave no open block */
            synced = store__pg_end(pc, dl, 0) == 0;
        goto out;
    }
    if (out != NULL) {
        *out = res[2];
        res[2] = NULL;
    }
out:
    store__pg_clear(res, 4);
    store__pg_pool_put(st, pc, !synced);
    return rc;
}

int store__pg_outbox_claim(store *st, const char *claimer, int64_t lease_ms, int mine,
                           int64_t after_id, size_t max, store_outbox_row *rows)
{
    PGresult *r;
    char a[24], m[24], l[24];
    const char *p[5] = {a, m, claimer, mine ? "true" : "false", l};
    snprintf(a, sizeof a, "%lld", (long long)after_id);
    snprintf(m, sizeof m, "%zu", max);
    snprintf(l, sizeof l, "%lld", (long long)lease_ms);
    int rc = async_tx(st, "outbox claim", PS_OUTBOX_CLAIM, 5, p, &r);
    if (rc < 0)
        return rc;
    int nt = r != NULL ? PQntuples(r) : 0;
    if ((size_t)nt > max)
        nt = (int)max;
    outbox_rows(r, nt, rows);
    PQclear(r);
    store__sort_outbox(rows, (size_t)nt);
    return nt;
}

/* Deletes acknowledged outbox rows (async_tx says why without a flush). */
int store__pg_outbox_delete(store *st, const int64_t *ids, size_t n)
{
    kit_buf b = {0};
    const char *p[1];

    kit_buf_puts(&b, "{");
    for (size_t i = 0; i < n; i++)
        store__pg_sb_int(&b, ids[i]);
    kit_buf_puts(&b, "}");
    if (b.oom) {
        free(b.data);
        return -ENOMEM;
    }
    p[0] = b.data;
    int rc = async_tx(st, "outbox delete", PS_OUTBOX_DEL, 1, p, NULL);
    free(b.data);
    return rc;
}

int store__pg_ping(store *st)
{
    PGresult *r;
    int rc = run1(st, PS_PING, 0, NULL, &r);
    PQclear(r);
    return rc;
}
