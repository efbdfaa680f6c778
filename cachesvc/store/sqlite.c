/*
 * sqlite.c: the embedded SQLite backend. WAL journal, synchronous=FULL (a
 * commit is durable when it returns). Two connections: the writer runs the
 * batch transactions (BEGIN IMMEDIATE takes the database's write lock for
 * the whole batch), outbox deletes and migrations; the reader serves item
 * reads, audits and outbox fetches from WAL snapshots without waiting for
 * the writer. Each connection has a mutex and is used by one thread at a
 * time. Every call runs on the runtime's blocking offload (rt_blocking), or
 * inline when the caller is not a coroutine (tools, unit tests).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "cachesvc/store/store_int.h"
#include "kit/kit.h"

enum {
    W_BEGIN, W_COMMIT, W_ROLLBACK, W_SEL_ITEM, W_SEL_KEY, W_SEL_BOUGHT, W_INS_ORDER,
    W_UPS_PURCHASE, W_REBUILD, W_UPD_ITEM, W_INS_ITEM, W_INS_OUTBOX, W_DEL_OUTBOX, W_NSTMT
};
static const char *const w_sql[W_NSTMT] = {
    [W_BEGIN] = "BEGIN IMMEDIATE",
    [W_COMMIT] = "COMMIT",
    [W_ROLLBACK] = "ROLLBACK",
    [W_SEL_ITEM] = "SELECT stock, version, per_user_limit, sale_starts_at_ms, units_supplied"
                   " FROM items WHERE sku = ?1",
    [W_SEL_KEY] = "SELECT order_id, sku, user_id, qty, stock_after, version_after"
                  " FROM orders WHERE idempotency_key = ?1",
    [W_SEL_BOUGHT] = "SELECT qty FROM purchases WHERE sku = ?1 AND user_id = ?2",
    [W_INS_ORDER] = "INSERT INTO orders (sku, user_id, qty, idempotency_key, created_at_ms,"
                    " stock_after, version_after) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [W_UPS_PURCHASE] = "INSERT INTO purchases (sku, user_id, qty) VALUES (?1, ?2, ?3)"
                       " ON CONFLICT (sku, user_id) DO UPDATE SET qty = qty + excluded.qty",
    [W_REBUILD] = "INSERT INTO purchases (sku, user_id, qty)"
                  " SELECT sku, user_id, sum(qty) FROM orders WHERE sku = ?1 GROUP BY user_id"
                  " ON CONFLICT (sku, user_id) DO UPDATE SET qty = excluded.qty",
    [W_UPD_ITEM] = "UPDATE items SET stock = ?2, version = ?3, per_user_limit = ?4,"
                   " sale_starts_at_ms = ?5, units_supplied = ?6, updated_at_ms = ?7"
                   " WHERE sku = ?1",
    [W_INS_ITEM] = "INSERT INTO items (sku, stock, version, per_user_limit, sale_starts_at_ms,"
                   " units_supplied, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [W_INS_OUTBOX] = "INSERT INTO outbox (sku, version, committed_at_ms) VALUES (?1, ?2, ?3)",
    [W_DEL_OUTBOX] = "DELETE FROM outbox WHERE id = ?1",
};

enum {
    R_BEGIN, R_COMMIT, R_SEL_ITEM, R_AUDIT_ORDERS, R_AUDIT_MAXUSER, R_AUDIT_DUPKEYS,
    R_AUDIT_IDS, R_OUTBOX, R_PING, R_SO_ORDERS, R_ORDER_BY_KEY, R_OUTBOX_STATS,
    R_VERSION_CHECK, R_NSTMT
};
static const char *const r_sql[R_NSTMT] = {
    [R_BEGIN] = "BEGIN",
    [R_COMMIT] = "COMMIT",
    [R_SEL_ITEM] = "SELECT stock, version, per_user_limit, sale_starts_at_ms, units_supplied"
                   " FROM items WHERE sku = ?1",
    [R_AUDIT_ORDERS] = "SELECT count(*), coalesce(sum(qty), 0) FROM orders WHERE sku = ?1",
    [R_AUDIT_MAXUSER] = "SELECT coalesce(max(q), 0) FROM"
                        " (SELECT sum(qty) AS q FROM orders WHERE sku = ?1 GROUP BY user_id)",
    [R_AUDIT_DUPKEYS] = "SELECT count(*) FROM (SELECT idempotency_key FROM orders WHERE sku = ?1"
                        " AND idempotency_key IS NOT NULL GROUP BY idempotency_key"
                        " HAVING count(*) > 1)",
    [R_AUDIT_IDS] = "SELECT order_id FROM orders WHERE sku = ?1 ORDER BY order_id",
    /* The item's row beside each outbox row, NULL unless the item still
     * stands at the row's version. */
    [R_OUTBOX] = "SELECT o.id, o.sku, o.version, o.committed_at_ms,"
                 " i.stock, i.per_user_limit, i.sale_starts_at_ms"
                 " FROM outbox o LEFT JOIN items i ON i.sku = o.sku AND i.version = o.version"
                 " WHERE o.id > ?1 ORDER BY o.id LIMIT ?2",
    [R_PING] = "SELECT 1",
    [R_SO_ORDERS] = "SELECT user_id, qty, idempotency_key, order_id, stock_after, version_after"
                    " FROM orders WHERE sku = ?1 LIMIT ?2",
    [R_ORDER_BY_KEY] = "SELECT order_id, sku, user_id, qty, stock_after, version_after"
                       " FROM orders WHERE idempotency_key = ?1",
    [R_OUTBOX_STATS] = "SELECT count(*), coalesce(min(committed_at_ms), 0) FROM outbox",
    [R_VERSION_CHECK] = "SELECT i.version, i.updated_at_ms, coalesce(o.t, 0), coalesce(o.v, 0)"
                        " FROM items i, (SELECT min(created_at_ms) AS t, min(version_after) AS v"
                        " FROM (SELECT created_at_ms, version_after FROM orders WHERE sku = ?1"
                        " ORDER BY order_id DESC LIMIT 64) WHERE version_after > ?2) o"
                        " WHERE i.sku = ?1",
};

typedef struct sq_conn {
    sqlite3 *db;
    pthread_mutex_t mu;
} sq_conn;

typedef struct sq {
    sq_conn w;
    sq_conn r;
    sqlite3_stmt *wst[W_NSTMT];
    sqlite3_stmt *rst[R_NSTMT];
} sq;

/* Runs fn on the blocking pool when called from a coroutine, else inline. */
static intptr_t offload(intptr_t (*fn)(void *), void *arg)
{
    if (rt_self() != NULL)
        return rt_blocking(fn, arg);
    return fn(arg);
}

static __attribute__((noinline, cold)) void sq_log(sqlite3 *db, const char *what)
{
    char q[256];
    rt_log(RT_LOG_WARN, "store", "sqlite statement failed", "op=%s err=%s", what,
           rt_log_q(q, sizeof q, sqlite3_errmsg(db)));
}

/* Logs why a statement failed and returns -EIO (inline, so callers'
 * flow analysis sees the error return). */
static int sq_err(sqlite3 *db, const char *what)
{
    sq_log(db, what);
    return -EIO;
}

/* Steps a statement expected to finish without rows. */
static int step_done(sqlite3 *db, sqlite3_stmt *s, const char *what)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return rc == SQLITE_BUSY ? (sq_err(db, what), -ETIMEDOUT) : sq_err(db, what);
    return 0;
}

static void bind_text(sqlite3_stmt *s, int i, const char *t)
{
    if (t == NULL)
        sqlite3_bind_null(s, i);
    else
        sqlite3_bind_text(s, i, t, -1, SQLITE_STATIC);
}

static void copy_col(char *dst, size_t cap, sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    snprintf(dst, cap, "%s", t ? (const char *)t : "");
}

/* Reads sku's row with stmt s into *state. Returns 0 (state->found tells)
 * or a negative errno. */
static int read_item(sqlite3 *db, sqlite3_stmt *s, const char *sku, store__state *state)
{
    int rc;
    memset(state, 0, sizeof *state);
    bind_text(s, 1, sku);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        state->found = 1;
        state->stock = sqlite3_column_int64(s, 0);
        state->version = sqlite3_column_int64(s, 1);
        state->per_user_limit = sqlite3_column_int64(s, 2);
        state->sale_starts_at_ms = sqlite3_column_int64(s, 3);
        state->units_supplied = sqlite3_column_int64(s, 4);
        rc = SQLITE_DONE;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return rc == SQLITE_BUSY ? -ETIMEDOUT : sq_err(db, "read item");
    return 0;
}

/* ---- batch ---------------------------------------------------------- */

typedef struct batch_args {
    store *st;
    const char *sku;
    store__op **ops;
    int n;
    store__batch_result *r;
} batch_args;

/* Steps s, bound to an idempotency key, into *o. Returns 1 found, 0 not,
 * or a negative errno. */
static int read_order(sqlite3 *db, sqlite3_stmt *s, const char *key, store_order *o)
{
    bind_text(s, 1, key);
    int rc = sqlite3_step(s), found = 0;
    if (rc == SQLITE_ROW) {
        found = 1;
        o->order_id = sqlite3_column_int64(s, 0);
        copy_col(o->sku, sizeof o->sku, s, 1);
        copy_col(o->user_id, sizeof o->user_id, s, 2);
        o->qty = sqlite3_column_int64(s, 3);
        o->stock = sqlite3_column_int64(s, 4);
        o->version = sqlite3_column_int64(s, 5);
        rc = SQLITE_DONE;
    }
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? found : sq_err(db, "read key");
}

/* The reads of the batch: idempotency keys and, when a per-user limit can
 * apply in this batch (need_bought), the buyers' purchases. */
static int batch_reads(sq *q, const char *sku, store__op **ops, int n, int need_bought)
{
    sqlite3 *db = q->w.db;
    for (int i = 0; i < n; i++) {
        store__op *op = ops[i];
        sqlite3_stmt *s;
        int rc;
        op->key_found = 0;
        op->bought = 0;
        if (op->kind != STORE__DECR)
            continue;
        if (op->key != NULL) {
            if ((rc = read_order(db, q->wst[W_SEL_KEY], op->key, &op->prior)) < 0)
                return rc;
            op->key_found = rc;
        }
        if (!need_bought)
            continue;
        s = q->wst[W_SEL_BOUGHT];
        bind_text(s, 1, sku);
        bind_text(s, 2, op->user_id);
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            op->bought = sqlite3_column_int64(s, 0);
            rc = SQLITE_DONE;
        }
        sqlite3_reset(s);
        if (rc != SQLITE_DONE)
            return sq_err(db, "read purchases");
    }
    return 0;
}

static int batch_writes(sq *q, const char *sku, store__op **ops, int n, const store__state *s0,
                        store__batch_result *r)
{
    sqlite3 *db = q->w.db;
    const store__state *s = &r->state;
    int64_t now = r->committed_at_ms;
    sqlite3_stmt *t;
    int rc, m;
    const char **users = malloc(sizeof *users * (size_t)n);
    int64_t *qtys = malloc(sizeof *qtys * (size_t)n);

    if (users == NULL || qtys == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    t = q->wst[W_INS_ORDER];
    for (int i = 0; i < n; i++) {
        store__op *op = ops[i];
        if (op->kind != STORE__DECR || op->outcome != STORE_OK)
            continue;
        bind_text(t, 1, sku);
        bind_text(t, 2, op->user_id);
        sqlite3_bind_int64(t, 3, op->qty);
        bind_text(t, 4, op->key);
        sqlite3_bind_int64(t, 5, now);
        sqlite3_bind_int64(t, 6, s->stock);
        sqlite3_bind_int64(t, 7, s->version);
        if ((rc = step_done(db, t, "insert order")) < 0)
            goto out;
        op->order_id = sqlite3_last_insert_rowid(db);
    }
    m = store__keep_purchases(s) ? store__purchase_deltas(ops, n, users, qtys) : 0;
    t = q->wst[W_UPS_PURCHASE];
    for (int j = 0; j < m; j++) {
        bind_text(t, 1, sku);
        bind_text(t, 2, users[j]);
        sqlite3_bind_int64(t, 3, qtys[j]);
        if ((rc = step_done(db, t, "upsert purchase")) < 0)
            goto out;
    }
    t = q->wst[s0->found ? W_UPD_ITEM : W_INS_ITEM];
    bind_text(t, 1, sku);
    sqlite3_bind_int64(t, 2, s->stock);
    sqlite3_bind_int64(t, 3, s->version);
    sqlite3_bind_int64(t, 4, s->per_user_limit);
    sqlite3_bind_int64(t, 5, s->sale_starts_at_ms);
    sqlite3_bind_int64(t, 6, s->units_supplied);
    sqlite3_bind_int64(t, 7, now);
    if ((rc = step_done(db, t, "write item")) < 0)
        goto out;
    t = q->wst[W_INS_OUTBOX];
    bind_text(t, 1, sku);
    sqlite3_bind_int64(t, 2, s->version);
    sqlite3_bind_int64(t, 3, now);
    rc = step_done(db, t, "insert outbox");
out:
    free(users);
    free(qtys);
    return rc;
}

static intptr_t batch_blocking(void *arg)
{
    batch_args *a = arg;
    sq *q = a->st->impl;
    sqlite3 *db = q->w.db;
    store__state s0;
    int rc, rebuild;

    pthread_mutex_lock(&q->w.mu);
    if ((rc = step_done(db, q->wst[W_BEGIN], "begin")) < 0)
        goto out;
    if ((rc = read_item(db, q->wst[W_SEL_ITEM], a->sku, &s0)) < 0)
        goto rollback;
    rebuild = store__needs_rebuild(&s0, a->ops, a->n);
    if (rebuild) {
        sqlite3_bind_text(q->wst[W_REBUILD], 1, a->sku, -1, SQLITE_STATIC);
        if ((rc = step_done(db, q->wst[W_REBUILD], "rebuild purchases")) < 0)
            goto rollback;
    }
    /* A limit applies only if the item has one or a put here sets one
     * (which is when purchases are rebuilt). */
    if ((rc = batch_reads(q, a->sku, a->ops, a->n, s0.per_user_limit > 0 || rebuild)) < 0)
        goto rollback;
    a->r->state = s0;
    a->r->committed_at_ms = kit_wall_ms();
    a->r->changed = store__decide(&a->r->state, a->r->committed_at_ms, a->ops, a->n);
    if (!a->r->changed)
        goto rollback_ok;
    a->r->state.version = s0.version + 1;
    if ((rc = batch_writes(q, a->sku, a->ops, a->n, &s0, a->r)) < 0)
        goto rollback;
    if ((rc = step_done(db, q->wst[W_COMMIT], "commit")) < 0)
        goto rollback;
    goto out;
rollback_ok:
    rc = 0;
rollback:
    if (sqlite3_get_autocommit(db) == 0)
        step_done(db, q->wst[W_ROLLBACK], "rollback");
out:
    pthread_mutex_unlock(&q->w.mu);
    return rc;
}

static int sq_batch(store *st, const char *sku, store__op **ops, int n, store__batch_result *r)
{
    batch_args a = {st, sku, ops, n, r};
    return (int)offload(batch_blocking, &a);
}

/* ---- reads ---------------------------------------------------------- */

typedef struct read_args {
    store *st;
    const char *sku;
    void *out;
    int with_orders;
    int64_t after_id;
    size_t max;
    const int64_t *ids;
} read_args;

static intptr_t get_blocking(void *arg)
{
    read_args *a = arg;
    sq *q = a->st->impl;
    store__state s;
    store_item *it = a->out;
    int rc;

    pthread_mutex_lock(&q->r.mu);
    rc = read_item(q->r.db, q->rst[R_SEL_ITEM], a->sku, &s);
    pthread_mutex_unlock(&q->r.mu);
    if (rc < 0)
        return rc;
    if (!s.found)
        return -ENOENT;
    store__state_to_item(&s, a->sku, it);
    return 0;
}

/* The monitor's check (read_args: sku, after_id = the read's version, out =
 * int64_t[4]: version, updated_at_ms, first newer order's stamp and
 * version). */
static intptr_t version_check_blocking(void *arg)
{
    read_args *a = arg;
    sq *q = a->st->impl;
    sqlite3_stmt *s = q->rst[R_VERSION_CHECK];
    int64_t *v = a->out;
    pthread_mutex_lock(&q->r.mu);
    sqlite3_bind_text(s, 1, a->sku, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, a->after_id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        for (int i = 0; i < 4; i++)
            v[i] = sqlite3_column_int64(s, i);
        rc = 0;
    } else {
        rc = rc == SQLITE_DONE ? -ENOENT : sq_err(q->r.db, "version check");
    }
    sqlite3_reset(s);
    pthread_mutex_unlock(&q->r.mu);
    return rc;
}

static int sq_version_check(store *st, const char *sku, int64_t version,
                            store_version_info *out, int64_t *order_version,
                            int64_t *updated_at_ms)
{
    int64_t v[4] = {0, 0, 0, 0};
    read_args a = {.st = st, .sku = sku, .after_id = version, .out = v};
    int rc = (int)offload(version_check_blocking, &a);
    out->version = v[0];
    *updated_at_ms = v[1];
    out->first_newer_ms = v[2];
    *order_version = v[3];
    return rc;
}

static intptr_t order_blocking(void *arg)
{
    read_args *a = arg;
    sq *q = a->st->impl;
    pthread_mutex_lock(&q->r.mu);
    int rc = read_order(q->r.db, q->rst[R_ORDER_BY_KEY], a->sku, a->out);
    pthread_mutex_unlock(&q->r.mu);
    return rc < 0 ? rc : rc == 1 ? 0 : -ENOENT;
}

/* The order of an idempotency key (read_args.sku carries the key). */
static int sq_order_by_key(store *st, const char *key, store_order *out)
{
    read_args a = {.st = st, .sku = key, .out = out};
    return (int)offload(order_blocking, &a);
}

static int sq_get_item(store *st, const char *sku, store_item *out)
{
    read_args a = {.st = st, .sku = sku, .out = out};
    return (int)offload(get_blocking, &a);
}

/* Steps s (bound to sku) expecting one row; copies ncol int64 columns. */
static int one_row(sqlite3 *db, sqlite3_stmt *s, const char *sku, int64_t *v, int ncol)
{
    int rc;
    bind_text(s, 1, sku);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        for (int i = 0; i < ncol; i++)
            v[i] = sqlite3_column_int64(s, i);
        rc = SQLITE_DONE;
    }
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : sq_err(db, "audit");
}

static intptr_t audit_blocking(void *arg)
{
    read_args *a = arg;
    sq *q = a->st->impl;
    sqlite3 *db = q->r.db;
    store_audit_result *au = a->out;
    store__state s;
    int64_t v[2] = {0, 0};   /* one_row leaves them alone when no row comes */
    int rc;

    memset(au, 0, sizeof *au);
    pthread_mutex_lock(&q->r.mu);
    if ((rc = step_done(db, q->rst[R_BEGIN], "begin")) < 0)
        goto out_unlocked_tx;
    if ((rc = read_item(db, q->rst[R_SEL_ITEM], a->sku, &s)) < 0)
        goto out;
    if (!s.found) {
        rc = -ENOENT;
        goto out;
    }
    store__state_to_item(&s, a->sku, &au->item);
    if ((rc = one_row(db, q->rst[R_AUDIT_ORDERS], a->sku, v, 2)) < 0)
        goto out;
    au->orders = v[0];
    au->units_sold = v[1];
    if ((rc = one_row(db, q->rst[R_AUDIT_MAXUSER], a->sku, v, 1)) < 0)
        goto out;
    au->max_user_qty = v[0];
    if ((rc = one_row(db, q->rst[R_AUDIT_DUPKEYS], a->sku, v, 1)) < 0)
        goto out;
    au->duplicate_idempotency_keys = v[0];
    if (a->with_orders) {
        sqlite3_stmt *t = q->rst[R_AUDIT_IDS];
        size_t cap = (size_t)au->orders + 1;
        if ((au->order_ids = malloc(sizeof *au->order_ids * cap)) == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        bind_text(t, 1, a->sku);
        while ((rc = sqlite3_step(t)) == SQLITE_ROW && au->n_order_ids < cap)
            au->order_ids[au->n_order_ids++] = sqlite3_column_int64(t, 0);
        sqlite3_reset(t);
        rc = rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : sq_err(db, "audit ids");
    }
out:
    step_done(db, q->rst[R_COMMIT], "commit");
out_unlocked_tx:
    pthread_mutex_unlock(&q->r.mu);
    if (rc < 0)
        store_audit_free(au);
    return rc;
}

static int sq_audit(store *st, const char *sku, int with_orders, store_audit_result *out)
{
    read_args a = {.st = st, .sku = sku, .out = out, .with_orders = with_orders};
    return (int)offload(audit_blocking, &a);
}

typedef struct so_args {
    store *st;
    const char *sku;
    int64_t max;
    store__so_set *set;
} so_args;

/* The item and, when it is sold out, its orders, in one read transaction
 * (one WAL snapshot) on the reader. */
static intptr_t sold_out_blocking(void *arg)
{
    so_args *a = arg;
    sq *q = a->st->impl;
    sqlite3 *db = q->r.db;
    sqlite3_stmt *t = q->rst[R_SO_ORDERS];
    store__state s;
    int rc;

    pthread_mutex_lock(&q->r.mu);
    if ((rc = step_done(db, q->rst[R_BEGIN], "begin")) < 0)
        goto out_unlocked_tx;
    if ((rc = read_item(db, q->rst[R_SEL_ITEM], a->sku, &s)) < 0)
        goto out;
    store__so_set_item(a->set, &s);
    if (!s.found || s.stock != 0)
        goto out;
    bind_text(t, 1, a->sku);
    sqlite3_bind_int64(t, 2, a->max + 1);
    while ((rc = sqlite3_step(t)) == SQLITE_ROW) {
        if ((int64_t)store__so_count(a->set) >= a->max) {
            rc = -E2BIG;
            break;
        }
        const char *user = (const char *)sqlite3_column_text(t, 0);
        const char *key = (const char *)sqlite3_column_text(t, 2);
        if ((rc = store__so_add(a->set, user ? user : "", sqlite3_column_int64(t, 1), key,
                                sqlite3_column_int64(t, 3), sqlite3_column_int64(t, 4),
                                sqlite3_column_int64(t, 5))) < 0)
            break;
    }
    sqlite3_reset(t);
    if (rc == SQLITE_DONE)
        rc = 0;
    else if (rc > 0)
        rc = sq_err(db, "sold-out snapshot");
out:
    step_done(db, q->rst[R_COMMIT], "commit");
out_unlocked_tx:
    pthread_mutex_unlock(&q->r.mu);
    return rc;
}

static int sq_sold_out_read(store *st, const char *sku, int64_t max, store__so_set *set)
{
    so_args a = {.st = st, .sku = sku, .max = max, .set = set};
    return (int)offload(sold_out_blocking, &a);
}

static intptr_t outbox_fetch_blocking(void *arg)
{
    read_args *a = arg;
    sq *q = a->st->impl;
    sqlite3_stmt *s = q->rst[R_OUTBOX];
    store_outbox_row *rows = a->out;
    size_t n = 0;
    int rc;

    pthread_mutex_lock(&q->r.mu);
    sqlite3_bind_int64(s, 1, a->after_id);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)a->max);
    while (n < a->max && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        rows[n].id = sqlite3_column_int64(s, 0);
        copy_col(rows[n].sku, sizeof rows[n].sku, s, 1);
        rows[n].version = sqlite3_column_int64(s, 2);
        rows[n].committed_at_ms = sqlite3_column_int64(s, 3);
        rows[n].has_item = sqlite3_column_type(s, 4) != SQLITE_NULL;
        rows[n].stock = sqlite3_column_int64(s, 4);
        rows[n].per_user_limit = sqlite3_column_int64(s, 5);
        rows[n].sale_starts_at_ms = sqlite3_column_int64(s, 6);
        n++;
    }
    if (n == a->max)
        rc = SQLITE_DONE;
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        rc = sq_err(q->r.db, "outbox fetch");
    else
        rc = (int)n;
    pthread_mutex_unlock(&q->r.mu);
    return rc;
}

static intptr_t outbox_stats_blocking(void *arg)
{
    read_args *a = arg;
    sq *q = a->st->impl;
    sqlite3_stmt *s = q->rst[R_OUTBOX_STATS];
    int64_t *v = a->out;
    pthread_mutex_lock(&q->r.mu);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        v[0] = sqlite3_column_int64(s, 0);
        v[1] = sqlite3_column_int64(s, 1);
        rc = SQLITE_DONE;
    }
    sqlite3_reset(s);
    rc = rc == SQLITE_DONE ? 0 : sq_err(q->r.db, "outbox stats");
    pthread_mutex_unlock(&q->r.mu);
    return rc;
}

static int sq_outbox_stats(store *st, int64_t *rows, int64_t *oldest_ms)
{
    int64_t v[2] = {0, 0};
    read_args a = {.st = st, .out = v};
    int rc = (int)offload(outbox_stats_blocking, &a);
    *rows = v[0];
    *oldest_ms = v[1];
    return rc;
}

static int sq_outbox_fetch(store *st, int64_t after_id, size_t max, store_outbox_row *rows)
{
    read_args a = {.st = st, .out = rows, .after_id = after_id, .max = max};
    return (int)offload(outbox_fetch_blocking, &a);
}

static intptr_t outbox_delete_blocking(void *arg)
{
    read_args *a = arg;
    sq *q = a->st->impl;
    sqlite3 *db = q->w.db;
    int rc;

    pthread_mutex_lock(&q->w.mu);
    if ((rc = step_done(db, q->wst[W_BEGIN], "begin")) < 0)
        goto out;
    for (size_t i = 0; i < a->max && rc == 0; i++) {
        sqlite3_bind_int64(q->wst[W_DEL_OUTBOX], 1, a->ids[i]);
        rc = step_done(db, q->wst[W_DEL_OUTBOX], "outbox delete");
    }
    if (rc == 0)
        rc = step_done(db, q->wst[W_COMMIT], "commit");
    if (rc < 0 && sqlite3_get_autocommit(db) == 0)
        step_done(db, q->wst[W_ROLLBACK], "rollback");
out:
    pthread_mutex_unlock(&q->w.mu);
    return rc;
}

/* SQLite is the embedded store: one process owns the database file, and
 * its relay's held set already keeps it from publishing a row twice. So a
 * claim is a plain read on the reader connection: writing the claim would
 * cost a write transaction, and with synchronous=FULL an fsync, per relay
 * round, which doubled the fsyncs of a busy sale. The claim columns stay
 * unused here. */
static int sq_outbox_claim(store *st, const char *claimer, int64_t lease_ms, int mine,
                           int64_t after_id, size_t max, store_outbox_row *rows)
{
    (void)claimer;
    (void)lease_ms;
    (void)mine;
    return sq_outbox_fetch(st, after_id, max, rows);
}

static int sq_outbox_delete(store *st, const int64_t *ids, size_t n)
{
    read_args a = {.st = st, .ids = ids, .max = n};
    return (int)offload(outbox_delete_blocking, &a);
}

static intptr_t ping_blocking(void *arg)
{
    sq *q = ((store *)arg)->impl;
    sqlite3_stmt *s = q->rst[R_PING];
    int rc;
    pthread_mutex_lock(&q->r.mu);
    rc = sqlite3_step(s);
    sqlite3_reset(s);
    pthread_mutex_unlock(&q->r.mu);
    return rc == SQLITE_ROW ? 0 : -EIO;
}

static int sq_ping(store *st)
{
    return (int)offload(ping_blocking, st);
}

/* ---- open / close ---------------------------------------------------- */

static void conn_close(sq_conn *c, sqlite3_stmt **stmts, int n)
{
    for (int i = 0; i < n; i++)
        if (stmts[i] != NULL)
            sqlite3_finalize(stmts[i]);
    if (c->db != NULL)
        sqlite3_close(c->db);
    c->db = NULL;
    pthread_mutex_destroy(&c->mu);
}

static int conn_open(sq_conn *c, const char *path, int timeout_ms)
{
    char *err = NULL;
    if (sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                        SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        char qp[256], qe[256];
        rt_log(RT_LOG_ERROR, "store", "sqlite open failed", "path=%s err=%s",
               rt_log_q(qp, sizeof qp, path),
               rt_log_q(qe, sizeof qe, c->db ? sqlite3_errmsg(c->db) : "out of memory"));
        return -EIO;
    }
    sqlite3_busy_timeout(c->db, timeout_ms);
    if (sqlite3_exec(c->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
                     NULL, NULL, &err) != SQLITE_OK) {
        char q[256];
        rt_log(RT_LOG_ERROR, "store", "sqlite pragmas failed", "err=%s",
               rt_log_q(q, sizeof q, err ? err : "?"));
        sqlite3_free(err);
        return -EIO;
    }
    return 0;
}

static int prepare_all(sqlite3 *db, sqlite3_stmt **stmts, const char *const *sql, int n)
{
    for (int i = 0; i < n; i++)
        if (sqlite3_prepare_v3(db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &stmts[i], NULL) !=
            SQLITE_OK)
            return sq_err(db, sql[i]);
    return 0;
}

/* Applies the migrations above the recorded version, each in a
 * transaction that holds the write lock. */
static int migrate(sqlite3 *db)
{
    char *err = NULL;
    char sql[128], qerr[256];
    int rc = 0, have = 0;
    sqlite3_stmt *s = NULL;

    if (sqlite3_exec(db, "CREATE TABLE IF NOT EXISTS schema_version ("
                         " version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL)",
                     NULL, NULL, &err) != SQLITE_OK)
        goto fail;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &err) != SQLITE_OK)
        goto fail;
    if (sqlite3_prepare_v2(db, "SELECT coalesce(max(version), 0) FROM schema_version", -1, &s,
                           NULL) != SQLITE_OK || sqlite3_step(s) != SQLITE_ROW) {
        rc = sq_err(db, "schema_version");
        sqlite3_finalize(s);
        goto rollback;
    }
    have = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    if (have > store__schema_version()) {
        rt_log(RT_LOG_ERROR, "store", "database schema is newer than this build",
               "backend=sqlite schema_version=%d supported=%d", have, store__schema_version());
        rc = -EIO;
        goto rollback;
    }
    for (int v = have + 1; v <= store__schema_version(); v++) {
        if (sqlite3_exec(db, store__migration(STORE__SQLITE, v), NULL, NULL, &err) != SQLITE_OK)
            goto fail_tx;
        snprintf(sql, sizeof sql, "INSERT INTO schema_version VALUES (%d, %lld)", v,
                 (long long)kit_wall_ms());
        if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
            goto fail_tx;
    }
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, &err) != SQLITE_OK)
        goto fail_tx;
    return 0;
fail_tx:
    rt_log(RT_LOG_ERROR, "store", "sqlite migration failed", "err=%s",
           rt_log_q(qerr, sizeof qerr, err ? err : "?"));
    sqlite3_free(err);
    rc = -EIO;
rollback:
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
fail:
    rt_log(RT_LOG_ERROR, "store", "sqlite migration failed", "err=%s",
           rt_log_q(qerr, sizeof qerr, err ? err : "?"));
    sqlite3_free(err);
    return -EIO;
}

static void sq_free(sq *q)
{
    conn_close(&q->r, q->rst, R_NSTMT);
    conn_close(&q->w, q->wst, W_NSTMT);
    free(q);
}

typedef struct open_args {
    store *st;
    const char *path;
} open_args;

static intptr_t open_blocking(void *arg)
{
    open_args *a = arg;
    sq *q = calloc(1, sizeof *q);
    int rc;

    if (q == NULL)
        return -ENOMEM;
    pthread_mutex_init(&q->w.mu, NULL);
    pthread_mutex_init(&q->r.mu, NULL);
    if ((rc = conn_open(&q->w, a->path, a->st->cfg.timeout_ms)) < 0 ||
        (rc = migrate(q->w.db)) < 0 ||
        (rc = prepare_all(q->w.db, q->wst, w_sql, W_NSTMT)) < 0 ||
        (rc = conn_open(&q->r, a->path, a->st->cfg.timeout_ms)) < 0 ||
        (rc = prepare_all(q->r.db, q->rst, r_sql, R_NSTMT)) < 0) {
        sq_free(q);
        return rc;
    }
    a->st->impl = q;
    return 0;
}

static intptr_t close_blocking(void *arg)
{
    sq_free(((store *)arg)->impl);
    return 0;
}

static void sq_close(store *st)
{
    offload(close_blocking, st);
    st->impl = NULL;
}

static const store__backend sqlite_backend = {
    .name = "sqlite",
    .batch = sq_batch,
    .get_item = sq_get_item,
    .order_by_key = sq_order_by_key,
    .audit = sq_audit,
    .outbox_fetch = sq_outbox_fetch,
    .outbox_delete = sq_outbox_delete,
    .outbox_claim = sq_outbox_claim,
    .outbox_stats = sq_outbox_stats,
    .version_check = sq_version_check,
    .ping = sq_ping,
    .sold_out_read = sq_sold_out_read,
    .close = sq_close,
};

int store__sqlite_open(store *st, const char *path)
{
    open_args a = {st, path};
    int rc;
    if (path[0] == '\0')
        return -EINVAL;
    if ((rc = (int)offload(open_blocking, &a)) < 0)
        return rc;
    st->be = &sqlite_backend;
    return 0;
}
