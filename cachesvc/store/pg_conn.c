/*
 * pg_conn.c: talking to PostgreSQL. libpq in non-blocking mode on the
 * runtime's netpoll (the connection's socket is registered with
 * rt_fd_register and a coroutine's waits are rt_wait_fd), or in poll() on
 * a thread of the blocking pool (the batch transaction, pg_batch.c);
 * pipeline mode, so that the statements of one step travel in one round
 * trip; the statements prepared on every connection; a fixed pool of
 * connections opened lazily and reopened with exponential backoff; and the
 * small helpers that turn values into parameters and results into values.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <poll.h>

#include <libpq-fe.h>

#include "cachesvc/store/pg_int.h"

/* The statements every batch, read and relay call runs, prepared once per
 * connection (named "s<index>") with generic plans: parsing and planning
 * them on every call was a fifth of the server's CPU per batch. */
#define SELECT_BOUGHT "SELECT user_id, qty FROM purchases WHERE sku = $1 AND user_id = ANY($2::text[])"
/* The item's row beside an outbox row, NULL unless it still stands at the
 * row's version (i: items LEFT JOINed on sku and version). */
#define OUTBOX_ITEM_COLS "i.stock, i.per_user_limit, i.sale_starts_at_ms"
#define SELECT_IDS "SELECT nextval('orders_order_id_seq') FROM generate_series(1, $1::int)"

static const char *const ps_sql[PS_COUNT] = {
    [PS_BEGIN] = "BEGIN",
    [PS_COMMIT] = "COMMIT",
    [PS_ROLLBACK] = "ROLLBACK",
    [PS_LOCK_ITEM] = "SELECT " ITEM_COLS " FROM items WHERE sku = $1 FOR UPDATE",
    [PS_KEYS] = "SELECT idempotency_key, order_id, sku, user_id, qty, stock_after, version_after"
                " FROM orders WHERE idempotency_key = ANY($1::text[])",
    /* The buyers' totals matter only under a per-user limit (a batch that
     * switches one on rebuilds them and reads PS_BOUGHT). */
    [PS_BOUGHT_LIMITED] = SELECT_BOUGHT
                          " AND EXISTS (SELECT 1 FROM items WHERE sku = $1 AND per_user_limit > 0)",
    [PS_BOUGHT] = SELECT_BOUGHT,
    [PS_IDS] = SELECT_IDS,
    [PS_REBUILD] = "INSERT INTO purchases (sku, user_id, qty)"
                   " SELECT sku, user_id, sum(qty) FROM orders WHERE sku = $1"
                   " GROUP BY sku, user_id ON CONFLICT (sku, user_id)"
                   " DO UPDATE SET qty = EXCLUDED.qty",
    [PS_INS_ORDERS] = "INSERT INTO orders (order_id, sku, user_id, qty, idempotency_key,"
                      " created_at_ms, stock_after, version_after)"
                      " SELECT o, $1, u, q, k, $2, $3, $4 FROM unnest($5::bigint[],"
                      " $6::text[], $7::bigint[], $8::text[]) AS t(o, u, q, k)",
    [PS_UPS_PURCHASES] = "INSERT INTO purchases (sku, user_id, qty)"
                         " SELECT $1, u, q FROM unnest($2::text[], $3::bigint[]) AS t(u, q)"
                         " ON CONFLICT (sku, user_id) DO UPDATE"
                         " SET qty = purchases.qty + EXCLUDED.qty",
    [PS_UPD_ITEM] = "UPDATE items SET stock = $2, version = $3, per_user_limit = $4,"
                    " sale_starts_at_ms = $5, units_supplied = $6, updated_at_ms = $7"
                    " WHERE sku = $1",
    [PS_INS_ITEM] = "INSERT INTO items (sku, stock, version, per_user_limit,"
                    " sale_starts_at_ms, units_supplied, updated_at_ms)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7)",
    [PS_INS_OUTBOX] = "INSERT INTO outbox (sku, version, committed_at_ms) VALUES ($1, $2, $3)",
    [PS_GET_ITEM] = "SELECT " ITEM_COLS " FROM items WHERE sku = $1",
    [PS_OUTBOX_FETCH] = "SELECT o.id, o.sku, o.version, o.committed_at_ms, " OUTBOX_ITEM_COLS
                        " FROM outbox o LEFT JOIN items i ON i.sku = o.sku AND i.version = o.version"
                        " WHERE o.id > $1 ORDER BY o.id LIMIT $2",
    [PS_OUTBOX_DEL] = "DELETE FROM outbox WHERE id = ANY($1::bigint[])",
    [PS_ASYNC_COMMIT] = "SELECT set_config('synchronous_commit', 'off', true)",
    [PS_PING] = "SELECT 1",
    /* The one-round-trip batch (batch_known): lock the row, failing with
     * division_by_zero unless it is still the state the batch was decided
     * on ($2..$6: version, stock, per-user limit, sale start, units
     * supplied: a row changed without a new version, by hand or by a
     * restore, fails too); orders take their ids from the sequence as they
     * are inserted. A failure rolls back and reruns the batch as usual.
     * The row is locked by its key alone and compared once locked: a
     * pipelined batch expects the version the batch before it is
     * committing, and a WHERE on that version would not match the row
     * still visible, so it would fail at once instead of waiting. */
    [PS_GUARD] = "SELECT 1 / coalesce((SELECT CASE WHEN version = $2 AND stock = $3"
                 " AND per_user_limit = $4 AND sale_starts_at_ms = $5 AND units_supplied = $6"
                 " THEN 1 ELSE 0 END FROM items WHERE sku = $1 FOR UPDATE), 0)",
    /* The one-round-trip batch under a per-user limit, or with keyed
     * requests it refused: under the item's row lock (PS_GUARD first),
     * failing with division_by_zero unless every buyer's total is the one
     * the batch was decided on ($2, $3: users, totals; no row is 0) and
     * none of the keys $4 was committed before (such a request replays
     * its order instead). */
    [PS_CHECK_PRIOR] = "SELECT 1 / (NOT EXISTS (SELECT 1 FROM unnest($2::text[], $3::bigint[])"
                       " AS a(u, q) WHERE q <> coalesce((SELECT p.qty FROM purchases p"
                       " WHERE p.sku = $1 AND p.user_id = a.u), 0))"
                       " AND NOT EXISTS (SELECT 1 FROM orders"
                       " WHERE idempotency_key = ANY($4::text[])))::int",
    /* PS_CHECK_PRIOR and the purchase deltas in one statement, for the
     * one-round-trip batch under a per-user limit: each buyer with orders
     * in the batch ($5, $6, $7: users, deltas, the totals the batch was
     * decided on) gets its total written, a new row where it assumed 0
     * (a row already there fails the primary key: unique_violation) and
     * otherwise only where the total is the one assumed (else
     * division_by_zero); the buyers it only refused ($2, $3) and the keys
     * it refused ($4) are checked as in PS_CHECK_PRIOR. Each buyer's row
     * is looked up once, not once to check and again to write (an upsert
     * with ON CONFLICT measured as slow as the two statements). A row at
     * qty 0, which only a hand edit leaves, counts as a row here: that
     * buyer's first try fails and the rerun with reads writes the total. */
    [PS_CHECK_BUYERS] = "WITH w AS (SELECT u, d, e FROM unnest($5::text[], $6::bigint[],"
                        " $7::bigint[]) AS w(u, d, e)),"
                        " n AS (INSERT INTO purchases (sku, user_id, qty)"
                        " SELECT $1, u, d FROM w WHERE e = 0),"
                        " o AS (UPDATE purchases p SET qty = p.qty + w.d FROM w"
                        " WHERE w.e > 0 AND p.sku = $1 AND p.user_id = w.u AND p.qty = w.e"
                        " RETURNING 1)"
                        " SELECT 1 / ((SELECT count(*) FROM o) = (SELECT count(*) FROM w"
                        " WHERE e > 0) AND NOT EXISTS (SELECT 1 FROM unnest($2::text[],"
                        " $3::bigint[]) AS a(u, q) WHERE q <> coalesce((SELECT p.qty"
                        " FROM purchases p WHERE p.sku = $1 AND p.user_id = a.u), 0))"
                        " AND NOT EXISTS (SELECT 1 FROM orders"
                        " WHERE idempotency_key = ANY($4::text[])))::int",
    /* The ids come back in the order of the arrays: RETURNING's row order
     * is not defined, so each id is taken once (a CTE referenced twice is
     * computed once) and listed by the element's position. */
    [PS_INS_ORDERS_NEW] = "WITH t AS MATERIALIZED (SELECT nextval('orders_order_id_seq') AS o,"
                          " u, q, k, n FROM unnest($5::text[], $6::bigint[], $7::text[])"
                          " WITH ORDINALITY AS a(u, q, k, n)),"
                          " i AS (INSERT INTO orders (order_id, sku, user_id, qty,"
                          " idempotency_key, created_at_ms, stock_after, version_after)"
                          " SELECT o, $1, u, q, k, $2, $3, $4 FROM t)"
                          " SELECT o FROM t ORDER BY n",
    /* Bounds the one-round-trip batch's lock waits (lock_timeout_of). */
    [PS_LOCK_TIMEOUT] = "SELECT set_config('lock_timeout', $1, true)",
    [PS_ORDER_BY_KEY] = "SELECT order_id, sku, user_id, qty, stock_after, version_after"
                        " FROM orders WHERE idempotency_key = $1",
    [PS_OUTBOX_STATS] = "SELECT count(*), coalesce(min(committed_at_ms), 0) FROM outbox",
    [PS_VERSION_CHECK] = "SELECT i.version, i.updated_at_ms, coalesce(o.t, 0), coalesce(o.v, 0)"
                         " FROM items i, LATERAL (SELECT min(created_at_ms) AS t, min(version_after) AS v"
                         " FROM (SELECT created_at_ms, version_after FROM orders WHERE sku = $1"
                         " ORDER BY order_id DESC LIMIT 64) r WHERE r.version_after > $2::bigint) o"
                         " WHERE i.sku = $1",
    /* Claims on the database's clock, so that relays on hosts whose clocks
     * differ agree on when a lease ends; SKIP LOCKED lets two relays
     * claiming at once take different rows. */
    [PS_OUTBOX_CLAIM] = "WITH c AS (SELECT id FROM outbox WHERE id > $1 AND"
                        " (claimed_until_ms < (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
                        " OR ($4::boolean AND claimed_by = $3)) ORDER BY id LIMIT $2"
                        " FOR UPDATE SKIP LOCKED),"
                        " u AS (UPDATE outbox o SET claimed_by = $3, claimed_until_ms ="
                        " (extract(epoch FROM clock_timestamp()) * 1000)::bigint + $5"
                        " FROM c WHERE o.id = c.id"
                        " RETURNING o.id, o.sku, o.version, o.committed_at_ms)"
                        " SELECT o.id, o.sku, o.version, o.committed_at_ms, " OUTBOX_ITEM_COLS
                        " FROM u o LEFT JOIN items i ON i.sku = o.sku AND i.version = o.version",
};

/* ---- array literals ----------------------------------------------------- */

/* Appends s as a quoted element of a text[] literal (NULL for NULL). Ids
 * never need escaping; keys may hold '"' or '\\', copied around in spans. */
void store__pg_sb_elem(kit_buf *b, const char *s)
{
    if (b->len > 1)
        kit_buf_append(b, ",", 1);
    if (s == NULL) {
        kit_buf_append(b, "NULL", 4);
        return;
    }
    kit_buf_append(b, "\"", 1);
    for (;;) {
        size_t span = strcspn(s, "\"\\");
        kit_buf_append(b, s, span);
        if (s[span] == '\0')
            break;
        kit_buf_append(b, "\\", 1);
        kit_buf_append(b, s + span, 1);
        s += span + 1;
    }
    kit_buf_append(b, "\"", 1);
}

/* Formats v in decimal into t (room for 21 bytes); returns the length. */
static size_t fmt_i64(char *t, int64_t v)
{
    char tmp[24];
    size_t n = 0, len = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        t[len++] = '-';
    while (n > 0)
        t[len++] = tmp[--n];
    t[len] = '\0';
    return len;
}

void store__pg_sb_int(kit_buf *b, int64_t v)
{
    char t[24];
    if (b->len > 1)
        kit_buf_append(b, ",", 1);
    kit_buf_append(b, t, fmt_i64(t, v));
}

/* ---- connection I/O on the netpoll -------------------------------------- */

void store__pg_drop(store__pg_conn *pc)
{
    if (pc->c == NULL)
        return;
    if (pc->fd >= 0)
        rt_fd_unregister(pc->fd);
    PQfinish(pc->c);
    pc->c = NULL;
    pc->fd = -1;
    pc->prepared = 0;
}

/* Server notices (e.g. "already exists, skipping") are not errors. */
static void quiet_notice(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

/* Connects pc to url before deadline; verbose: say why on failure.
 * Returns 0 or -EIO/-ETIMEDOUT/-ENOMEM. */
int store__pg_connect(store__pg_conn *pc, const char *url, int64_t deadline, int verbose)
{
    PGconn *c = PQconnectStart(url);
    int fd = -1, rc;

    if (c == NULL)
        return -ENOMEM;
    pc->c = c;
    pc->fd = -1;
    if (PQstatus(c) == CONNECTION_BAD) {
        rc = -EIO;
        goto fail;
    }
    for (;;) {
        PostgresPollingStatusType ps = PQconnectPoll(c);
        /* Each step may be on a new socket: a multi-host URL (or an SSL
         * retry) closes one and opens the next, which usually gets the
         * closed one's number, whose epoll registration the close dropped.
         * So register afresh at every step (a handful per connect); the
         * add reports what is ready already. */
        int nfd = PQsocket(c);
        if (fd >= 0)
            rt_fd_unregister(fd);
        fd = pc->fd = -1;
        if (nfd >= 0) {
            if ((rc = rt_fd_register(nfd)) < 0)
                goto fail;
            fd = pc->fd = nfd;
        }
        if (ps == PGRES_POLLING_OK)
            break;
        if (ps == PGRES_POLLING_FAILED) {
            rc = -EIO;
            goto fail;
        }
        rc = rt_wait_fd(fd, ps == PGRES_POLLING_READING ? RT_READ : RT_WRITE, deadline);
        if (rc < 0)
            goto fail;
    }
    PQsetNoticeProcessor(c, quiet_notice, NULL);
    if (PQsetnonblocking(c, 1) != 0 || PQenterPipelineMode(c) != 1) {
        rc = -EIO;
        goto fail;
    }
    return 0;
fail:
    if (rc == -EIO && verbose && rt_log_enabled(RT_LOG_WARN)) {
        char q[512];
        rt_log(RT_LOG_WARN, "store", "postgresql connect failed", "err=%s",
               rt_log_q(q, sizeof q, PQerrorMessage(c)));
    }
    store__pg_drop(pc);
    return rc == -ECANCELED ? -EIO : rc;
}

/* Waits until pc's socket is ready for events (RT_READ / RT_WRITE) or
 * the deadline passes. On a coroutine it parks on the netpoll; on an OS
 * thread of the blocking pool (a batch transaction, see pg_batch.c) it
 * blocks in poll(). Returns the ready events or a negative errno. */
static int conn_wait(store__pg_conn *pc, int events, int64_t deadline)
{
    if (rt_self() != NULL)
        return rt_wait_fd(pc->fd, events, deadline);
    struct pollfd pfd = {.fd = pc->fd,
                         .events = (short)(((events & RT_READ) ? POLLIN : 0) |
                                           ((events & RT_WRITE) ? POLLOUT : 0))};
    for (;;) {
        int64_t left = deadline == RT_NO_DEADLINE ? -1 : deadline - rt_now_ns();
        if (left != -1 && left <= 0)
            return -ETIMEDOUT;
        int ms = left == -1 ? -1 : left > 3600000000000LL ? 3600000 : (int)((left + 999999) / 1000000);
        int r = poll(&pfd, 1, ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -EIO;
        if (r == 0)
            continue;   /* the deadline is checked above */
        int ev = 0;
        if (pfd.revents & (POLLIN | POLLERR | POLLHUP))
            ev |= RT_READ;
        if (pfd.revents & (POLLOUT | POLLERR | POLLHUP))
            ev |= RT_WRITE;
        if (pfd.revents & POLLNVAL)
            return -EIO;
        return ev != 0 ? ev : events;
    }
}

/* Sends everything buffered. Returns 0 or a negative errno. */
int store__pg_flush(store__pg_conn *pc, int64_t deadline)
{
    for (;;) {
        int r = PQflush(pc->c);
        if (r == 0)
            return 0;
        if (r < 0)
            return -EIO;
        int ev = conn_wait(pc, RT_READ | RT_WRITE, deadline);
        if (ev < 0)
            return ev == -ECANCELED ? -EIO : ev;
        if ((ev & RT_READ) && !PQconsumeInput(pc->c))
            return -EIO;
    }
}

/* The next result of the pipeline (NULL between queries). Returns 0 or a
 * negative errno (the connection is then unusable). */
int store__pg_result(store__pg_conn *pc, int64_t deadline, PGresult **out)
{
    *out = NULL;
    for (;;) {
        if (!PQconsumeInput(pc->c))
            return -EIO;
        if (!PQisBusy(pc->c))
            break;
        /* libpq may leave data in the socket (past 32 kB it reads on only
         * while its buffer has room), and the netpoll is edge-triggered:
         * parking then would wait for bytes that already came, until the
         * deadline. Large results (a sold-out item's orders) hit this. */
        struct pollfd pfd = {.fd = pc->fd, .events = POLLIN};
        if (poll(&pfd, 1, 0) > 0)
            continue;
        int ev = conn_wait(pc, RT_READ, deadline);
        if (ev < 0)
            return ev == -ECANCELED ? -EIO : ev;
    }
    *out = PQgetResult(pc->c);
    return 0;
}

/* Collects the results of n queries followed by a Sync into res[0..n-1]
 * (the caller PQclears them). Returns 0 when the transport worked (check
 * each result's status), or a negative errno; *first_err gets the index of
 * the first query that failed with an SQL error, or -1. */
int store__pg_collect(store__pg_conn *pc, int64_t deadline, PGresult **res, int n,
                      int *first_err)
{
    return store__pg_collect_at(pc, deadline, res, n, first_err, -1, NULL, NULL);
}

int store__pg_collect_at(store__pg_conn *pc, int64_t deadline, PGresult **res, int n,
                         int *first_err, int after, void (*at)(void *), void *arg)
{
    PGresult *r;
    int rc;

    KIT_ASSERT(after < n);
    *first_err = -1;
    for (int i = 0; i < n; i++)
        res[i] = NULL;
    for (int i = 0; i < n; i++) {
        if (i == after && *first_err < 0)
            at(arg);
        if ((rc = store__pg_result(pc, deadline, &res[i])) < 0)
            return rc;
        if (res[i] == NULL)
            return -EIO;
        ExecStatusType s = PQresultStatus(res[i]);
        if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK && *first_err < 0)
            *first_err = i;
        if (s == PGRES_FATAL_ERROR && PQstatus(pc->c) == CONNECTION_BAD)
            return -EIO;
        if ((rc = store__pg_result(pc, deadline, &r)) < 0)   /* the NULL after it */
            return rc;
        if (r != NULL) {
            PQclear(r);
            return -EIO;
        }
    }
    if ((rc = store__pg_result(pc, deadline, &r)) < 0)
        return rc;
    if (r == NULL || PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
        PQclear(r);
        return -EIO;
    }
    PQclear(r);
    return 0;
}

void store__pg_clear(PGresult **res, int n)
{
    for (int i = 0; i < n; i++) {
        PQclear(res[i]);
        res[i] = NULL;
    }
}

int store__pg_send(store__pg_conn *pc, const char *sql, int nparams, const char *const *params)
{
    return PQsendQueryParams(pc->c, sql, nparams, NULL, params, NULL, NULL, 0) == 1 ? 0 : -EIO;
}

static void ps_name(char *buf, size_t cap, int ps)
{
    snprintf(buf, cap, "s%d", ps);
}

/* Sends prepared statement ps (see ps_sql). */
int store__pg_exec(store__pg_conn *pc, int ps, int nparams, const char *const *params)
{
    char name[16];
    ps_name(name, sizeof name, ps);
    return PQsendQueryPrepared(pc->c, name, nparams, params, NULL, NULL, 0) == 1 ? 0 : -EIO;
}

/* Prepares ps_sql[] on a new connection, in one round trip. Returns 0 or
 * a negative errno (the caller drops the connection). */
static int conn_prepare(store__pg_conn *pc, int64_t deadline)
{
    /* Generic plans are made once, on tables that may still be empty
     * (a fresh database): without seq scans each one is the index plan it
     * must stay as the tables grow. Every statement has an index to use.
     * Without bitmap scans too: on an empty table the newest orders of an
     * item (PS_VERSION_CHECK) were planned as a bitmap scan of all its
     * orders and a sort, 2-3 ms for a sold-out item of 10,000 orders,
     * instead of reading 64 entries of the index backwards. And without
     * JIT: a disabled seq scan costs 1e10, past every JIT threshold, so
     * the outbox count (a seq scan: no index serves it) was compiled on
     * every call, 65-130 ms of CPU each. */
    static const char *const settings[] = {
        "SET plan_cache_mode = force_generic_plan", "SET enable_seqscan = off",
        "SET enable_bitmapscan = off", "SET jit = off"};
    enum { NSET = sizeof settings / sizeof settings[0] };
    PGresult *res[PS_COUNT + NSET] = {0};
    char name[16];
    int rc = -EIO, fe;

    for (int i = 0; i < NSET; i++)
        if (store__pg_send(pc, settings[i], 0, NULL) < 0)
            return -EIO;
    for (int i = 0; i < PS_COUNT; i++) {
        ps_name(name, sizeof name, i);
        if (PQsendPrepare(pc->c, name, ps_sql[i], 0, NULL) != 1)
            return -EIO;
    }
    if (PQpipelineSync(pc->c) != 1)
        return -EIO;
    if ((rc = store__pg_flush(pc, deadline)) == 0 &&
        (rc = store__pg_collect(pc, deadline, res, PS_COUNT + NSET, &fe)) == 0 && fe >= 0) {
        char q[512];
        rt_log(RT_LOG_ERROR, "store", "postgresql prepare failed", "err=%s",
               rt_log_q(q, sizeof q, PQresultErrorMessage(res[fe])));
        rc = -EIO;
    }
    store__pg_clear(res, PS_COUNT + NSET);
    if (rc == 0)
        pc->prepared = 1;
    return rc;
}

/* Ends the open transaction and waits: ROLLBACK, or with durable
 * PG_DURABLE_SQL and COMMIT (pg_int.h). On failure the connection is
 * dropped by the caller (it reports the error). */
int store__pg_end(store__pg_conn *pc, int64_t deadline, int durable)
{
    PGresult *res[2] = {0};
    int n = durable ? 2 : 1, fe, rc;
    if ((durable ? store__pg_send(pc, PG_DURABLE_SQL, 0, NULL) < 0 ||
                       store__pg_exec(pc, PS_COMMIT, 0, NULL) < 0
                 : store__pg_exec(pc, PS_ROLLBACK, 0, NULL) < 0) ||
        PQpipelineSync(pc->c) != 1)
        return -EIO;
    if ((rc = store__pg_flush(pc, deadline)) < 0)
        return rc;
    rc = store__pg_collect(pc, deadline, res, n, &fe);
    if (rc == 0 && fe >= 0) {
        if (durable)
            store__pg_sql_error("durable commit", res[fe]);
        rc = -EIO;
    }
    store__pg_clear(res, n);
    return rc;
}

/* ---- the pool ----------------------------------------------------------- */

/* Takes a connected slot. Returns it, or NULL with *err set: -ETIMEDOUT,
 * -EIO (cannot connect, or within the reconnect backoff). */
store__pg_conn *store__pg_pool_get(store *st, int64_t deadline, int *err)
{
    store__pg *p = st->impl;
    store__pg_conn *pc = NULL;
    int rc;

    if ((rc = rt_sem_acquire(p->sem, deadline)) < 0) {
        *err = rc;
        return NULL;
    }
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->n; i++)    /* prefer an open connection */
        if (!p->conns[i].in_use && (pc == NULL || (pc->c == NULL && p->conns[i].c != NULL)))
            pc = &p->conns[i];
    pc->in_use = 1;
    if (pc->c != NULL && PQstatus(pc->c) == CONNECTION_OK) {
        pthread_mutex_unlock(&p->mu);
        if (pc->prepared || conn_prepare(pc, deadline) == 0)
            return pc;
        pthread_mutex_lock(&p->mu);   /* not usable after all: reconnect */
    }
    if (rt_now_ns() < p->next_connect_ns) {
        pthread_mutex_unlock(&p->mu);
        rc = -EIO;
        goto fail;
    }
    pthread_mutex_unlock(&p->mu);

    store__pg_drop(pc);
    /* Only the first failure of a streak is reported. */
    rc = store__pg_connect(pc, p->url, deadline, p->backoff_ms == st->cfg.reconnect_min_ms);
    if (rc == 0 && (rc = conn_prepare(pc, deadline)) < 0)
        store__pg_drop(pc);
    pthread_mutex_lock(&p->mu);
    if (rc < 0) {
        p->connect_failed = 1;
        p->next_connect_ns = rt_now_ns() + (int64_t)p->backoff_ms * 1000000;
        p->backoff_ms *= 2;
        if (p->backoff_ms > st->cfg.reconnect_max_ms)
            p->backoff_ms = st->cfg.reconnect_max_ms;
    } else {
        p->backoff_ms = st->cfg.reconnect_min_ms;
        p->next_connect_ns = 0;
        STORE__STAT_ADD(st, reconnects, 1);
        /* After a failed connect the database may have changed (or been
         * replaced) meanwhile: the one-round-trip batches start over from
         * reads. The pool opening one more connection under load says
         * nothing of the kind, and forgetting the buyers' totals then
         * sent every later batch of a sale with a per-user limit to its
         * reads. */
        if (p->connect_failed)
            store__pg_known_forget_locked(p);
        p->connect_failed = 0;
    }
    pthread_mutex_unlock(&p->mu);
    if (rc == 0)
        return pc;
fail:
    pthread_mutex_lock(&p->mu);
    pc->in_use = 0;
    pthread_mutex_unlock(&p->mu);
    rt_sem_release(p->sem);
    *err = rc == -ETIMEDOUT ? -ETIMEDOUT : -EIO;
    return NULL;
}

/* Returns a slot; broken: close its connection first. A connection goes
 * back to the pool only when it is idle: results still due (a wait that
 * timed out, a reply that did not match) or a transaction left open or
 * failed (a rollback that timed out) would be read by the next caller as
 * its own, so such a connection is closed instead. */
void store__pg_pool_put(store *st, store__pg_conn *pc, int broken)
{
    store__pg *p = st->impl;
    if (broken || (pc->c != NULL && (PQstatus(pc->c) != CONNECTION_OK ||
                                     PQtransactionStatus(pc->c) != PQTRANS_IDLE)))
        store__pg_drop(pc);
    pthread_mutex_lock(&p->mu);
    pc->in_use = 0;
    pthread_mutex_unlock(&p->mu);
    rt_sem_release(p->sem);
}

/* ---- result columns, errors --------------------------------------------- */

/* An order's columns (order_id, sku, user_id, qty, stock_after,
 * version_after) from column col on. */
void store__pg_row_order(PGresult *r, int row, int col, store_order *o)
{
    o->order_id = store__pg_i64(r, row, col);
    snprintf(o->sku, sizeof o->sku, "%s", PQgetvalue(r, row, col + 1));
    snprintf(o->user_id, sizeof o->user_id, "%s", PQgetvalue(r, row, col + 2));
    o->qty = store__pg_i64(r, row, col + 3);
    o->stock = store__pg_i64(r, row, col + 4);
    o->version = store__pg_i64(r, row, col + 5);
}

/* The item row of a "SELECT stock, version, per_user_limit,
 * sale_starts_at_ms, units_supplied" (no row: not found). */
void store__pg_row_state(PGresult *r, store__state *s)
{
    memset(s, 0, sizeof *s);
    if (PQntuples(r) != 1)
        return;
    s->found = 1;
    s->stock = store__pg_i64(r, 0, 0);
    s->version = store__pg_i64(r, 0, 1);
    s->per_user_limit = store__pg_i64(r, 0, 2);
    s->sale_starts_at_ms = store__pg_i64(r, 0, 3);
    s->units_supplied = store__pg_i64(r, 0, 4);
}

void store__pg_sql_error(const char *what, PGresult *r)
{
    if (!rt_log_enabled(RT_LOG_WARN))
        return;
    char qw[64], q[512];
    rt_log(RT_LOG_WARN, "store", "postgresql statement failed", "op=%s sqlstate=%s err=%s",
           rt_log_q(qw, sizeof qw, what),
           r && PQresultErrorField(r, PG_DIAG_SQLSTATE) ? PQresultErrorField(r, PG_DIAG_SQLSTATE)
                                                        : "none",
           rt_log_q(q, sizeof q, r ? PQresultErrorMessage(r) : "no result"));
}
