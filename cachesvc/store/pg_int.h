/*
 * pg_int.h: what the PostgreSQL backend's files share. Not for other files
 * of the store, nor other folders.
 *
 *   pg.c        open (connect, migrations), close, the backend's table
 *   pg_conn.c   the prepared statements, connection I/O on the netpoll or
 *               in poll(), connect, the pool and its reconnect backoff,
 *               array literals and result columns
 *   pg_batch.c  the batch transaction (store__backend.batch)
 *   pg_read.c   item reads, audit, the sold-out snapshot, the outbox relay
 *
 * Functions return 0 or a negative errno (store.h's set) unless they say
 * otherwise.
 */
#ifndef CACHESVC_STORE_PG_INT_H
#define CACHESVC_STORE_PG_INT_H

#include <stdint.h>
#include <stdlib.h>

#include <libpq-fe.h>

#include "cachesvc/store/store_int.h"
#include "kit/buf.h"
#include "kit/kit.h"

/* A slot of the pool. c is NULL while the slot has no connection; fd is
 * c's socket as registered with the netpoll (-1 when none). */
typedef struct store__pg_conn {
    PGconn *c;
    int fd;
    int in_use;
    int prepared;        /* the statements of ps_sql[] exist on c */
} store__pg_conn;

/* The item's columns in the order store__pg_row_state() reads them. */
#define ITEM_COLS "stock, version, per_user_limit, sale_starts_at_ms, units_supplied"

/* The prepared statements (their SQL is ps_sql[] in pg_conn.c), run with
 * store__pg_exec(). */
enum {
    PS_BEGIN, PS_COMMIT, PS_ROLLBACK, PS_LOCK_ITEM, PS_KEYS, PS_BOUGHT_LIMITED, PS_BOUGHT,
    PS_IDS, PS_REBUILD, PS_INS_ORDERS, PS_UPS_PURCHASES, PS_UPD_ITEM, PS_INS_ITEM,
    PS_INS_OUTBOX, PS_GET_ITEM, PS_OUTBOX_FETCH, PS_OUTBOX_DEL, PS_ASYNC_COMMIT, PS_PING,
    PS_GUARD, PS_CHECK_PRIOR, PS_CHECK_BUYERS, PS_INS_ORDERS_NEW, PS_LOCK_TIMEOUT, PS_ORDER_BY_KEY,
    PS_OUTBOX_STATS, PS_OUTBOX_CLAIM, PS_VERSION_CHECK, PS_COUNT
};

enum { PG_KNOWN = 64 };

/* The backend's state (store.impl). */
typedef struct store__pg {
    char *url;
    int n;
    store__pg_conn *conns;
    rt_sem *sem;               /* free connection slots */
    pthread_mutex_t mu;        /* conns[].in_use, backoff */
    int64_t next_connect_ns;   /* no connect attempt before this */
    int backoff_ms;
    int connect_failed;        /* the last connect attempt failed */
    /* The committed state of recently batched items as this instance's
     * last batch of each left it (under mu; a slot per hash, a collision
     * replaces), and under a per-user limit the buyers' totals this
     * instance has seen. A batch of decrements is decided on them and
     * written in one round trip that checks them (batch_known in
     * pg_batch.c). A connect after a failed one (the database was down
     * and may have been replaced) forgets them all (store__pg_pool_get);
     * the pool opening another connection does not. pg_known.c. */
    struct store__pg_known {
        char sku[STORE_SKU_MAX + 1];
        int valid;     /* s holds the committed state */
        store__state s;
        int skip;      /* batches to run with reads before the next try */
        int penalty;   /* skip after the next failed try */
        struct store__pg_buyer {
            uint64_t hash;
            char *user;       /* NULL: a free slot */
            int64_t total;
        } *buyers;     /* open addressing, cap a power of two */
        uint32_t nbuyers, cap;
        int64_t units; /* the sum of the buyers' totals: every unit sold
                        * (s.units_supplied - s.stock) when each buyer of
                        * the item is here, so one not here has bought none */
    } known[PG_KNOWN];
} store__pg;

/* ---- what this instance knows of the items it sells (pg_known.c) --------- */

/* At most this many buyers' totals are kept per item; past it they are
 * forgotten and the item's one-round-trip batches find out again (a
 * returning buyer then fails the check once). */
enum { PG_BUYERS_MAX = 1 << 16 };

/* Copies sku's known state into *s; 0 when there is none, or while the
 * item's last tries failed (then each call counts one batch down). */
int store__pg_known_get(store__pg *p, const char *sku, store__state *s);
/* Records s as sku's committed state; s == NULL forgets it and the
 * buyers' totals, as does a state without a per-user limit. */
void store__pg_known_set(store__pg *p, const char *sku, const store__state *s);
/* A one-round-trip try of sku failed its checks (ok = 0) or committed. */
void store__pg_known_tried(store__pg *p, const char *sku, int ok);
/* Forgets every item's state and buyers (p->mu held). */
void store__pg_known_forget_locked(store__pg *p);
/* Frees what the known states hold (store close). */
void store__pg_known_free(store__pg *p);
/* Sets each decrement's bought to the buyer's total this instance knows
 * for sku, 0 for a buyer it has not seen (checked by the batch). Returns
 * how many decrements have a buyer it has not seen while the totals it
 * holds do not account for every unit sold (a guess of 0 would then fail
 * the check for any buyer it forgot: the batch reads instead). */
int store__pg_buyers_get(store__pg *p, const char *sku, store__op **ops, int n);
/* Records the totals of a committed batch's buyers for sku: each
 * decrement's bought (the buyer's total before the batch, which must be
 * true: read under the row lock, or checked) plus the batch's orders.
 * Without memory the item's totals are forgotten. */
void store__pg_buyers_record(store__pg *p, const char *sku, store__op **ops, int n);

/* ---- connections (pg_conn.c) -------------------------------------------- */

/* Connects pc to url before deadline, in pipeline mode; verbose: say why
 * on failure. Returns 0 or -EIO/-ETIMEDOUT/-ENOMEM (pc then has no
 * connection). */
int store__pg_connect(store__pg_conn *pc, const char *url, int64_t deadline, int verbose);

/* Closes pc's connection, if any. */
void store__pg_drop(store__pg_conn *pc);

/* Queue a statement in the pipeline: SQL text with store__pg_send, a
 * prepared statement (PS_*) with store__pg_exec. Returns 0 or -EIO. */
int store__pg_send(store__pg_conn *pc, const char *sql, int nparams, const char *const *params);
int store__pg_exec(store__pg_conn *pc, int ps, int nparams, const char *const *params);

/* Sends everything buffered. */
int store__pg_flush(store__pg_conn *pc, int64_t deadline);

/* The next result of the pipeline in *out (NULL between queries). A
 * negative errno leaves the connection unusable. */
int store__pg_result(store__pg_conn *pc, int64_t deadline, PGresult **out);

/* Collects the results of n queries followed by a Sync into res[0..n-1]
 * (the caller PQclears them). Returns 0 when the transport worked (check
 * each result's status), or a negative errno; *first_err gets the index of
 * the first query that failed with an SQL error, or -1. */
int store__pg_collect(store__pg_conn *pc, int64_t deadline, PGresult **res, int n,
                      int *first_err);

/* store__pg_collect, calling at(arg) once the first `after` results have
 * arrived without an SQL error (0 <= after < n, or -1 for never; those
 * statements were followed by a flush request, or their results would
 * come only with the Sync). */
int store__pg_collect_at(store__pg_conn *pc, int64_t deadline, PGresult **res, int n,
                         int *first_err, int after, void (*at)(void *), void *arg);

/* PQclears res[0..n-1] and sets them to NULL. */
void store__pg_clear(PGresult **res, int n);

/* Sends ROLLBACK and waits for it; on failure the caller drops the
 * connection. */

/* An answer that rests on a commit it read, rather than on one of its own
 * (an idempotency key's order replayed, found by its key, or kept in a
 * sold-out set), waits until that commit is as durable as its own would
 * be. A commit whose wait for the synchronous standby was cut short (its
 * session ended, the primary restarted) is visible in the primary's WAL
 * alone, and a failover loses it: acknowledging it would lose an
 * acknowledged order. PG_DURABLE_SQL writes a transactional WAL record (a
 * logical message nothing decodes; any role may write one), so the reading
 * transaction's commit comes after everything it saw and waits for the
 * standby like any write; until the standby confirms, no answer. (An xid
 * alone, txid_current(), does not wait: a commit that wrote no WAL skips
 * the synchronous wait.) */
#define PG_DURABLE_SQL "SELECT pg_logical_emit_message(true, 'cachesvc', 'durable')"
/* Ends the open transaction and waits: ROLLBACK, or with durable that way
 * (the statement, COMMIT). Returns 0, or a negative errno: the caller
 * answers nothing from a durable read and drops the connection. */
int store__pg_end(store__pg_conn *pc, int64_t deadline, int durable);

/* Takes a connected slot with its statements prepared. Returns it, or NULL
 * with *err set: -ETIMEDOUT, -EIO (cannot connect, or within the reconnect
 * backoff). From a coroutine; the slot is the caller's until
 * store__pg_pool_put. */
store__pg_conn *store__pg_pool_get(store *st, int64_t deadline, int *err);

/* Returns a slot; broken: close its connection first (a connection that
 * is not idle is closed anyway). */
void store__pg_pool_put(store *st, store__pg_conn *pc, int broken);

/* The deadline of one call or batch (store_config.timeout_ms from now). */
static inline int64_t store__pg_deadline(store *st)
{
    return rt_deadline_ms(st->cfg.timeout_ms);
}

/* Column col of row as an integer (0 for NULL). */
static inline int64_t store__pg_i64(PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* An order's columns (order_id, sku, user_id, qty, stock_after,
 * version_after) from column col on. */
void store__pg_row_order(PGresult *r, int row, int col, store_order *o);

/* The item row of a "SELECT " ITEM_COLS (no row: not found). */
void store__pg_row_state(PGresult *r, store__state *s);

/* Logs a failed statement (what: the operation) at warn level. */
void store__pg_sql_error(const char *what, PGresult *r);

/* Array literals of parameters, written into a kit_buf (kit/buf.h). */
/* Appends s as a quoted element of a text[] literal (NULL for NULL). */
void store__pg_sb_elem(kit_buf *b, const char *s);
/* Appends v as an element of a bigint[] literal. */
void store__pg_sb_int(kit_buf *b, int64_t v);

/* ---- the backend's operations (store__backend), by file ----------------- */

/* pg_batch.c */
int store__pg_batch(store *st, const char *sku, store__op **ops, int n, store__batch_result *r);

/* pg_read.c */
int store__pg_get_item(store *st, const char *sku, store_item *out);
int store__pg_version_check(store *st, const char *sku, int64_t version,
                            store_version_info *out, int64_t *order_version,
                            int64_t *updated_at_ms);
int store__pg_order_by_key(store *st, const char *key, store_order *out);
int store__pg_orders_by_keys(store *st, const char *const *keys, int n, store_order *out,
                             int *found);
int store__pg_audit(store *st, const char *sku, int with_orders, store_audit_result *out);
int store__pg_sold_out_read(store *st, const char *sku, int64_t max, store__so_set *set);
int store__pg_outbox_fetch(store *st, int64_t after_id, size_t max, store_outbox_row *rows);
int store__pg_outbox_stats(store *st, int64_t *rows, int64_t *oldest_ms);
int store__pg_outbox_claim(store *st, const char *claimer, int64_t lease_ms, int mine,
                           int64_t after_id, size_t max, store_outbox_row *rows);
int store__pg_outbox_delete(store *st, const int64_t *ids, size_t n);
int store__pg_ping(store *st);

#endif /* CACHESVC_STORE_PG_INT_H */
