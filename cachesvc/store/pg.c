/*
 * pg.c: the PostgreSQL backend. libpq in non-blocking mode on the
 * runtime's netpoll (the connection's socket is registered with
 * rt_fd_register and a coroutine's waits are rt_wait_fd), pipeline mode so
 * that the statements of one step travel in one round trip, and a fixed
 * pool of connections opened lazily and reopened with exponential backoff.
 * The batch transaction runs on a thread of the runtime's blocking pool
 * (rt_blocking), whose waits are poll(): see batch_run.
 *
 * A batch is two round trips:
 *   1. BEGIN; lock the item row (SELECT ... FOR UPDATE); look up the
 *      batch's idempotency keys and its buyers' purchases; take order ids
 *      from the orders sequence; Sync.
 *   2. after deciding in memory: insert the orders, upsert the purchases,
 *      write the item and one outbox row, COMMIT; Sync.
 * A failure before round 2 was sent leaves nothing applied (-EIO or
 * -ETIMEDOUT). A broken connection or timeout after round 2 was sent, with
 * no error answered first, means COMMIT's outcome is unknown
 * (-ECONNABORTED). The one-round-trip batch (batch_known) bounds its lock
 * waits with lock_timeout so that a row locked elsewhere ends in an error
 * before the deadline rather than in doubt. A unique violation (the same idempotency key committed
 * by another batch meanwhile) rolls back and reruns the batch, which then
 * sees the key and replays it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <poll.h>
#include <sys/socket.h>

#include <libpq-fe.h>

#include "cachesvc/store/store_int.h"

int store__fault_break_after_commit;

typedef struct pg_conn {
    PGconn *c;
    int fd;
    int in_use;
    int prepared;        /* the statements of ps_sql[] exist on c */
} pg_conn;

/* The statements every batch, read and relay call runs, prepared once per
 * connection (named "s<index>") with generic plans: parsing and planning
 * them on every call was a fifth of the server's CPU per batch. */
#define ITEM_COLS "stock, version, per_user_limit, sale_starts_at_ms, units_supplied"
#define SELECT_BOUGHT "SELECT user_id, qty FROM purchases WHERE sku = $1 AND user_id = ANY($2::text[])"
/* The item's row beside an outbox row, NULL unless it still stands at the
 * row's version (i: items LEFT JOINed on sku and version). */
#define OUTBOX_ITEM_COLS "i.stock, i.per_user_limit, i.sale_starts_at_ms"
#define SELECT_IDS "SELECT nextval('orders_order_id_seq') FROM generate_series(1, $1::int)"

enum {
    PS_BEGIN, PS_COMMIT, PS_ROLLBACK, PS_LOCK_ITEM, PS_KEYS, PS_BOUGHT_LIMITED, PS_BOUGHT,
    PS_IDS, PS_REBUILD, PS_INS_ORDERS, PS_UPS_PURCHASES, PS_UPD_ITEM, PS_INS_ITEM,
    PS_INS_OUTBOX, PS_GET_ITEM, PS_OUTBOX_FETCH, PS_OUTBOX_DEL, PS_ASYNC_COMMIT, PS_PING,
    PS_GUARD, PS_INS_ORDERS_NEW, PS_LOCK_TIMEOUT, PS_ORDER_BY_KEY,
    PS_OUTBOX_STATS, PS_OUTBOX_CLAIM, PS_VERSION_CHECK, PS_COUNT
};
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
     * are inserted. A failure rolls back and reruns the batch as usual. */
    [PS_GUARD] = "SELECT 1 / coalesce((SELECT 1 FROM items WHERE sku = $1 AND version = $2"
                 " AND stock = $3 AND per_user_limit = $4 AND sale_starts_at_ms = $5"
                 " AND units_supplied = $6 FOR UPDATE), 0)",
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

enum { PG_KNOWN = 64 };

typedef struct pg {
    char *url;
    int n;
    pg_conn *conns;
    rt_sem *sem;               /* free connection slots */
    pthread_mutex_t mu;        /* conns[].in_use, backoff */
    int64_t next_connect_ns;   /* no connect attempt before this */
    int backoff_ms;
    /* The committed state of recently batched items as this instance's
     * last batch of each left it (under mu; a slot per hash, a collision
     * replaces). A batch of decrements is decided on it and written in one
     * round trip that checks the version (batch_known). */
    struct pg_known {
        char sku[STORE_SKU_MAX + 1];
        int valid;     /* s holds the committed state */
        store__state s;
        int skip;      /* batches to run with reads before the next try */
        int penalty;   /* skip after the next failed try */
    } known[PG_KNOWN];
} pg;

/* ---- a growable string, for array literals -------------------------- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* Appends s as a quoted element of a text[] literal (NULL for NULL). Ids
 * never need escaping; keys may hold '"' or '\\', copied around in spans. */
static void sb_elem(sbuf *b, const char *s)
{
    if (b->len > 1)
        sb_put(b, ",", 1);
    if (s == NULL) {
        sb_put(b, "NULL", 4);
        return;
    }
    sb_put(b, "\"", 1);
    for (;;) {
        size_t span = strcspn(s, "\"\\");
        sb_put(b, s, span);
        if (s[span] == '\0')
            break;
        sb_put(b, "\\", 1);
        sb_put(b, s + span, 1);
        s += span + 1;
    }
    sb_put(b, "\"", 1);
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

static void sb_int(sbuf *b, int64_t v)
{
    char t[24];
    if (b->len > 1)
        sb_put(b, ",", 1);
    sb_put(b, t, fmt_i64(t, v));
}

/* ---- connection I/O on the netpoll ----------------------------------- */

static void conn_drop(pg_conn *pc)
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
static int conn_open(pg_conn *pc, const char *url, int64_t deadline, int verbose)
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
    conn_drop(pc);
    return rc == -ECANCELED ? -EIO : rc;
}

/* Waits until pc's socket is ready for events (RT_READ / RT_WRITE) or
 * the deadline passes. On a coroutine it parks on the netpoll; on an OS
 * thread of the blocking pool (a batch transaction, see pg_batch) it
 * blocks in poll(). Returns the ready events or a negative errno. */
static int conn_wait(pg_conn *pc, int events, int64_t deadline)
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
static int conn_flush(pg_conn *pc, int64_t deadline)
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
static int conn_result(pg_conn *pc, int64_t deadline, PGresult **out)
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
static int conn_collect(pg_conn *pc, int64_t deadline, PGresult **res, int n, int *first_err)
{
    PGresult *r;
    int rc;

    *first_err = -1;
    for (int i = 0; i < n; i++)
        res[i] = NULL;
    for (int i = 0; i < n; i++) {
        if ((rc = conn_result(pc, deadline, &res[i])) < 0)
            return rc;
        if (res[i] == NULL)
            return -EIO;
        ExecStatusType s = PQresultStatus(res[i]);
        if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK && *first_err < 0)
            *first_err = i;
        if (s == PGRES_FATAL_ERROR && PQstatus(pc->c) == CONNECTION_BAD)
            return -EIO;
        if ((rc = conn_result(pc, deadline, &r)) < 0)   /* the NULL after it */
            return rc;
        if (r != NULL) {
            PQclear(r);
            return -EIO;
        }
    }
    if ((rc = conn_result(pc, deadline, &r)) < 0)
        return rc;
    if (r == NULL || PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
        PQclear(r);
        return -EIO;
    }
    PQclear(r);
    return 0;
}

static void clear_all(PGresult **res, int n)
{
    for (int i = 0; i < n; i++) {
        PQclear(res[i]);
        res[i] = NULL;
    }
}

static int pq_send(pg_conn *pc, const char *sql, int nparams, const char *const *params)
{
    return PQsendQueryParams(pc->c, sql, nparams, NULL, params, NULL, NULL, 0) == 1 ? 0 : -EIO;
}

static void ps_name(char *buf, size_t cap, int ps)
{
    snprintf(buf, cap, "s%d", ps);
}

/* Sends prepared statement ps (see ps_sql). */
static int pq_exec(pg_conn *pc, int ps, int nparams, const char *const *params)
{
    char name[16];
    ps_name(name, sizeof name, ps);
    return PQsendQueryPrepared(pc->c, name, nparams, params, NULL, NULL, 0) == 1 ? 0 : -EIO;
}

/* Prepares ps_sql[] on a new connection, in one round trip. Returns 0 or
 * a negative errno (the caller drops the connection). */
static int conn_prepare(pg_conn *pc, int64_t deadline)
{
    PGresult *res[PS_COUNT + 2] = {0};
    char name[16];
    int rc = -EIO, fe;

    /* Generic plans are made once, on tables that may still be empty
     * (a fresh database): without seq scans each one is the index plan it
     * must stay as the tables grow. Every statement has an index to use. */
    if (pq_send(pc, "SET plan_cache_mode = force_generic_plan", 0, NULL) < 0 ||
        pq_send(pc, "SET enable_seqscan = off", 0, NULL) < 0)
        return -EIO;
    for (int i = 0; i < PS_COUNT; i++) {
        ps_name(name, sizeof name, i);
        if (PQsendPrepare(pc->c, name, ps_sql[i], 0, NULL) != 1)
            return -EIO;
    }
    if (PQpipelineSync(pc->c) != 1)
        return -EIO;
    if ((rc = conn_flush(pc, deadline)) == 0 &&
        (rc = conn_collect(pc, deadline, res, PS_COUNT + 2, &fe)) == 0 && fe >= 0) {
        char q[512];
        rt_log(RT_LOG_ERROR, "store", "postgresql prepare failed", "err=%s",
               rt_log_q(q, sizeof q, PQresultErrorMessage(res[fe])));
        rc = -EIO;
    }
    clear_all(res, PS_COUNT + 2);
    if (rc == 0)
        pc->prepared = 1;
    return rc;
}

/* Sends ROLLBACK and waits for it; on failure the connection is dropped by
 * the caller (it reports the error). */
static int conn_rollback(pg_conn *pc, int64_t deadline)
{
    PGresult *res[1];
    int fe, rc;
    if (pq_exec(pc, PS_ROLLBACK, 0, NULL) < 0 || PQpipelineSync(pc->c) != 1)
        return -EIO;
    if ((rc = conn_flush(pc, deadline)) < 0)
        return rc;
    rc = conn_collect(pc, deadline, res, 1, &fe);
    clear_all(res, 1);
    return rc < 0 ? rc : fe >= 0 ? -EIO : 0;
}

/* ---- the pool ----------------------------------------------------------- */

/* Takes a connected slot. Returns it, or NULL with *err set: -ETIMEDOUT,
 * -EIO (cannot connect, or within the reconnect backoff). */
static pg_conn *pool_get(store *st, int64_t deadline, int *err)
{
    pg *p = st->impl;
    pg_conn *pc = NULL;
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

    conn_drop(pc);
    /* Only the first failure of a streak is reported. */
    rc = conn_open(pc, p->url, deadline, p->backoff_ms == st->cfg.reconnect_min_ms);
    if (rc == 0 && (rc = conn_prepare(pc, deadline)) < 0)
        conn_drop(pc);
    pthread_mutex_lock(&p->mu);
    if (rc < 0) {
        p->next_connect_ns = rt_now_ns() + (int64_t)p->backoff_ms * 1000000;
        p->backoff_ms *= 2;
        if (p->backoff_ms > st->cfg.reconnect_max_ms)
            p->backoff_ms = st->cfg.reconnect_max_ms;
    } else {
        p->backoff_ms = st->cfg.reconnect_min_ms;
        p->next_connect_ns = 0;
        STORE__STAT_ADD(st, reconnects, 1);
        /* The database may have changed (or been replaced) while this
         * connection was down: the one-round-trip batches start over
         * from reads. */
        for (int i = 0; i < PG_KNOWN; i++)
            p->known[i].valid = 0;
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
static void pool_put(store *st, pg_conn *pc, int broken)
{
    pg *p = st->impl;
    if (broken || (pc->c != NULL && (PQstatus(pc->c) != CONNECTION_OK ||
                                     PQtransactionStatus(pc->c) != PQTRANS_IDLE)))
        conn_drop(pc);
    pthread_mutex_lock(&p->mu);
    pc->in_use = 0;
    pthread_mutex_unlock(&p->mu);
    rt_sem_release(p->sem);
}

static int64_t deadline_of(store *st)
{
    return rt_deadline_ms(st->cfg.timeout_ms);
}

static int64_t col_i64(PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* An order's columns (order_id, sku, user_id, qty, stock_after,
 * version_after) from column col on. */
static void row_order(PGresult *r, int row, int col, store_order *o)
{
    o->order_id = col_i64(r, row, col);
    snprintf(o->sku, sizeof o->sku, "%s", PQgetvalue(r, row, col + 1));
    snprintf(o->user_id, sizeof o->user_id, "%s", PQgetvalue(r, row, col + 2));
    o->qty = col_i64(r, row, col + 3);
    o->stock = col_i64(r, row, col + 4);
    o->version = col_i64(r, row, col + 5);
}

/* The item row of a "SELECT stock, version, per_user_limit,
 * sale_starts_at_ms, units_supplied" (no row: not found). */
static void row_state(PGresult *r, store__state *s)
{
    memset(s, 0, sizeof *s);
    if (PQntuples(r) != 1)
        return;
    s->found = 1;
    s->stock = col_i64(r, 0, 0);
    s->version = col_i64(r, 0, 1);
    s->per_user_limit = col_i64(r, 0, 2);
    s->sale_starts_at_ms = col_i64(r, 0, 3);
    s->units_supplied = col_i64(r, 0, 4);
}

static void sql_error(const char *what, PGresult *r)
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

/* ---- the items' last known states (pg.known) ------------------------------ */

static struct pg_known *known_slot(pg *p, const char *sku)
{
    unsigned h = 2166136261u;
    for (const char *c = sku; *c; c++)
        h = (h ^ (unsigned char)*c) * 16777619u;
    return &p->known[h % PG_KNOWN];
}

/* Copies sku's known state into *s; 0 when there is none, or while the
 * item's last tries failed (then each call counts one batch down). */
static int known_get(pg *p, const char *sku, store__state *s)
{
    pthread_mutex_lock(&p->mu);
    struct pg_known *k = known_slot(p, sku);
    int have = strcmp(k->sku, sku) == 0 && k->valid;
    if (have && k->skip > 0) {
        k->skip--;
        have = 0;
    }
    if (have)
        *s = k->s;
    pthread_mutex_unlock(&p->mu);
    return have;
}

/* Records s as sku's committed state; s == NULL forgets it. */
static void known_set(pg *p, const char *sku, const store__state *s)
{
    pthread_mutex_lock(&p->mu);
    struct pg_known *k = known_slot(p, sku);
    if (strcmp(k->sku, sku) != 0) {
        memset(k, 0, sizeof *k);
        snprintf(k->sku, sizeof k->sku, "%s", sku);
    }
    k->valid = s != NULL;
    if (s != NULL)
        k->s = *s;
    pthread_mutex_unlock(&p->mu);
}

/* A one-round-trip try of sku was sent and failed its checks (ok = 0) or
 * committed (ok = 1). Failed tries cost a round trip and a rollback, so the
 * next 4, 8 ... 64 batches of the item read first: two instances selling
 * one item, or buyers retrying with their keys, then pay for a try only
 * now and then. */
static void known_tried(pg *p, const char *sku, int ok)
{
    pthread_mutex_lock(&p->mu);
    struct pg_known *k = known_slot(p, sku);
    if (strcmp(k->sku, sku) == 0) {
        if (ok) {
            k->penalty = 0;
        } else {
            k->penalty = k->penalty == 0 ? 4 : k->penalty < 64 ? 2 * k->penalty : 64;
            k->skip = k->penalty;
        }
    }
    pthread_mutex_unlock(&p->mu);
}

/* ---- batch ---------------------------------------------------------------- */

/* The lock_timeout of a one-round-trip batch, whose COMMIT is queued on
 * the server behind its version check: a row lock held elsewhere past the
 * store's deadline would leave the client gone with the outcome unknown
 * and the batch committing once the lock is released. Ending the wait on
 * the server at four fifths of the time left (at least 1 ms; 0 = none
 * when there is no deadline) turns it into an error (SQLSTATE 55P03)
 * that arrives while the client still listens: nothing applied. */
static void lock_timeout_of(int64_t deadline, char *buf, size_t cap)
{
    int64_t ms = 0;
    if (deadline != RT_NO_DEADLINE) {
        int64_t left = (deadline - rt_now_ns()) / 1000000;
        ms = left - left / 5;
        if (ms < 1)
            ms = 1;
    }
    snprintf(buf, cap, "%lldms", (long long)ms);
}

/* True when r failed with SQLSTATE code. */
static int sqlstate_is(PGresult *r, const char *code)
{
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    return state != NULL && strcmp(state, code) == 0;
}

#define SQLSTATE_LOCK_TIMEOUT "55P03"

/* Sends the version check (PS_GUARD) of sku against state k. */
static int send_guard(pg_conn *pc, const char *sku, const store__state *k)
{
    char v[5][24];
    const char *prm[6] = {sku, v[0], v[1], v[2], v[3], v[4]};
    snprintf(v[0], sizeof v[0], "%lld", (long long)k->version);
    snprintf(v[1], sizeof v[1], "%lld", (long long)k->stock);
    snprintf(v[2], sizeof v[2], "%lld", (long long)k->per_user_limit);
    snprintf(v[3], sizeof v[3], "%lld", (long long)k->sale_starts_at_ms);
    snprintf(v[4], sizeof v[4], "%lld", (long long)k->units_supplied);
    return pq_exec(pc, PS_GUARD, 6, prm);
}

enum { Q_BEGIN, Q_ITEM, Q_KEYS, Q_BOUGHT, Q_IDS, Q_MAX };

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Reads n order ids from result r into ids[] (ascending). */
static int take_ids(PGresult *r, int64_t *ids, int n)
{
    if (PQntuples(r) != n)
        return -EIO;
    int sorted = 1;
    for (int i = 0; i < n; i++) {
        ids[i] = col_i64(r, i, 0);
        sorted &= i == 0 || ids[i - 1] < ids[i];
    }
    if (!sorted)   /* generate_series calls nextval in order: rare */
        qsort(ids, (size_t)n, sizeof *ids, cmp_i64);
    return 0;
}

typedef struct batch_ctx {
    store *st;
    pg_conn *pc;
    const char *sku;
    store__op **ops;
    int n;
    int64_t deadline;
    const char **users;   /* n entries */
    int64_t *qtys;        /* n entries */
    int64_t *ids;         /* n entries */
    int nids;
    char *users_lit;      /* text[] literal of the distinct buyers */
} batch_ctx;

/* Sets each decrement's bought from a (user_id, qty) result. */
static void assign_bought(batch_ctx *b, PGresult *r)
{
    for (int row = 0; row < PQntuples(r); row++) {
        const char *u = PQgetvalue(r, row, 0);
        int64_t q = col_i64(r, row, 1);
        for (int i = 0; i < b->n; i++)
            if (b->ops[i]->kind == STORE__DECR && strcmp(b->ops[i]->user_id, u) == 0)
                b->ops[i]->bought = q;
    }
}

/* Round 1. Returns 0 with the state in *s0, or a negative errno (the
 * transaction is then rolled back or the connection broken). */
static int batch_read(batch_ctx *b, store__state *s0, int ids_wanted)
{
    pg_conn *pc = b->pc;
    PGresult *res[Q_MAX] = {0};
    int idx[Q_MAX], nq = 0, fe, rc, nkeys = 0, nusers;
    sbuf keys = {0}, users = {0};
    char nbuf[16];
    const char *p[2];

    for (int i = 0; i < Q_MAX; i++)
        idx[i] = -1;
    sb_str(&keys, "{");
    sb_str(&users, "{");
    for (int i = 0; i < b->n; i++)
        if (b->ops[i]->kind == STORE__DECR && b->ops[i]->key != NULL) {
            sb_elem(&keys, b->ops[i]->key);
            nkeys++;
        }
    nusers = store__distinct_users(b->ops, b->n, b->users);
    for (int i = 0; i < nusers; i++)
        sb_elem(&users, b->users[i]);
    sb_str(&keys, "}");
    sb_str(&users, "}");
    if (keys.oom || users.oom) {
        rc = -ENOMEM;
        goto out;
    }

    rc = -EIO;
    idx[Q_BEGIN] = nq++;
    if (pq_exec(pc, PS_BEGIN, 0, NULL) < 0)
        goto out;
    idx[Q_ITEM] = nq++;
    p[0] = b->sku;
    if (pq_exec(pc, PS_LOCK_ITEM, 1, p) < 0)
        goto out;
    if (nkeys > 0) {
        idx[Q_KEYS] = nq++;
        p[0] = keys.p;
        if (pq_exec(pc, PS_KEYS, 1, p) < 0)
            goto out;
    }
    if (nusers > 0) {
        idx[Q_BOUGHT] = nq++;
        p[0] = b->sku;
        p[1] = users.p;
        if (pq_exec(pc, PS_BOUGHT_LIMITED, 2, p) < 0)
            goto out;
    }
    if (ids_wanted > 0) {
        idx[Q_IDS] = nq++;
        snprintf(nbuf, sizeof nbuf, "%d", ids_wanted);
        p[0] = nbuf;
        if (pq_exec(pc, PS_IDS, 1, p) < 0)
            goto out;
    }
    if (PQpipelineSync(pc->c) != 1)
        goto out;
    if ((rc = conn_flush(pc, b->deadline)) < 0)
        goto out;
    if ((rc = conn_collect(pc, b->deadline, res, nq, &fe)) < 0)
        goto out;
    if (fe >= 0) {
        sql_error("batch read", res[fe]);
        conn_rollback(pc, b->deadline);
        rc = -EIO;
        goto out;
    }

    row_state(res[idx[Q_ITEM]], s0);
    PGresult *r;
    for (int i = 0; i < b->n; i++) {
        b->ops[i]->key_found = 0;
        b->ops[i]->bought = 0;
    }
    if (idx[Q_KEYS] >= 0) {
        r = res[idx[Q_KEYS]];
        for (int row = 0; row < PQntuples(r); row++) {
            const char *k = PQgetvalue(r, row, 0);
            for (int i = 0; i < b->n; i++) {
                store__op *op = b->ops[i];
                if (op->kind != STORE__DECR || op->key == NULL || strcmp(op->key, k) != 0)
                    continue;
                op->key_found = 1;
                row_order(r, row, 1, &op->prior);
            }
        }
    }
    if (idx[Q_BOUGHT] >= 0)
        assign_bought(b, res[idx[Q_BOUGHT]]);
    b->nids = 0;
    if (idx[Q_IDS] >= 0) {
        if ((rc = take_ids(res[idx[Q_IDS]], b->ids, ids_wanted)) < 0)
            goto out;
        b->nids = ids_wanted;
    }
    rc = 0;
out:
    clear_all(res, Q_MAX);
    free(keys.p);
    free(b->users_lit);
    b->users_lit = users.p;
    return rc;
}

/* Rebuilds the item's purchases from its orders (a per-user limit is
 * being switched on) and rereads the buyers' totals, inside the open
 * transaction. */
static int batch_rebuild(batch_ctx *b)
{
    PGresult *res[2] = {0};
    const char *p[2] = {b->sku, b->users_lit};
    int fe, rc;

    if (pq_exec(b->pc, PS_REBUILD, 1, p) < 0 || pq_exec(b->pc, PS_BOUGHT, 2, p) < 0 ||
        PQpipelineSync(b->pc->c) != 1)
        return -EIO;
    if ((rc = conn_flush(b->pc, b->deadline)) < 0)
        return rc;
    if ((rc = conn_collect(b->pc, b->deadline, res, 2, &fe)) == 0) {
        if (fe >= 0) {
            sql_error("rebuild purchases", res[fe]);
            rc = -EIO;
        } else {
            assign_bought(b, res[1]);
        }
    }
    clear_all(res, 2);
    return rc;
}

/* Takes more order ids inside the open transaction (a restock in the batch
 * can make more orders than the first guess). */
static int batch_more_ids(batch_ctx *b, int total)
{
    PGresult *res[1] = {0};
    char nbuf[16];
    const char *p[1] = {nbuf};
    int fe, rc, extra = total - b->nids;

    snprintf(nbuf, sizeof nbuf, "%d", extra);
    if (pq_exec(b->pc, PS_IDS, 1, p) < 0 || PQpipelineSync(b->pc->c) != 1)
        return -EIO;
    if ((rc = conn_flush(b->pc, b->deadline)) < 0)
        return rc;
    if ((rc = conn_collect(b->pc, b->deadline, res, 1, &fe)) == 0) {
        if (fe >= 0)
            rc = -EIO;
        else if ((rc = take_ids(res[0], b->ids + b->nids, extra)) == 0)
            b->nids = total;
    }
    clear_all(res, 1);
    return rc;
}

enum { W_BEGIN, W_LOCK_TIMEOUT, W_GUARD, W_ORDERS, W_PURCHASES, W_ITEM, W_OUTBOX, W_COMMIT,
       W_MAX };

/* Gives a one-round-trip batch's k new orders their ids (PS_INS_ORDERS_NEW:
 * one row per order, in the order of the arrays, which is the order of the
 * batch's successful decrements). Returns 0, or -1 when the rows are not
 * the k orders sent. */
static int assign_new_ids(batch_ctx *b, PGresult *res, int k)
{
    int j = 0;
    if (PQntuples(res) != k)
        return -1;
    for (int i = 0; i < b->n && j < k; i++) {
        store__op *op = b->ops[i];
        if (op->kind == STORE__DECR && op->outcome == STORE_OK)
            op->order_id = col_i64(res, j++, 0);
    }
    return j == k ? 0 : -1;
}

/* Round 2. Returns 0 (committed), -EEXIST (unique violation: rolled back,
 * rerun), -EIO (an SQL error: rolled back), -ECONNABORTED (unknown).
 * known: the whole transaction in this one round trip (batch_known): it
 * begins, bounds its lock waits (lock_timeout_of), checks that the row's
 * version is still s0's, and the orders take their ids as they are
 * inserted; a failed check or a unique violation rolls back and returns
 * -EAGAIN (rerun with the reads), a lock wait that timed out -EIO. */
static int batch_write(batch_ctx *b, const store__state *s0, const store__batch_result *r,
                       int known)
{
    pg_conn *pc = b->pc;
    const store__state *s = &r->state;
    PGresult *res[W_MAX] = {0};
    sbuf oid = {0}, ouser = {0}, oqty = {0}, okey = {0}, puser = {0}, pqty = {0};
    char v_stock[24], v_version[24], v_now[24], v_limit[24], v_sale[24], v_supplied[24];
    char v_lock[32];
    const char *p[8];
    int rc = -EIO, fe, m, k = 0, at[W_MAX];

    for (int i = 0; i < W_MAX; i++)
        at[i] = -1;

    sb_str(&oid, "{");
    sb_str(&ouser, "{");
    sb_str(&oqty, "{");
    sb_str(&okey, "{");
    for (int i = 0; i < b->n; i++) {
        store__op *op = b->ops[i];
        if (op->kind != STORE__DECR || op->outcome != STORE_OK)
            continue;
        if (!known) {
            op->order_id = b->ids[k];
            sb_int(&oid, op->order_id);
        }
        k++;
        sb_elem(&ouser, op->user_id);
        sb_int(&oqty, op->qty);
        sb_elem(&okey, op->key);
    }
    sb_str(&oid, "}");
    sb_str(&ouser, "}");
    sb_str(&oqty, "}");
    sb_str(&okey, "}");
    m = store__keep_purchases(s) ? store__purchase_deltas(b->ops, b->n, b->users, b->qtys) : 0;
    sb_str(&puser, "{");
    sb_str(&pqty, "{");
    for (int j = 0; j < m; j++) {
        sb_elem(&puser, b->users[j]);
        sb_int(&pqty, b->qtys[j]);
    }
    sb_str(&puser, "}");
    sb_str(&pqty, "}");
    if (oid.oom || ouser.oom || oqty.oom || okey.oom || puser.oom || pqty.oom) {
        /* Nothing sent yet: roll back and report. */
        rc = conn_rollback(pc, b->deadline) < 0 ? -EIO : -ENOMEM;
        goto out;
    }
    snprintf(v_stock, sizeof v_stock, "%lld", (long long)s->stock);
    snprintf(v_version, sizeof v_version, "%lld", (long long)s->version);
    snprintf(v_now, sizeof v_now, "%lld", (long long)r->committed_at_ms);
    snprintf(v_limit, sizeof v_limit, "%lld", (long long)s->per_user_limit);
    snprintf(v_sale, sizeof v_sale, "%lld", (long long)s->sale_starts_at_ms);
    snprintf(v_supplied, sizeof v_supplied, "%lld", (long long)s->units_supplied);

    int nq = 0;
    if (known) {
        if (pq_exec(pc, PS_BEGIN, 0, NULL) < 0)
            goto sent;
        at[W_BEGIN] = nq++;
        lock_timeout_of(b->deadline, v_lock, sizeof v_lock);
        p[0] = v_lock;
        if (pq_exec(pc, PS_LOCK_TIMEOUT, 1, p) < 0)
            goto sent;
        at[W_LOCK_TIMEOUT] = nq++;
        if (send_guard(pc, b->sku, s0) < 0)
            goto sent;
        at[W_GUARD] = nq++;
    }
    if (k > 0) {
        p[0] = b->sku; p[1] = v_now; p[2] = v_stock; p[3] = v_version;
        if (known) {
            p[4] = ouser.p; p[5] = oqty.p; p[6] = okey.p;
            if (pq_exec(pc, PS_INS_ORDERS_NEW, 7, p) < 0)
                goto sent;
        } else {
            p[4] = oid.p; p[5] = ouser.p; p[6] = oqty.p; p[7] = okey.p;
            if (pq_exec(pc, PS_INS_ORDERS, 8, p) < 0)
                goto sent;
        }
        at[W_ORDERS] = nq++;
    }
    if (m > 0) {
        p[0] = b->sku; p[1] = puser.p; p[2] = pqty.p;
        if (pq_exec(pc, PS_UPS_PURCHASES, 3, p) < 0)
            goto sent;
        nq++;
    }
    p[0] = b->sku; p[1] = v_stock; p[2] = v_version; p[3] = v_limit; p[4] = v_sale;
    p[5] = v_supplied; p[6] = v_now;
    if (pq_exec(pc, s0->found ? PS_UPD_ITEM : PS_INS_ITEM, 7, p) < 0)
        goto sent;
    nq++;
    p[0] = b->sku; p[1] = v_version; p[2] = v_now;
    if (pq_exec(pc, PS_INS_OUTBOX, 3, p) < 0)
        goto sent;
    nq++;
    if (pq_exec(pc, PS_COMMIT, 0, NULL) < 0)
        goto sent;
    nq++;
    if (PQpipelineSync(pc->c) != 1)
        goto sent;
    if ((rc = conn_flush(pc, b->deadline)) < 0)
        goto sent;
    if (__atomic_load_n(&store__fault_break_after_commit, __ATOMIC_RELAXED) > 0 &&
        __atomic_sub_fetch(&store__fault_break_after_commit, 1, __ATOMIC_RELAXED) >= 0)
        shutdown(pc->fd, SHUT_RDWR);
    rc = conn_collect(pc, b->deadline, res, nq, &fe);
    if (rc == 0 && fe < 0) {
        /* COMMIT answered; a COMMIT of a failed transaction answers
         * ROLLBACK, which fe would have caught through the failed statement. */
        if (strcmp(PQcmdStatus(res[nq - 1]), "COMMIT") != 0) {
            rc = -EIO;
            goto out;
        }
        /* Committed: orders whose ids cannot be told are answered
         * outcome_unknown (a retry with the key replays its order). */
        if (known && at[W_ORDERS] >= 0 && assign_new_ids(b, res[at[W_ORDERS]], k) < 0) {
            rt_log(RT_LOG_ERROR, "store", "postgresql batch write returned too few order ids",
                   "ids=%d orders=%d", PQntuples(res[at[W_ORDERS]]), k);
            rc = -ECONNABORTED;
        }
        goto out;
    }
    if (rc == 0) {
        /* An SQL error: the transaction is aborted and nothing applied. */
        int unique = sqlstate_is(res[fe], "23505");
        /* known: the version check failed (division by zero), or a key
         * was committed before: decided on stale state. */
        int stale = known && (unique || sqlstate_is(res[fe], "22012"));
        if (!unique && !stale && !sqlstate_is(res[fe], SQLSTATE_LOCK_TIMEOUT))
            sql_error("batch write", res[fe]);
        if (fe == nq - 1) {   /* COMMIT itself failed: rolled back by the server */
            rc = -EIO;
            goto out;
        }
        rc = conn_rollback(pc, b->deadline) < 0 ? -EIO : stale ? -EAGAIN : unique ? -EEXIST : -EIO;
        goto out;
    }
    /* The transport failed after the writes went out: did an SQL error
     * arrive first? Then nothing was applied. */
    for (int i = 0; i < nq; i++)
        if (res[i] != NULL && PQresultStatus(res[i]) != PGRES_COMMAND_OK &&
            PQresultStatus(res[i]) != PGRES_TUPLES_OK &&
            PQresultErrorField(res[i], PG_DIAG_SQLSTATE) != NULL &&
            strncmp(PQresultErrorField(res[i], PG_DIAG_SQLSTATE), "08", 2) != 0 &&
            strncmp(PQresultErrorField(res[i], PG_DIAG_SQLSTATE), "57", 2) != 0) {
            rc = -EIO;
            goto out;
        }
sent:
    rc = -ECONNABORTED;
out:
    clear_all(res, W_MAX);
    free(oid.p); free(ouser.p); free(oqty.p); free(okey.p); free(puser.p); free(pqty.p);
    return rc;
}

/* The transaction of one batch on b->pc, run on an OS thread of the
 * runtime's blocking pool: its waits block that thread in poll() instead of
 * parking a coroutine. A parked leader is woken by the netpoll and then
 * queued behind every runnable connection coroutine (hundreds under a hot
 * sale), which made each round trip take a millisecond or more; a thread
 * blocked in poll() is woken by the kernel when the answer arrives. */
typedef struct batch_job {
    batch_ctx *b;
    store__batch_result *r;
    int ndecr;
    int attempt;
    int fresh_retry;     /* the batch already reran on a fresh connection */
    int want_fresh;      /* out: rerun on a fresh connection */
    int broken;          /* out: drop the connection */
} batch_job;

/* True when pc has input while it sat idle in the pool: most likely its
 * server is closing it (a shutdown sends an error, then EOF). The
 * one-round-trip batch could not tell that failure from a lost COMMIT, so
 * such a batch goes the way that reads first and reruns on a fresh
 * connection. */
static int conn_unsettled(pg_conn *pc)
{
    struct pollfd pfd = {.fd = pc->fd, .events = POLLIN};
    return poll(&pfd, 1, 0) != 0 || PQstatus(pc->c) != CONNECTION_OK;
}

/* A batch of decrements decided on the item's known state (the state this
 * instance's last batch of it committed or read) and written in one round
 * trip: BEGIN, the version check under the row lock, the writes, COMMIT
 * (batch_write, known). A batch that changes nothing only checks the
 * version. What the database has not told us must not decide: a key is
 * assumed new (an order with a committed key fails on the unique index),
 * so a keyed request must become an order or replay one of the batch; an
 * item with a per-user limit always reads its buyers' totals first (a
 * sale under a limit has buyers coming back often enough that guessing
 * their totals failed most tries and made its selling phase slower).
 * Returns 0 (done, *r filled), -EAGAIN (not applicable or stale: nothing
 * applied, run the batch with its reads), or batch_write's errors. */
static int batch_known(batch_job *j)
{
    batch_ctx *b = j->b;
    store__batch_result *r = j->r;
    pg *p = b->st->impl;
    store__state k;
    int rc;

    for (int i = 0; i < b->n; i++)
        if (b->ops[i]->kind != STORE__DECR)
            return -EAGAIN;
    if (!known_get(p, b->sku, &k) || !k.found || k.per_user_limit > 0 || conn_unsettled(b->pc))
        return -EAGAIN;
    for (int i = 0; i < b->n; i++) {
        b->ops[i]->key_found = 0;
        b->ops[i]->bought = 0;
    }
    r->state = k;
    r->committed_at_ms = store__wall_ms();
    r->changed = store__decide(&r->state, r->committed_at_ms, b->ops, b->n);
    for (int i = 0; i < b->n; i++) {
        store__op *op = b->ops[i];
        if (op->key != NULL && op->outcome != STORE_OK &&
            !(op->outcome == STORE_REPLAYED && op->replay_of >= 0))
            return -EAGAIN;
    }
    if (!r->changed) {
        /* One implicit transaction up to the Sync: its lock wait is
         * bounded as in batch_write. */
        PGresult *res[2] = {0};
        char lt[32];
        const char *prm[1] = {lt};
        int fe;
        lock_timeout_of(b->deadline, lt, sizeof lt);
        if (pq_exec(b->pc, PS_LOCK_TIMEOUT, 1, prm) < 0 || send_guard(b->pc, b->sku, &k) < 0 ||
            PQpipelineSync(b->pc->c) != 1)
            return -EIO;
        if ((rc = conn_flush(b->pc, b->deadline)) == 0 &&
            (rc = conn_collect(b->pc, b->deadline, res, 2, &fe)) == 0 && fe >= 0) {
            rc = sqlstate_is(res[fe], "22012") ? -EAGAIN : -EIO;
            if (rc == -EIO && !sqlstate_is(res[fe], SQLSTATE_LOCK_TIMEOUT))
                sql_error("version check", res[fe]);
        }
        clear_all(res, 2);
        if (rc == -EAGAIN) {
            known_set(p, b->sku, NULL);
            known_tried(p, b->sku, 0);
        }
        return rc;
    }
    r->state.version = k.version + 1;
    rc = batch_write(b, &k, r, 1);
    known_set(p, b->sku, rc == 0 ? &r->state : NULL);
    if (rc == 0 || rc == -EAGAIN)
        known_tried(p, b->sku, rc == 0);
    return rc;
}

static intptr_t batch_run(void *arg)
{
    batch_job *j = arg;
    batch_ctx *b = j->b;
    store__batch_result *r = j->r;
    pg *p = b->st->impl;
    store__state s0;
    int rc = 0, norders;

    if (j->attempt == 0 && !j->fresh_retry) {
        if ((rc = batch_known(j)) != -EAGAIN) {
            /* A timeout or a reply mix-up leaves replies due on the
             * connection (and pool_put drops one not idle anyway). */
            j->broken = rc == -ECONNABORTED || rc == -ETIMEDOUT ||
                        (rc < 0 && PQstatus(b->pc->c) != CONNECTION_OK);
            return rc;
        }
    }
    for (; j->attempt < 4; j->attempt++) {
        if ((rc = batch_read(b, &s0, j->ndecr)) < 0) {
            /* A pooled connection that the server closed (a restart, an
             * idle timeout) fails on first use. Nothing was applied, so
             * the batch reruns once on a fresh connection. */
            if (rc == -EIO && !j->fresh_retry && PQstatus(b->pc->c) != CONNECTION_OK) {
                j->want_fresh = 1;
                return rc;
            }
            j->broken = rc != -ENOMEM;
            break;
        }
        if (store__needs_rebuild(&s0, b->ops, b->n) && (rc = batch_rebuild(b)) < 0) {
            j->broken = 1;
            break;
        }
        r->state = s0;
        r->committed_at_ms = store__wall_ms();
        r->changed = store__decide(&r->state, r->committed_at_ms, b->ops, b->n);
        if (!r->changed) {
            rc = conn_rollback(b->pc, b->deadline);
            j->broken = rc < 0;
            /* The decisions were made under the lock; the rollback only
             * releases it, so its failure does not change them. */
            rc = 0;
            break;
        }
        r->state.version = s0.version + 1;
        norders = 0;
        for (int i = 0; i < b->n; i++)
            norders += b->ops[i]->kind == STORE__DECR && b->ops[i]->outcome == STORE_OK;
        if (norders > b->nids && (rc = batch_more_ids(b, norders)) < 0) {
            j->broken = 1;
            break;
        }
        rc = batch_write(b, &s0, r, 0);
        if (rc == -EEXIST) {
            STORE__STAT_ADD(b->st, retries, 1);
            continue;
        }
        j->broken = rc == -ECONNABORTED || (rc == -EIO && PQstatus(b->pc->c) != CONNECTION_OK);
        break;
    }
    /* What the batch committed (or read, when it changed nothing) is the
     * item's state for the next batch's one-round-trip attempt. */
    known_set(p, b->sku, rc == 0 ? &r->state : NULL);
    return rc == -EEXIST ? -EIO : rc;
}

static int pg_batch(store *st, const char *sku, store__op **ops, int n, store__batch_result *r)
{
    batch_ctx b = {.st = st, .sku = sku, .ops = ops, .n = n, .deadline = deadline_of(st)};
    batch_job j = {.b = &b, .r = r};
    int rc = 0;

    for (int i = 0; i < n; i++)
        j.ndecr += ops[i]->kind == STORE__DECR;
    b.users = malloc(sizeof *b.users * (size_t)n);
    b.qtys = malloc(sizeof *b.qtys * (size_t)n);
    b.ids = malloc(sizeof *b.ids * (size_t)n);
    if (b.users == NULL || b.qtys == NULL || b.ids == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    if ((b.pc = pool_get(st, b.deadline, &rc)) == NULL)
        goto out;
    for (;;) {
        j.want_fresh = j.broken = 0;
        rc = (int)rt_blocking(batch_run, &j);
        if (!j.want_fresh)
            break;
        j.fresh_retry = 1;
        pool_put(st, b.pc, 1);
        if ((b.pc = pool_get(st, b.deadline, &rc)) == NULL)
            goto out;
    }
    pool_put(st, b.pc, j.broken);
out:
    free(b.users);
    free(b.qtys);
    free(b.ids);
    free(b.users_lit);
    return rc;
}

/* ---- reads and outbox ------------------------------------------------------ */

/* Runs one statement (in its own implicit transaction) and returns its
 * result in *out (caller PQclears). Returns 0 or a negative errno. */
static int run1(store *st, int ps, int np, const char *const *params, PGresult **out)
{
    int64_t dl = deadline_of(st);
    pg_conn *pc;
    int rc, fe, synced = 0;

    *out = NULL;
    if ((pc = pool_get(st, dl, &rc)) == NULL)
        return rc;
    if (pq_exec(pc, ps, np, params) < 0 || PQpipelineSync(pc->c) != 1) {
        rc = -EIO;
        goto out;
    }
    if ((rc = conn_flush(pc, dl)) < 0 || (rc = conn_collect(pc, dl, out, 1, &fe)) < 0)
        goto out;
    synced = 1;
    if (fe >= 0) {
        sql_error("query", *out);
        rc = -EIO;
    }
out:
    pool_put(st, pc, !synced);   /* replies may still be due: not reusable */
    if (rc < 0) {
        PQclear(*out);
        *out = NULL;
    }
    return rc;
}

static void fill_item(store_item *it, const char *sku, PGresult *r)
{
    memset(it, 0, sizeof *it);
    snprintf(it->sku, sizeof it->sku, "%s", sku);
    it->stock = col_i64(r, 0, 0);
    it->version = col_i64(r, 0, 1);
    it->per_user_limit = col_i64(r, 0, 2);
    it->sale_starts_at_ms = col_i64(r, 0, 3);
    it->units_supplied = col_i64(r, 0, 4);
}


static int pg_get_item(store *st, const char *sku, store_item *out)
{
    PGresult *r;
    const char *p[1] = {sku};
    int rc = run1(st, PS_GET_ITEM, 1, p, &r);
    if (rc < 0)
        return rc;
    if (PQntuples(r) != 1)
        rc = -ENOENT;
    else
        fill_item(out, sku, r);
    PQclear(r);
    return rc;
}

static int pg_version_check(store *st, const char *sku, int64_t version,
                            store_version_info *out, int64_t *order_version,
                            int64_t *updated_at_ms)
{
    PGresult *r;
    char v[24];
    const char *p[2] = {sku, v};
    snprintf(v, sizeof v, "%lld", (long long)version);
    int rc = run1(st, PS_VERSION_CHECK, 2, p, &r);
    if (rc < 0)
        return rc;
    if (PQntuples(r) != 1) {
        rc = -ENOENT;
    } else {
        out->version = col_i64(r, 0, 0);
        *updated_at_ms = col_i64(r, 0, 1);
        out->first_newer_ms = col_i64(r, 0, 2);
        *order_version = col_i64(r, 0, 3);
    }
    PQclear(r);
    return rc;
}

static int pg_order_by_key(store *st, const char *key, store_order *out)
{
    PGresult *r;
    const char *p[1] = {key};
    int rc = run1(st, PS_ORDER_BY_KEY, 1, p, &r);
    if (rc < 0)
        return rc;
    if (PQntuples(r) != 1)
        rc = -ENOENT;
    else
        row_order(r, 0, 0, out);
    PQclear(r);
    return rc;
}

enum { A_BEGIN, A_ITEM, A_ORDERS, A_MAXUSER, A_DUPS, A_IDS, A_COMMIT, A_MAX };

static int pg_audit(store *st, const char *sku, int with_orders, store_audit_result *out)
{
    int64_t dl = deadline_of(st);
    PGresult *res[A_MAX] = {0};
    const char *p[1] = {sku};
    pg_conn *pc;
    int rc, fe, nq = 0, synced = 0;

    memset(out, 0, sizeof *out);
    if ((pc = pool_get(st, dl, &rc)) == NULL)
        return rc;
    rc = -EIO;
    if (pq_send(pc, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL) < 0 ||
        pq_send(pc, "SELECT " ITEM_COLS " FROM items WHERE sku = $1", 1, p) < 0 ||
        pq_send(pc, "SELECT count(*), coalesce(sum(qty), 0) FROM orders WHERE sku = $1", 1, p) < 0 ||
        pq_send(pc, "SELECT coalesce(max(q), 0) FROM (SELECT sum(qty) AS q FROM orders"
                 " WHERE sku = $1 GROUP BY user_id) t", 1, p) < 0 ||
        pq_send(pc, "SELECT count(*) FROM (SELECT idempotency_key FROM orders WHERE sku = $1"
                 " AND idempotency_key IS NOT NULL GROUP BY idempotency_key"
                 " HAVING count(*) > 1) t", 1, p) < 0)
        goto out;
    nq = 5;
    if (with_orders) {
        if (pq_send(pc, "SELECT order_id FROM orders WHERE sku = $1 ORDER BY order_id", 1, p) < 0)
            goto out;
        nq++;
    }
    if (pq_send(pc, "COMMIT", 0, NULL) < 0 || PQpipelineSync(pc->c) != 1)
        goto out;
    nq++;
    if ((rc = conn_flush(pc, dl)) < 0 || (rc = conn_collect(pc, dl, res, nq, &fe)) < 0)
        goto out;
    synced = 1;
    if (fe >= 0) {
        sql_error("audit", res[fe]);
        rc = -EIO;
        goto out;
    }
    if (PQntuples(res[A_ITEM]) != 1) {
        rc = -ENOENT;
        goto out;
    }
    fill_item(&out->item, sku, res[A_ITEM]);
    out->orders = col_i64(res[A_ORDERS], 0, 0);
    out->units_sold = col_i64(res[A_ORDERS], 0, 1);
    out->max_user_qty = col_i64(res[A_MAXUSER], 0, 0);
    out->duplicate_idempotency_keys = col_i64(res[A_DUPS], 0, 0);
    if (with_orders) {
        int nt = PQntuples(res[A_IDS]);
        if ((out->order_ids = malloc(sizeof *out->order_ids * (size_t)(nt + 1))) == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        for (int i = 0; i < nt; i++)
            out->order_ids[i] = col_i64(res[A_IDS], i, 0);
        out->n_order_ids = (size_t)nt;
    }
    rc = 0;
out:
    clear_all(res, A_MAX);
    pool_put(st, pc, !synced);
    return rc;
}

/* The item and, when it is sold out, its orders, in one REPEATABLE READ
 * snapshot and one round trip. */
enum { S_BEGIN, S_ITEM, S_ORDERS, S_COMMIT, S_MAX };

static int pg_sold_out_read(store *st, const char *sku, int64_t max, store__so_set *set)
{
    int64_t dl = deadline_of(st);
    PGresult *res[S_MAX] = {0};
    char lim[24];
    const char *p[2] = {sku, lim};
    pg_conn *pc;
    int rc, fe, synced = 0;

    snprintf(lim, sizeof lim, "%lld", (long long)max + 1);
    if ((pc = pool_get(st, dl, &rc)) == NULL)
        return rc;
    rc = -EIO;
    if (pq_send(pc, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL) < 0 ||
        pq_send(pc, "SELECT " ITEM_COLS " FROM items WHERE sku = $1", 1, p) < 0 ||
        pq_send(pc, "SELECT user_id, qty, idempotency_key, order_id, stock_after, version_after"
                 " FROM orders WHERE sku = $1"
                 " AND EXISTS (SELECT 1 FROM items WHERE sku = $1 AND stock = 0) LIMIT $2",
                 2, p) < 0 ||
        pq_send(pc, "COMMIT", 0, NULL) < 0 || PQpipelineSync(pc->c) != 1)
        goto out;
    if ((rc = conn_flush(pc, dl)) < 0 || (rc = conn_collect(pc, dl, res, S_MAX, &fe)) < 0)
        goto out;
    synced = 1;
    if (fe >= 0) {
        sql_error("sold-out snapshot", res[fe]);
        rc = -EIO;
        goto out;
    }
    store__state s;
    row_state(res[S_ITEM], &s);
    store__so_set_item(set, &s);
    PGresult *r = res[S_ORDERS];
    int nt = PQntuples(r);
    rc = 0;
    if (nt > max) {
        rc = -E2BIG;
        goto out;
    }
    for (int i = 0; i < nt && rc == 0; i++)
        rc = store__so_add(set, PQgetvalue(r, i, 0), col_i64(r, i, 1),
                           PQgetisnull(r, i, 2) ? NULL : PQgetvalue(r, i, 2),
                           col_i64(r, i, 3), col_i64(r, i, 4), col_i64(r, i, 5));
out:
    clear_all(res, S_MAX);
    pool_put(st, pc, !synced);
    return rc;
}

/* Copies nt outbox rows (id, sku, version, committed_at_ms, then the
 * item's stock, limit and sale start, NULL when it moved on) from r. */
static void outbox_rows(PGresult *r, int nt, store_outbox_row *rows)
{
    for (int i = 0; i < nt; i++) {
        rows[i].id = col_i64(r, i, 0);
        snprintf(rows[i].sku, sizeof rows[i].sku, "%s", PQgetvalue(r, i, 1));
        rows[i].version = col_i64(r, i, 2);
        rows[i].committed_at_ms = col_i64(r, i, 3);
        rows[i].has_item = !PQgetisnull(r, i, 4);
        rows[i].stock = rows[i].has_item ? col_i64(r, i, 4) : 0;
        rows[i].per_user_limit = rows[i].has_item ? col_i64(r, i, 5) : 0;
        rows[i].sale_starts_at_ms = rows[i].has_item ? col_i64(r, i, 6) : 0;
    }
}

static int pg_outbox_fetch(store *st, int64_t after_id, size_t max, store_outbox_row *rows)
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

static int pg_outbox_stats(store *st, int64_t *rows, int64_t *oldest_ms)
{
    PGresult *r;
    int rc = run1(st, PS_OUTBOX_STATS, 0, NULL, &r);
    if (rc < 0)
        return rc;
    *rows = col_i64(r, 0, 0);
    *oldest_ms = col_i64(r, 0, 1);
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
    int64_t dl = deadline_of(st);
    PGresult *res[4] = {0};
    pg_conn *pc;
    int rc, fe, synced = 0;

    if (out != NULL)
        *out = NULL;
    if ((pc = pool_get(st, dl, &rc)) == NULL)
        return rc;
    rc = -EIO;
    if (pq_exec(pc, PS_BEGIN, 0, NULL) < 0 || pq_exec(pc, PS_ASYNC_COMMIT, 0, NULL) < 0 ||
        pq_exec(pc, ps, nparams, params) < 0 || pq_exec(pc, PS_COMMIT, 0, NULL) < 0 ||
        PQpipelineSync(pc->c) != 1)
        goto out;
    if ((rc = conn_flush(pc, dl)) < 0 || (rc = conn_collect(pc, dl, res, 4, &fe)) < 0)
        goto out;
    synced = 1;
    if (fe >= 0) {
        sql_error(what, res[fe]);
        synced = conn_rollback(pc, dl) == 0;   /* leave no open block */
        rc = -EIO;
        goto out;
    }
    if (out != NULL) {
        *out = res[2];
        res[2] = NULL;
    }
out:
    clear_all(res, 4);
    pool_put(st, pc, !synced);
    return rc;
}

static int pg_outbox_claim(store *st, const char *claimer, int64_t lease_ms, int mine,
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
static int pg_outbox_delete(store *st, const int64_t *ids, size_t n)
{
    sbuf b = {0};
    const char *p[1];

    sb_str(&b, "{");
    for (size_t i = 0; i < n; i++)
        sb_int(&b, ids[i]);
    sb_str(&b, "}");
    if (b.oom) {
        free(b.p);
        return -ENOMEM;
    }
    p[0] = b.p;
    int rc = async_tx(st, "outbox delete", PS_OUTBOX_DEL, 1, p, NULL);
    free(b.p);
    return rc;
}

static int pg_ping(store *st)
{
    PGresult *r;
    int rc = run1(st, PS_PING, 0, NULL, &r);
    PQclear(r);
    return rc;
}

/* ---- migrations, open, close ------------------------------------------------ */

/* Runs sql (several statements allowed) outside pipeline mode on a fresh
 * connection. Returns 0 or -EIO; *out (if not NULL) gets the last result. */
static int simple_exec(pg_conn *pc, const char *sql, int64_t dl, PGresult **out)
{
    PGresult *r, *last = NULL;
    int rc = 0;

    if (PQsendQuery(pc->c, sql) != 1)
        return -EIO;
    if ((rc = conn_flush(pc, dl)) < 0)
        return rc;
    for (;;) {
        if ((rc = conn_result(pc, dl, &r)) < 0)
            break;
        if (r == NULL)
            break;
        if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
            sql_error("migration", r);
            rc = -EIO;
        }
        PQclear(last);
        last = r;
    }
    if (out != NULL && rc == 0)
        *out = last;
    else
        PQclear(last);
    return rc;
}

static int migrate(store *st, pg_conn *pc)
{
    int64_t dl = rt_deadline_ms(st->cfg.timeout_ms * 4);
    PGresult *r = NULL;
    char sql[160];
    int rc, have;

    if (PQexitPipelineMode(pc->c) != 1)
        return -EIO;
    if ((rc = simple_exec(pc, "SELECT pg_advisory_lock(72630401)", dl, NULL)) < 0)
        return rc;
    if ((rc = simple_exec(pc, "CREATE TABLE IF NOT EXISTS schema_version ("
                              " version INTEGER PRIMARY KEY, applied_at_ms BIGINT NOT NULL);"
                              "SELECT coalesce(max(version), 0) FROM schema_version",
                          dl, &r)) < 0)
        goto unlock;
    have = (int)col_i64(r, 0, 0);
    PQclear(r);
    if (have > store__schema_version()) {
        rt_log(RT_LOG_ERROR, "store", "database schema is newer than this build",
               "backend=postgresql schema_version=%d supported=%d", have,
               store__schema_version());
        rc = -EIO;
        goto unlock;
    }
    for (int v = have + 1; v <= store__schema_version(); v++) {
        if ((rc = simple_exec(pc, "BEGIN", dl, NULL)) < 0 ||
            (rc = simple_exec(pc, store__migration(STORE__PG, v), dl, NULL)) < 0)
            break;
        snprintf(sql, sizeof sql, "INSERT INTO schema_version VALUES (%d, %lld); COMMIT", v,
                 (long long)store__wall_ms());
        if ((rc = simple_exec(pc, sql, dl, NULL)) < 0)
            break;
    }
    if (rc < 0)
        simple_exec(pc, "ROLLBACK", dl, NULL);
unlock:
    if (simple_exec(pc, "SELECT pg_advisory_unlock(72630401)", dl, NULL) < 0 && rc == 0)
        rc = -EIO;
    if (rc == 0 && PQenterPipelineMode(pc->c) != 1)
        rc = -EIO;
    return rc;
}

static void pg_free(pg *p)
{
    if (p == NULL)
        return;
    for (int i = 0; p->conns != NULL && i < p->n; i++)
        conn_drop(&p->conns[i]);
    free(p->conns);
    if (p->sem != NULL)
        rt_sem_free(p->sem);
    pthread_mutex_destroy(&p->mu);
    free(p->url);
    free(p);
}

static void pg_close(store *st)
{
    pg_free(st->impl);
    st->impl = NULL;
}

static const store__backend pg_backend = {
    .name = "postgresql",
    .batch = pg_batch,
    .get_item = pg_get_item,
    .order_by_key = pg_order_by_key,
    .audit = pg_audit,
    .outbox_fetch = pg_outbox_fetch,
    .outbox_delete = pg_outbox_delete,
    .outbox_claim = pg_outbox_claim,
    .outbox_stats = pg_outbox_stats,
    .version_check = pg_version_check,
    .ping = pg_ping,
    .sold_out_read = pg_sold_out_read,
    .close = pg_close,
};

int store__pg_open(store *st, const char *url)
{
    pg *p = calloc(1, sizeof *p);
    int rc;

    if (p == NULL)
        return -ENOMEM;
    pthread_mutex_init(&p->mu, NULL);
    p->n = st->cfg.pool_size;
    p->backoff_ms = st->cfg.reconnect_min_ms;
    if ((p->url = strdup(url)) == NULL || (p->conns = calloc((size_t)p->n, sizeof *p->conns)) == NULL ||
        (p->sem = rt_sem_new(p->n)) == NULL) {
        pg_free(p);
        return -ENOMEM;
    }
    for (int i = 0; i < p->n; i++)
        p->conns[i].fd = -1;
    st->impl = p;
    if ((rc = conn_open(&p->conns[0], url, deadline_of(st), 1)) < 0) {
        rc = rc == -ENOMEM ? rc : -EIO;
        goto fail;
    }
    STORE__STAT_ADD(st, reconnects, 1);
    if ((rc = migrate(st, &p->conns[0])) < 0)
        goto fail;
    st->be = &pg_backend;
    return 0;
fail:
    pg_free(p);
    st->impl = NULL;
    return rc < 0 && rc != -ENOMEM ? -EIO : rc;
}
