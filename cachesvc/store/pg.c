/*
 * pg.c: the PostgreSQL backend. libpq in non-blocking mode on the
 * runtime's netpoll, pipeline mode so that the statements of one step
 * travel in one round trip, and a fixed pool of connections opened lazily
 * and reopened with exponential backoff (pg_conn.c). The batch transaction
 * runs on a thread of the runtime's blocking pool (pg_batch.c, which says
 * what a batch sends and what its failures mean); the other calls run on
 * the calling coroutine (pg_read.c). This file opens the store (the first
 * connection, the schema's migrations) and closes it; pg_int.h is what the
 * four files share.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "cachesvc/store/pg_int.h"

/* ---- migrations --------------------------------------------------------- */

/* Runs sql (several statements allowed) outside pipeline mode on a fresh
 * connection. Returns 0 or -EIO; *out (if not NULL) gets the last result. */
static int simple_exec(store__pg_conn *pc, const char *sql, int64_t dl, PGresult **out)
{
    PGresult *r, *last = NULL;
    int rc = 0;

    if (PQsendQuery(pc->c, sql) != 1)
        return -EIO;
    if ((rc = store__pg_flush(pc, dl)) < 0)
        return rc;
    for (;;) {
        if ((rc = store__pg_result(pc, dl, &r)) < 0)
            break;
        if (r == NULL)
            break;
        if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
            store__pg_sql_error("migration", r);
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

static int migrate(store *st, store__pg_conn *pc)
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
    have = (int)store__pg_i64(r, 0, 0);
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
                 (long long)kit_wall_ms());
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

/* ---- open, close -------------------------------------------------------- */

static void pg_free(store__pg *p)
{
    if (p == NULL)
        return;
    for (int i = 0; p->conns != NULL && i < p->n; i++)
        store__pg_drop(&p->conns[i]);
    free(p->conns);
    store__pg_known_free(p);
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
    .batch = store__pg_batch,
    .get_item = store__pg_get_item,
    .order_by_key = store__pg_order_by_key,
    .orders_by_keys = store__pg_orders_by_keys,
    .audit = store__pg_audit,
    .outbox_fetch = store__pg_outbox_fetch,
    .outbox_delete = store__pg_outbox_delete,
    .outbox_claim = store__pg_outbox_claim,
    .outbox_stats = store__pg_outbox_stats,
    .version_check = store__pg_version_check,
    .ping = store__pg_ping,
    .sold_out_read = store__pg_sold_out_read,
    .close = pg_close,
};

int store__pg_open(store *st, const char *url)
{
    store__pg *p = calloc(1, sizeof *p);
    int rc;

    if (p == NULL)
        return -ENOMEM;
    pthread_mutex_init(&p->mu, NULL);
    p->n = st->cfg.pool_size;
    p->backoff_ms = st->cfg.reconnect_min_ms;
    if ((p->url = strdup(url)) == NULL ||
        (p->conns = calloc((size_t)p->n, sizeof *p->conns)) == NULL ||
        (p->sem = rt_sem_new(p->n)) == NULL) {
        pg_free(p);
        return -ENOMEM;
    }
    for (int i = 0; i < p->n; i++)
        p->conns[i].fd = -1;
    st->impl = p;
    if ((rc = store__pg_connect(&p->conns[0], url, store__pg_deadline(st), 1)) < 0) {
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
