/*
 * pg_batch.c: the batch transaction of the PostgreSQL backend
 * (store__backend.batch). It runs on a thread of the runtime's blocking
 * pool (rt_blocking), whose waits are poll(): see batch_run.
 *
 * A batch is two round trips:
 *   1. BEGIN; lock the item row (SELECT ... FOR UPDATE); look up the
 *      batch's idempotency keys and its buyers' purchases; take order ids
 *      from the orders sequence; Sync (batch_read).
 *   2. after deciding in memory: insert the orders, upsert the purchases,
 *      write the item and one outbox row, COMMIT; Sync (batch_write: its
 *      parameters built, sent, and the answers classified).
 * A failure before round 2 was sent leaves nothing applied (-EIO or
 * -ETIMEDOUT). A broken connection or timeout after round 2 was sent, with
 * no error answered first, means COMMIT's outcome is unknown
 * (-ECONNABORTED). The one-round-trip batch (batch_known) bounds its lock
 * waits with lock_timeout so that a row locked elsewhere ends in an error
 * before the deadline rather than in doubt. A unique violation (the same
 * idempotency key committed by another batch meanwhile) rolls back and
 * reruns the batch, which then sees the key and replays it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <poll.h>
#include <sys/socket.h>

#include <libpq-fe.h>

#include "cachesvc/store/pg_int.h"

int store__fault_break_after_commit;

/* ---- the batch ---------------------------------------------------------- */

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
static int send_guard(store__pg_conn *pc, const char *sku, const store__state *k)
{
    char v[5][24];
    const char *prm[6] = {sku, v[0], v[1], v[2], v[3], v[4]};
    snprintf(v[0], sizeof v[0], "%lld", (long long)k->version);
    snprintf(v[1], sizeof v[1], "%lld", (long long)k->stock);
    snprintf(v[2], sizeof v[2], "%lld", (long long)k->per_user_limit);
    snprintf(v[3], sizeof v[3], "%lld", (long long)k->sale_starts_at_ms);
    snprintf(v[4], sizeof v[4], "%lld", (long long)k->units_supplied);
    return store__pg_exec(pc, PS_GUARD, 6, prm);
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
        ids[i] = store__pg_i64(r, i, 0);
        sorted &= i == 0 || ids[i - 1] < ids[i];
    }
    if (!sorted)   /* generate_series calls nextval in order: rare */
        qsort(ids, (size_t)n, sizeof *ids, cmp_i64);
    return 0;
}

typedef struct batch_ctx {
    store *st;
    store__pg_conn *pc;
    const char *sku;
    store__op **ops;
    int n;
    int64_t deadline;
    const char **users;   /* n entries */
    int64_t *qtys;        /* n entries */
    int64_t *ids;         /* n entries */
    int nids;
    char *users_lit;      /* text[] literal of the distinct buyers */
    /* The one-round-trip batch's check of what it assumed (PS_CHECK_PRIOR,
     * or PS_CHECK_BUYERS under a limit): the buyers and their totals, the
     * keys it refused; sent when check. */
    int check;
    kit_buf cusers, ctotals, ckeys;
    /* Under a per-user limit, the check writes the buyers' totals too
     * (PS_CHECK_BUYERS): cusers then lists only the buyers the batch
     * refused, w* the buyers with orders in it. */
    int check_writes;
    kit_buf wusers, wdeltas, wtotals;
    /* The batch's result, and what publish does with it once the writes
     * are sent: record_buyers, the buyers' totals in ops were read or
     * known (a per-user limit), so they are recorded too. */
    store__batch_result *r;
    int record_buyers;
    int published;
} batch_ctx;

/* Makes the batch's final state the item's known state, with its buyers'
 * totals when record_buyers. */
static void remember(batch_ctx *b)
{
    store__pg *p = b->st->impl;
    store__pg_known_set(p, b->sku, &b->r->state);
    if (b->record_buyers)
        store__pg_buyers_record(p, b->sku, b->ops, b->n);
    b->published = 1;
}

/* (batch_ctx *) The batch's writes are on the wire and, when pipelined, it
 * holds the item's row lock (write_send): the state they leave if they
 * commit becomes the item's known state, and the item's next batch may
 * start (r->sent), decided on it. That batch's checks run under the row
 * lock, which this one holds until its COMMIT: should this one not
 * commit, they fail (the version is not the one they expect) and it
 * reruns with reads. */
static void publish(void *arg)
{
    batch_ctx *b = arg;
    remember(b);
    if (b->r->sent != NULL) {
        void (*sent)(void *) = b->r->sent;
        b->r->sent = NULL;
        sent(b->r->ctx);
    }
}

/* After the batch: a failed one forgets the item's known state (a batch
 * decided on what it published fails its checks anyway); one that ended
 * without publishing (it changed nothing) leaves what it read. A
 * successful batch's publish stands: a later batch may have published
 * over it already. */
static void known_after(batch_ctx *b, int rc)
{
    if (rc != 0)
        store__pg_known_set(b->st->impl, b->sku, NULL);
    else if (!b->published)
        remember(b);
}

/* Sets each decrement's bought from a (user_id, qty) result. */
static void assign_bought(batch_ctx *b, PGresult *r)
{
    for (int row = 0; row < PQntuples(r); row++) {
        const char *u = PQgetvalue(r, row, 0);
        int64_t q = store__pg_i64(r, row, 1);
        for (int i = 0; i < b->n; i++)
            if (b->ops[i]->kind == STORE__DECR && strcmp(b->ops[i]->user_id, u) == 0)
                b->ops[i]->bought = q;
    }
}

/* Round 1. Returns 0 with the state in *s0, or a negative errno (the
 * transaction is then rolled back or the connection broken). */
static int batch_read(batch_ctx *b, store__state *s0, int ids_wanted)
{
    store__pg_conn *pc = b->pc;
    PGresult *res[Q_MAX] = {0};
    int idx[Q_MAX], nq = 0, fe, rc, nkeys = 0, nusers;
    kit_buf keys = {0}, users = {0};
    char nbuf[16];
    const char *p[2];

    for (int i = 0; i < Q_MAX; i++)
        idx[i] = -1;
    kit_buf_puts(&keys, "{");
    kit_buf_puts(&users, "{");
    for (int i = 0; i < b->n; i++)
        if (b->ops[i]->kind == STORE__DECR && b->ops[i]->key != NULL) {
            store__pg_sb_elem(&keys, b->ops[i]->key);
            nkeys++;
        }
    nusers = store__distinct_users(b->ops, b->n, b->users);
    for (int i = 0; i < nusers; i++)
        store__pg_sb_elem(&users, b->users[i]);
    kit_buf_puts(&keys, "}");
    kit_buf_puts(&users, "}");
    if (keys.oom || users.oom) {
        rc = -ENOMEM;
        goto out;
    }

    rc = -EIO;
    idx[Q_BEGIN] = nq++;
    if (store__pg_exec(pc, PS_BEGIN, 0, NULL) < 0)
        goto out;
    idx[Q_ITEM] = nq++;
    p[0] = b->sku;
    if (store__pg_exec(pc, PS_LOCK_ITEM, 1, p) < 0)
        goto out;
    if (nkeys > 0) {
        idx[Q_KEYS] = nq++;
        p[0] = keys.data;
        if (store__pg_exec(pc, PS_KEYS, 1, p) < 0)
            goto out;
    }
    if (nusers > 0) {
        idx[Q_BOUGHT] = nq++;
        p[0] = b->sku;
        p[1] = users.data;
        if (store__pg_exec(pc, PS_BOUGHT_LIMITED, 2, p) < 0)
            goto out;
    }
    if (ids_wanted > 0) {
        idx[Q_IDS] = nq++;
        snprintf(nbuf, sizeof nbuf, "%d", ids_wanted);
        p[0] = nbuf;
        if (store__pg_exec(pc, PS_IDS, 1, p) < 0)
            goto out;
    }
    if (PQpipelineSync(pc->c) != 1)
        goto out;
    if ((rc = store__pg_flush(pc, b->deadline)) < 0)
        goto out;
    if ((rc = store__pg_collect(pc, b->deadline, res, nq, &fe)) < 0)
        goto out;
    if (fe >= 0) {
        store__pg_sql_error("batch read", res[fe]);
        store__pg_end(pc, b->deadline, 0);
        rc = -EIO;
        goto out;
    }

    store__pg_row_state(res[idx[Q_ITEM]], s0);
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
                store__pg_row_order(r, row, 1, &op->prior);
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
    store__pg_clear(res, Q_MAX);
    free(keys.data);
    free(b->users_lit);
    b->users_lit = users.data;
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

    if (store__pg_exec(b->pc, PS_REBUILD, 1, p) < 0 || store__pg_exec(b->pc, PS_BOUGHT, 2, p) < 0 ||
        PQpipelineSync(b->pc->c) != 1)
        return -EIO;
    if ((rc = store__pg_flush(b->pc, b->deadline)) < 0)
        return rc;
    if ((rc = store__pg_collect(b->pc, b->deadline, res, 2, &fe)) == 0) {
        if (fe >= 0) {
            store__pg_sql_error("rebuild purchases", res[fe]);
            rc = -EIO;
        } else {
            assign_bought(b, res[1]);
        }
    }
    store__pg_clear(res, 2);
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
    if (store__pg_exec(b->pc, PS_IDS, 1, p) < 0 || PQpipelineSync(b->pc->c) != 1)
        return -EIO;
    if ((rc = store__pg_flush(b->pc, b->deadline)) < 0)
        return rc;
    if ((rc = store__pg_collect(b->pc, b->deadline, res, 1, &fe)) == 0) {
        if (fe >= 0)
            rc = -EIO;
        else if ((rc = take_ids(res[0], b->ids + b->nids, extra)) == 0)
            b->nids = total;
    }
    store__pg_clear(res, 1);
    return rc;
}

enum { W_BEGIN, W_LOCK_TIMEOUT, W_GUARD, W_CHECK, W_ORDERS, W_PURCHASES, W_ITEM, W_OUTBOX,
       W_COMMIT, W_MAX };

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
            op->order_id = store__pg_i64(res, j++, 0);
    }
    return j == k ? 0 : -1;
}

/* Round 2's parameters as text (write_build). */
typedef struct write_params {
    kit_buf oid, ouser, oqty, okey;   /* the new orders: array literals */
    kit_buf puser, pqty;              /* the purchase deltas */
    int k;                                   /* new orders */
    int m;                                   /* purchase deltas */
    char stock[24], version[24], now[24], limit[24], sale[24], supplied[24];
    char lock[32];                           /* known: lock_timeout_of */
} write_params;

/* Round 2 on the wire (write_send): its answers, in the order sent. */
typedef struct write_round {
    PGresult *res[W_MAX];
    int at[W_MAX];   /* the index in res of W_BEGIN .. W_ORDERS, or -1 */
    int nq;          /* statements sent */
    int fe;          /* the first that failed with an SQL error, or -1 */
} write_round;

/* Builds round 2's parameters into *w (zeroed by the caller, freed with
 * write_params_free) from the decisions in b->ops and the final state
 * r->state. Unless known, each new order takes its id from b->ids here;
 * known: the insert takes them from the sequence. The purchase deltas are
 * written only while the item keeps purchases, and not when the check
 * writes them (PS_CHECK_BUYERS). Returns 0 or -ENOMEM. */
static int write_build(batch_ctx *b, const store__batch_result *r, int known, write_params *w)
{
    const store__state *s = &r->state;

    kit_buf_puts(&w->oid, "{");
    kit_buf_puts(&w->ouser, "{");
    kit_buf_puts(&w->oqty, "{");
    kit_buf_puts(&w->okey, "{");
    for (int i = 0; i < b->n; i++) {
        store__op *op = b->ops[i];
        if (op->kind != STORE__DECR || op->outcome != STORE_OK)
            continue;
        if (!known) {
            op->order_id = b->ids[w->k];
            store__pg_sb_int(&w->oid, op->order_id);
        }
        w->k++;
        store__pg_sb_elem(&w->ouser, op->user_id);
        store__pg_sb_int(&w->oqty, op->qty);
        store__pg_sb_elem(&w->okey, op->key);
    }
    kit_buf_puts(&w->oid, "}");
    kit_buf_puts(&w->ouser, "}");
    kit_buf_puts(&w->oqty, "}");
    kit_buf_puts(&w->okey, "}");
    /* The check writes them itself in a one-round-trip batch (check_build
     * has grouped them already). */
    w->m = store__keep_purchases(s) && !(known && b->check_writes)
               ? store__purchase_deltas(b->ops, b->n, b->users, b->qtys)
               : 0;
    kit_buf_puts(&w->puser, "{");
    kit_buf_puts(&w->pqty, "{");
    for (int j = 0; j < w->m; j++) {
        store__pg_sb_elem(&w->puser, b->users[j]);
        store__pg_sb_int(&w->pqty, b->qtys[j]);
    }
    kit_buf_puts(&w->puser, "}");
    kit_buf_puts(&w->pqty, "}");
    if (w->oid.oom || w->ouser.oom || w->oqty.oom || w->okey.oom || w->puser.oom ||
        w->pqty.oom)
        return -ENOMEM;
    snprintf(w->stock, sizeof w->stock, "%lld", (long long)s->stock);
    snprintf(w->version, sizeof w->version, "%lld", (long long)s->version);
    snprintf(w->now, sizeof w->now, "%lld", (long long)r->committed_at_ms);
    snprintf(w->limit, sizeof w->limit, "%lld", (long long)s->per_user_limit);
    snprintf(w->sale, sizeof w->sale, "%lld", (long long)s->sale_starts_at_ms);
    snprintf(w->supplied, sizeof w->supplied, "%lld", (long long)s->units_supplied);
    if (known)
        lock_timeout_of(b->deadline, w->lock, sizeof w->lock);
    return 0;
}

static void write_params_free(write_params *w)
{
    free(w->oid.data);
    free(w->ouser.data);
    free(w->oqty.data);
    free(w->okey.data);
    free(w->puser.data);
    free(w->pqty.data);
}

/* Sends round 2 up to one Sync and collects its answers into *q (at[]
 * -1, fe -1 on entry): when known, BEGIN, the lock timeout and the version
 * check against s0 first; then the orders, the purchase deltas, the item
 * (inserted when s0 did not find it), the outbox row and COMMIT. Returns
 * 0 when every answer came (q->fe says whether a statement failed), the
 * error of store__pg_collect when the transport failed while reading
 * them (q->res holds the answers read), or -ECONNABORTED when a statement
 * could not be queued or sent (q->res holds none). */
static int write_send(batch_ctx *b, const store__state *s0, int known, const write_params *w,
                      write_round *q)
{
    store__pg_conn *pc = b->pc;
    const char *p[8];

    if (known) {
        if (store__pg_exec(pc, PS_BEGIN, 0, NULL) < 0)
            return -ECONNABORTED;
        q->at[W_BEGIN] = q->nq++;
        p[0] = w->lock;
        if (store__pg_exec(pc, PS_LOCK_TIMEOUT, 1, p) < 0)
            return -ECONNABORTED;
        q->at[W_LOCK_TIMEOUT] = q->nq++;
        /* Pipelined, the guard's answer is flushed at once: it says this
         * batch holds the row lock (publish waits for it). */
        if (send_guard(pc, b->sku, s0) < 0 ||
            (b->r->sent != NULL && PQsendFlushRequest(pc->c) != 1))
            return -ECONNABORTED;
        q->at[W_GUARD] = q->nq++;
        if (b->check) {
            p[0] = b->sku; p[1] = b->cusers.data; p[2] = b->ctotals.data; p[3] = b->ckeys.data;
            p[4] = b->wusers.data; p[5] = b->wdeltas.data; p[6] = b->wtotals.data;
            if (store__pg_exec(pc, b->check_writes ? PS_CHECK_BUYERS : PS_CHECK_PRIOR,
                               b->check_writes ? 7 : 4, p) < 0)
                return -ECONNABORTED;
            q->at[W_CHECK] = q->nq++;
        }
    }
    if (w->k > 0) {
        p[0] = b->sku; p[1] = w->now; p[2] = w->stock; p[3] = w->version;
        if (known) {
            p[4] = w->ouser.data; p[5] = w->oqty.data; p[6] = w->okey.data;
            if (store__pg_exec(pc, PS_INS_ORDERS_NEW, 7, p) < 0)
                return -ECONNABORTED;
        } else {
            p[4] = w->oid.data; p[5] = w->ouser.data; p[6] = w->oqty.data; p[7] = w->okey.data;
            if (store__pg_exec(pc, PS_INS_ORDERS, 8, p) < 0)
                return -ECONNABORTED;
        }
        q->at[W_ORDERS] = q->nq++;
    }
    if (w->m > 0) {
        p[0] = b->sku; p[1] = w->puser.data; p[2] = w->pqty.data;
        if (store__pg_exec(pc, PS_UPS_PURCHASES, 3, p) < 0)
            return -ECONNABORTED;
        q->nq++;
    }
    p[0] = b->sku; p[1] = w->stock; p[2] = w->version; p[3] = w->limit; p[4] = w->sale;
    p[5] = w->supplied; p[6] = w->now;
    if (store__pg_exec(pc, s0->found ? PS_UPD_ITEM : PS_INS_ITEM, 7, p) < 0)
        return -ECONNABORTED;
    q->nq++;
    p[0] = b->sku; p[1] = w->version; p[2] = w->now;
    if (store__pg_exec(pc, PS_INS_OUTBOX, 3, p) < 0)
        return -ECONNABORTED;
    q->nq++;
    if (store__pg_exec(pc, PS_COMMIT, 0, NULL) < 0)
        return -ECONNABORTED;
    q->nq++;
    if (PQpipelineSync(pc->c) != 1 || store__pg_flush(pc, b->deadline) < 0)
        return -ECONNABORTED;
    /* The item's next batch may be decided on this one's writes once this
     * one holds the row lock, or it could take the lock first: after round
     * 1 read under it, or once the guard has answered. Unpipelined, no
     * batch of the item starts before this one ends. */
    int early = known && b->r->sent != NULL;
    if (!early)
        publish(b);
    if (__atomic_load_n(&store__fault_break_after_commit, __ATOMIC_RELAXED) > 0 &&
        __atomic_sub_fetch(&store__fault_break_after_commit, 1, __ATOMIC_RELAXED) >= 0)
        shutdown(pc->fd, SHUT_RDWR);
    KIT_ASSERT(q->nq <= W_MAX);   /* one slot of q->res per statement */
    return store__pg_collect_at(pc, b->deadline, q->res, q->nq, &q->fe,
                                early ? q->at[W_GUARD] + 1 : -1, publish, b);
}

/* Tells what round 2 did from its answers in *q and rc, write_send's
 * return. Returns batch_write's codes; an SQL error before COMMIT is
 * rolled back here. */
static int write_classify(batch_ctx *b, int known, const write_params *w, const write_round *q,
                          int rc)
{
    PGresult *const *res = q->res;
    int nq = q->nq, fe = q->fe;

    if (rc == 0 && fe < 0) {
        /* COMMIT answered; a COMMIT of a failed transaction answers
         * ROLLBACK, which fe would have caught through the failed statement. */
        if (strcmp(PQcmdStatus(res[nq - 1]), "COMMIT") != 0)
            return -EIO;
        /* Committed: orders whose ids cannot be told are answered
         * outcome_unknown (a retry with the key replays its order). */
        int at = q->at[W_ORDERS];
        if (known && at >= 0 && assign_new_ids(b, res[at], w->k) < 0) {
            rt_log(RT_LOG_ERROR, "store", "postgresql batch write returned too few order ids",
                   "ids=%d orders=%d", PQntuples(res[at]), w->k);
            return -ECONNABORTED;
        }
        return 0;
    }
    if (rc == 0) {
        /* An SQL error: the transaction is aborted and nothing applied. */
        int unique = sqlstate_is(res[fe], "23505");
        /* known: the version check or the check of the buyers' totals
         * and refused keys failed (division by zero), or a key was
         * committed before: decided on stale state. */
        int stale = known && (unique || sqlstate_is(res[fe], "22012"));
        if (!unique && !stale && !sqlstate_is(res[fe], SQLSTATE_LOCK_TIMEOUT))
            store__pg_sql_error("batch write", res[fe]);
        if (fe == nq - 1)   /* COMMIT itself failed: rolled back by the server */
            return -EIO;
        return store__pg_end(b->pc, b->deadline, 0) < 0 ? -EIO
               : stale ? -EAGAIN : unique ? -EEXIST : -EIO;
    }
    /* The transport failed after the writes went out: did an SQL error
     * arrive first? Then nothing was applied. */
    for (int i = 0; i < nq; i++)
        if (res[i] != NULL && PQresultStatus(res[i]) != PGRES_COMMAND_OK &&
            PQresultStatus(res[i]) != PGRES_TUPLES_OK &&
            PQresultErrorField(res[i], PG_DIAG_SQLSTATE) != NULL &&
            strncmp(PQresultErrorField(res[i], PG_DIAG_SQLSTATE), "08", 2) != 0 &&
            strncmp(PQresultErrorField(res[i], PG_DIAG_SQLSTATE), "57", 2) != 0)
            return -EIO;
    return -ECONNABORTED;
}

/* Round 2. Returns 0 (committed), -EEXIST (unique violation: rolled back,
 * rerun), -EIO (an SQL error: rolled back), -ECONNABORTED (unknown),
 * -ENOMEM (nothing sent, rolled back).
 * known: the whole transaction in this one round trip (batch_known): it
 * begins, bounds its lock waits (lock_timeout_of), checks that the row's
 * version is still s0's, and the orders take their ids as they are
 * inserted; a failed check or a unique violation rolls back and returns
 * -EAGAIN (rerun with the reads), a lock wait that timed out -EIO. */
static int batch_write(batch_ctx *b, const store__state *s0, const store__batch_result *r,
                       int known)
{
    write_params w = {0};
    write_round q = {.fe = -1};
    int rc;

    for (int i = 0; i < W_MAX; i++)
        q.at[i] = -1;
    if ((rc = write_build(b, r, known, &w)) < 0) {
        /* Nothing sent yet: roll back and report. */
        rc = store__pg_end(b->pc, b->deadline, 0) < 0 ? -EIO : rc;
    } else {
        rc = write_send(b, s0, known, &w, &q);
        rc = write_classify(b, known, &w, &q, rc);
    }
    store__pg_clear(q.res, W_MAX);
    write_params_free(&w);
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
static int conn_unsettled(store__pg_conn *pc)
{
    struct pollfd pfd = {.fd = pc->fd, .events = POLLIN};
    return poll(&pfd, 1, 0) != 0 || PQstatus(pc->c) != CONNECTION_OK;
}

/* Builds the check of what a one-round-trip batch assumed (b->check):
 * the keys of the requests it refused and, under a per-user limit, every
 * buyer with the total the batch was decided on. There the check also
 * writes the totals (PS_CHECK_BUYERS): each buyer with orders in the batch
 * is listed once in w* with its delta and the total before, and only the
 * buyers it refused are listed in cusers (a buyer with several requests
 * once per request: the same pair). Without a limit, PS_CHECK_PRIOR checks
 * the keys. Returns 0 or -ENOMEM. */
static int check_build(batch_ctx *b, int limited)
{
    int small[512], *slot = small, m = 0, cap = 16;
    int64_t tot_small[256], *tot = tot_small;

    while (cap < 2 * b->n)
        cap <<= 1;
    if (limited && ((cap > 512 && (slot = malloc(sizeof *slot * (size_t)cap)) == NULL) ||
                    (b->n > 256 && (tot = malloc(sizeof *tot * (size_t)b->n)) == NULL))) {
        if (slot != small)
            free(slot);
        return -ENOMEM;
    }
    /* The buyers with orders (b->users, b->qtys: the purchase deltas),
     * found through an open-addressing set of their indexes. */
    for (int i = 0; limited && i < cap; i++)
        slot[i] = -1;
    for (int i = 0; limited && i < b->n; i++) {
        store__op *op = b->ops[i];
        if (op->kind != STORE__DECR || op->outcome != STORE_OK)
            continue;
        size_t h = store__user_slot(slot, (size_t)cap, b->users, op->user_id);
        if (slot[h] < 0) {
            slot[h] = m;
            b->users[m] = op->user_id;
            b->qtys[m] = 0;
            tot[m++] = op->bought;
        }
        b->qtys[slot[h]] += op->qty;
    }
    kit_buf_puts(&b->cusers, "{");
    kit_buf_puts(&b->ctotals, "{");
    kit_buf_puts(&b->ckeys, "{");
    for (int i = 0; i < b->n; i++) {
        store__op *op = b->ops[i];
        if (limited && op->kind == STORE__DECR && op->outcome != STORE_OK &&
            slot[store__user_slot(slot, (size_t)cap, b->users, op->user_id)] < 0) {
            store__pg_sb_elem(&b->cusers, op->user_id);
            store__pg_sb_int(&b->ctotals, op->bought);
        }
        if (op->key != NULL && op->outcome != STORE_OK &&
            !(op->outcome == STORE_REPLAYED && op->replay_of >= 0))
            store__pg_sb_elem(&b->ckeys, op->key);
    }
    kit_buf_puts(&b->cusers, "}");
    kit_buf_puts(&b->ctotals, "}");
    kit_buf_puts(&b->ckeys, "}");
    if (limited) {
        kit_buf_puts(&b->wusers, "{");
        kit_buf_puts(&b->wdeltas, "{");
        kit_buf_puts(&b->wtotals, "{");
        for (int j = 0; j < m; j++) {
            store__pg_sb_elem(&b->wusers, b->users[j]);
            store__pg_sb_int(&b->wdeltas, b->qtys[j]);
            store__pg_sb_int(&b->wtotals, tot[j]);
        }
        kit_buf_puts(&b->wusers, "}");
        kit_buf_puts(&b->wdeltas, "}");
        kit_buf_puts(&b->wtotals, "}");
        b->check_writes = 1;
    }
    if (slot != small)
        free(slot);
    if (tot != tot_small)
        free(tot);
    b->check = 1;
    return b->cusers.oom || b->ctotals.oom || b->ckeys.oom || b->wusers.oom ||
                   b->wdeltas.oom || b->wtotals.oom
               ? -ENOMEM
               : 0;
}

/* A batch of decrements decided on the item's known state (the state this
 * instance's last batch of it committed or read) and written in one round
 * trip: BEGIN, the version check under the row lock, the check of what
 * else was assumed, the writes, COMMIT (batch_write, known). What the
 * database has not told us is assumed and checked on the server: a key is
 * new (an order's key by the unique index, a refused request's key by
 * the check, PS_CHECK_PRIOR or under a limit PS_CHECK_BUYERS, since a key
 * committed before would replay its order), and under a per-user limit
 * each buyer's total is the one this instance last saw
 * (store__pg_buyers_get; 0 for a buyer it has not seen, as long as the
 * totals it holds account for every unit sold: otherwise such a batch
 * reads), checked and written by PS_CHECK_BUYERS. A batch that changes
 * nothing only checks the version, so it may rest on neither assumption.
 * Returns 0 (done, *r filled), -EAGAIN (not applicable or stale: nothing
 * applied, run the batch with its reads), or batch_write's errors. */
static int batch_known(batch_job *j)
{
    batch_ctx *b = j->b;
    store__batch_result *r = j->r;
    store__pg *p = b->st->impl;
    store__state k;
    int rc, refused = 0, limited;

    for (int i = 0; i < b->n; i++)
        if (b->ops[i]->kind != STORE__DECR)
            return -EAGAIN;
    if (!store__pg_known_get(p, b->sku, &k) || !k.found || conn_unsettled(b->pc))
        return -EAGAIN;
    limited = k.per_user_limit > 0;
    for (int i = 0; i < b->n; i++) {
        b->ops[i]->key_found = 0;
        b->ops[i]->bought = 0;
    }
    /* Nothing sent yet: a buyer this instance cannot vouch for (its totals
     * lost some, to a reconnect, a stale try or the bound) is read. */
    if (limited && store__pg_buyers_get(p, b->sku, b->ops, b->n) > 0)
        return -EAGAIN;
    r->state = k;
    r->committed_at_ms = kit_wall_ms();
    r->changed = store__decide(&r->state, r->committed_at_ms, b->ops, b->n);
    for (int i = 0; i < b->n; i++) {
        store__op *op = b->ops[i];
        refused += op->key != NULL && op->outcome != STORE_OK &&
                   !(op->outcome == STORE_REPLAYED && op->replay_of >= 0);
    }
    if (!r->changed) {
        if (refused > 0 || limited)
            return -EAGAIN;
        /* One implicit transaction up to the Sync: its lock wait is
         * bounded as in batch_write. */
        PGresult *res[2] = {0};
        char lt[32];
        const char *prm[1] = {lt};
        int fe;
        lock_timeout_of(b->deadline, lt, sizeof lt);
        if (store__pg_exec(b->pc, PS_LOCK_TIMEOUT, 1, prm) < 0 ||
            send_guard(b->pc, b->sku, &k) < 0 || PQpipelineSync(b->pc->c) != 1)
            return -EIO;
        if ((rc = store__pg_flush(b->pc, b->deadline)) == 0 &&
            (rc = store__pg_collect(b->pc, b->deadline, res, 2, &fe)) == 0 && fe >= 0) {
            rc = sqlstate_is(res[fe], "22012") ? -EAGAIN : -EIO;
            if (rc == -EIO && !sqlstate_is(res[fe], SQLSTATE_LOCK_TIMEOUT))
                store__pg_sql_error("version check", res[fe]);
        }
        store__pg_clear(res, 2);
        if (rc == -EAGAIN) {
            STORE__STAT_ADD(b->st, one_trip_stale, 1);
            store__pg_known_set(p, b->sku, NULL);
            store__pg_known_tried(p, b->sku, 0);
        } else if (rc == 0) {
            STORE__STAT_ADD(b->st, one_trip_batches, 1);
        }
        return rc;
    }
    if ((refused > 0 || limited) && check_build(b, limited) < 0)
        return -ENOMEM;
    r->state.version = k.version + 1;
    b->record_buyers = limited;
    b->published = 0;
    rc = batch_write(b, &k, r, 1);
    known_after(b, rc);
    if (rc == 0 || rc == -EAGAIN)
        store__pg_known_tried(p, b->sku, rc == 0);
    if (rc == 0)
        STORE__STAT_ADD(b->st, one_trip_batches, 1);
    else if (rc == -EAGAIN)
        STORE__STAT_ADD(b->st, one_trip_stale, 1);
    return rc;
}

/* 1 when a request of the batch replays an order the batch read (one
 * committed before it, not one of its own). */
static int replays_read(const batch_ctx *b)
{
    for (int i = 0; i < b->n; i++)
        if (b->ops[i]->outcome == STORE_REPLAYED && b->ops[i]->replay_of < 0)
            return 1;
    return 0;
}

static intptr_t batch_run(void *arg)
{
    batch_job *j = arg;
    batch_ctx *b = j->b;
    store__batch_result *r = j->r;
    store__state s0;
    int rc = 0, norders, rebuilt = 0;

    if (j->attempt == 0 && !j->fresh_retry) {
        if ((rc = batch_known(j)) != -EAGAIN) {
            /* A timeout or a reply mix-up leaves replies due on the
             * connection (and store__pg_pool_put drops one not idle anyway). */
            j->broken = rc == -ECONNABORTED || rc == -ETIMEDOUT ||
                        (rc < 0 && PQstatus(b->pc->c) != CONNECTION_OK);
            return rc;
        }
    }
    /* Reads take the row lock in the order batches were started: after
     * every earlier batch of the item has ended (see wait_prior). */
    if (r->wait_prior != NULL && (rc = r->wait_prior(r->ctx, b->deadline)) < 0)
        return rc;
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
        rebuilt = store__needs_rebuild(&s0, b->ops, b->n);
        if (rebuilt && (rc = batch_rebuild(b)) < 0) {
            j->broken = 1;
            break;
        }
        r->state = s0;
        r->committed_at_ms = kit_wall_ms();
        r->changed = store__decide(&r->state, r->committed_at_ms, b->ops, b->n);
        b->record_buyers = r->state.per_user_limit > 0 && (s0.per_user_limit > 0 || rebuilt);
        b->published = 0;
        if (!r->changed) {
            if (replays_read(b)) {
                /* A replay of an order this transaction read: answered
                 * only once that order is durable (PG_DURABLE_SQL). */
                rc = store__pg_end(b->pc, b->deadline, 1);
                j->broken = rc < 0;
                break;
            }
            rc = store__pg_end(b->pc, b->deadline, 0);
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
    /* What the batch committed (published as it was sent) or read, when
     * it changed nothing, is the item's state for the next batch's
     * one-round-trip attempt, with the totals of its buyers when they were
     * read (under a limit then). */
    known_after(b, rc);
    return rc == -EEXIST ? -EIO : rc;
}

/* batch_run, then, once the batch is over (not to be rerun on a fresh
 * connection), its connection back to the pool and the caller told
 * (r->ended), still on the blocking pool's thread. */
static intptr_t batch_run_end(void *arg)
{
    batch_job *j = arg;
    intptr_t rc = batch_run(j);
    if (!j->want_fresh && j->r->ended != NULL) {
        store__pg_pool_put(j->b->st, j->b->pc, j->broken);
        j->b->pc = NULL;
        j->r->ended(j->r->ctx);
    }
    return rc;
}

int store__pg_batch(store *st, const char *sku, store__op **ops, int n, store__batch_result *r)
{
    batch_ctx b = {.st = st, .sku = sku, .ops = ops, .n = n, .deadline = store__pg_deadline(st),
                   .r = r};
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
    if ((b.pc = store__pg_pool_get(st, b.deadline, &rc)) == NULL)
        goto out;
    for (;;) {
        j.want_fresh = j.broken = 0;
        rc = (int)rt_blocking(batch_run_end, &j);
        if (!j.want_fresh)
            break;
        j.fresh_retry = 1;
        store__pg_pool_put(st, b.pc, 1);
        if ((b.pc = store__pg_pool_get(st, b.deadline, &rc)) == NULL)
            goto out;
    }
    if (b.pc != NULL)
        store__pg_pool_put(st, b.pc, j.broken);
out:
    free(b.cusers.data);
    free(b.ctotals.data);
    free(b.ckeys.data);
    free(b.wusers.data);
    free(b.wdeltas.data);
    free(b.wtotals.data);
    free(b.users);
    free(b.qtys);
    free(b.ids);
    free(b.users_lit);
    return rc;
}
