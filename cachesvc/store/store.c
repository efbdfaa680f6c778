/*
 * store.c: the store's public calls, URL dispatch and the per-item batcher.
 *
 * The batcher. Each sku with requests in flight has a batcher: a FIFO of
 * ops (each on its caller's stack) and one leader. The caller that finds no
 * batcher creates it and leads: it takes up to batch_max queued ops (its
 * own first) into one backend transaction, answers them all, and hands the
 * lead to the op now at the head of the queue, or frees the batcher when
 * the queue is empty. So a batch starts as soon as the previous one
 * committed, holding whatever queued meanwhile, and no coroutine is spawned
 * per batch. All queue state is under st->lock, a plain mutex held only for
 * a few pointer moves and event signals, never across a switching call.
 * Signals are sent under the lock so that a waiter which sees its op done
 * (under the lock) knows nobody touches its event any more.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cachesvc/store/store_int.h"
#include "kit/kit.h"

enum { OP_QUEUED = 1, OP_TAKEN = 2, OP_DONE = 3 };

/* One item's queue. Its lead (the right to take the queue's head as the
 * next batch) is held by one coroutine, or by nobody (leaderless) while
 * the item's batches are in flight and nothing is queued. A batch passes
 * the lead on when it is answered, or earlier: one batch at a time, when
 * the backend has ended its transaction (batch_ended); pipelined, when the
 * backend has sent its writes (batch_sent) and fewer than pipeline_depth
 * batches run. */
typedef struct lead_ctx lead_ctx;

struct store__batcher {
    store__batcher *next;        /* hash chain */
    store__op *head, *tail;
    int qlen;
    int running;                 /* batches started, not yet answered */
    int leaderless;              /* nobody holds the lead (running > 0) */
    lead_ctx *deferred;          /* a batch sent while pipeline_depth ran:
                                  * passes the lead when one ends */
    lead_ctx *runs, *runs_tail;  /* the batches in flight, oldest first */
    int64_t earliest;            /* no queued deadline before this */
    char sku[STORE_SKU_MAX + 1];
};

struct lead_ctx {
    store *st;
    store__batcher *b;
    rt_event *ev;                /* the leader's: signalled when its batch
                                  * becomes the oldest in flight */
    lead_ctx *next;              /* in b->runs */
    int passed;                  /* this batch gave the lead away */
};

const double store_batch_bucket_le[STORE_BATCH_BUCKETS] = {
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1e300};
const double store_latency_bucket_le[STORE_LATENCY_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 1e300};

static unsigned sku_hash(const char *s)
{
    return (unsigned)(kit_hash(s, strlen(s)) % STORE__NBUCKETS);
}

static void cfg_defaults(store_config *c)
{
    if (c->pool_size <= 0) c->pool_size = 4;
    if (c->batch_max <= 0) c->batch_max = 256;
    if (c->pipeline_depth <= 0) c->pipeline_depth = 1;
    if (c->queue_max <= 0) c->queue_max = 4096;
    if (c->timeout_ms <= 0) c->timeout_ms = 5000;
    if (c->reconnect_min_ms <= 0) c->reconnect_min_ms = 50;
    if (c->reconnect_max_ms <= 0) c->reconnect_max_ms = 2000;
    if (c->reconnect_max_ms < c->reconnect_min_ms) c->reconnect_max_ms = c->reconnect_min_ms;
    if (c->sold_out_max_orders == 0) c->sold_out_max_orders = 100000;
}

int store_open(const char *url, const store_config *cfg, store **out)
{
    store *st;
    int rc;

    *out = NULL;
    if (url == NULL)
        return -EINVAL;
    if ((st = calloc(1, sizeof *st)) == NULL)
        return -ENOMEM;
    if (cfg != NULL)
        st->cfg = *cfg;
    cfg_defaults(&st->cfg);
    st->stats.queue_max = (uint64_t)st->cfg.queue_max;
    pthread_mutex_init(&st->lock, NULL);
    pthread_condattr_t ca;   /* waits with deadlines of rt_now_ns() */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&st->ended, &ca);
    pthread_condattr_destroy(&ca);
    if ((rc = store__so_new(st)) < 0) {
        pthread_cond_destroy(&st->ended);
        pthread_mutex_destroy(&st->lock);
        free(st);
        return rc;
    }
    if (strncmp(url, "sqlite:", 7) == 0)
        rc = store__sqlite_open(st, url + 7);
    else if (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0)
        rc = store__pg_open(st, url);
    else
        rc = -EINVAL;
    if (rc < 0) {
        store__so_free(st);
        pthread_cond_destroy(&st->ended);
        pthread_mutex_destroy(&st->lock);
        free(st);
        return rc;
    }
    *out = st;
    return 0;
}

/* Waits until no call runs on st (store__enter), at most about two
 * database timeouts: a running batch ends within timeout_ms, and one
 * queued behind it within another. Returns 0, or -ETIMEDOUT. */
static int close_wait(store *st)
{
    int64_t until = rt_now_ns() + ((int64_t)st->cfg.timeout_ms * 2 + 1000) * 1000000;
    while (__atomic_load_n(&st->inflight, __ATOMIC_ACQUIRE) > 0) {
        if (rt_now_ns() >= until)
            return -ETIMEDOUT;
        if (rt_self() != NULL) {
            rt_sleep(1);
        } else {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    return 0;
}

void store_close(store *st)
{
    if (st == NULL)
        return;
    /* A call still running (a batch on a blocking-pool thread whose caller
     * gave up, a read) would use the connections and st after they are
     * freed: wait for it; if it does not end, leave st open. */
    if (close_wait(st) < 0) {
        rt_log(RT_LOG_ERROR, "store", "calls still running at close; the store is left open",
               "calls=%d", __atomic_load_n(&st->inflight, __ATOMIC_ACQUIRE));
        return;
    }
    st->be->close(st);
    store__so_free(st);
    for (int i = 0; i < STORE__NBUCKETS; i++) {
        store__batcher *b = st->buckets[i], *n;
        for (; b != NULL; b = n) {   /* empty unless a caller broke the contract */
            n = b->next;
            free(b);
        }
    }
    pthread_cond_destroy(&st->ended);
    pthread_mutex_destroy(&st->lock);
    free(st);
}

/* The store's histograms hold nb buckets, the last one +Inf. */
static void hist_add(uint64_t *buckets, const double *le, int nb, double v)
{
    __atomic_fetch_add(&buckets[kit_bucket(le, nb - 1, v)], 1, __ATOMIC_RELAXED);
}

/* Finds or creates sku's batcher. Call with st->lock held. */
static store__batcher *do_batcher_get(store *st, const char *sku, int *created)
{
    KIT_ASSERT_LOCKED(&st->lock);
    unsigned h = sku_hash(sku);
    store__batcher *b;
    for (b = st->buckets[h]; b != NULL; b = b->next)
        if (strcmp(b->sku, sku) == 0) {
            *created = 0;
            return b;
        }
    if ((b = calloc(1, sizeof *b)) == NULL)
        return NULL;
    strcpy(b->sku, sku);
    b->next = st->buckets[h];
    st->buckets[h] = b;
    *created = 1;
    return b;
}

static void do_batcher_remove(store *st, store__batcher *b)
{
    KIT_ASSERT_LOCKED(&st->lock);
    store__batcher **pp = &st->buckets[sku_hash(b->sku)];
    while (*pp != b)
        pp = &(*pp)->next;
    *pp = b->next;
    free(b);
}

/* Answers, as timed out, every request of b's queue whose deadline has
 * passed, and unlinks it. Queued requests park without a timer of their
 * own (a timer per request was a twentieth of the service's CPU per
 * decrement): the leader calls this before it takes a batch and again
 * when the batch is answered, so a request is answered at most one batch
 * (bounded by timeout_ms) after its deadline. Call with st->lock held;
 * self, the caller's own op, is not signalled. */
static void do_expire(store *st, store__batcher *b, store__op *self)
{
    KIT_ASSERT_LOCKED(&st->lock);
    store__op **pp = &b->head, *prev = NULL;
    int64_t now;
    if (b->head == NULL || b->earliest == RT_NO_DEADLINE || (now = rt_now_ns()) < b->earliest)
        return;
    b->earliest = RT_NO_DEADLINE;   /* recomputed over the ops that stay */
    while (*pp != NULL) {
        store__op *op = *pp;
        if (now < op->deadline) {
            if (op->deadline < b->earliest)
                b->earliest = op->deadline;
            prev = op;
            pp = &op->next;
            continue;
        }
        *pp = op->next;
        if (b->tail == op)
            b->tail = prev;
        b->qlen--;
        __atomic_fetch_sub(&st->stats.queued, 1, __ATOMIC_RELAXED);
        op->next = NULL;
        op->err = -ETIMEDOUT;
        op->timed_out = 1;
        op->state = OP_DONE;
        if (op != self)
            rt_event_signal(op->ev);
    }
}

/* Gives b's lead to its queue's head, or leaves b leaderless when nothing
 * is queued (the next op to queue then leads). answered: the requests of
 * the batch just answered, 0 when the lead passes before an answer. Call
 * with st->lock held. */
static void do_pass_lead(store *st, store__batcher *b, int answered)
{
    KIT_ASSERT_LOCKED(&st->lock);
    do_expire(st, b, NULL);
    if (b->head == NULL) {
        b->leaderless = 1;
        return;
    }
    /* The new leader gives the callers just answered a scheduling turn
     * (they may join its batch) only when its queue is short next to
     * them. A queue as long as the batch just answered (HTTP callers,
     * whose next requests take a client round trip) starts at once: the
     * turn would wait behind every answered caller's response, with the
     * database idle. */
    b->head->lead_yield = 2 * b->qlen < answered;
    b->head->lead = 1;
    rt_event_signal(b->head->ev);
}

/* store__batch_result.sent: the batch's writes are out, and the item's
 * next batch may be decided on the state they will leave. Passes the lead
 * on unless pipeline_depth batches run; then the first of them to end
 * passes it. Runs on a thread of the blocking pool. */
static void batch_sent(void *arg)
{
    lead_ctx *c = arg;
    pthread_mutex_lock(&c->st->lock);
    if (c->b->running < c->st->cfg.pipeline_depth) {
        c->passed = 1;
        do_pass_lead(c->st, c->b, 0);
    } else {
        c->b->deferred = c;
    }
    pthread_mutex_unlock(&c->st->lock);
}

/* store__batch_result.ended (one batch at a time per item): the batch's
 * transaction is over, so the item's next batch may start while this one
 * is being answered. Passing the lead here, on the blocking pool's thread,
 * spares the next batch this leader's wake-up, its answers and its own
 * response (about half a millisecond between two batches of a hot item
 * under load); the next leader is readied ahead of the run queues (the
 * pool's wake-ups are urgent). Answers keep their order: the next batch
 * is answered after this one (b->runs). */
static void batch_ended(void *arg)
{
    lead_ctx *c = arg;
    pthread_mutex_lock(&c->st->lock);
    if (!c->passed) {
        c->passed = 1;
        do_pass_lead(c->st, c->b, 0);
    }
    pthread_mutex_unlock(&c->st->lock);
}

/* store__batch_result.wait_prior: waits on a thread of the blocking pool
 * until c's batch is the oldest of its item in flight. */
static int batch_wait_prior(void *arg, int64_t deadline)
{
    lead_ctx *c = arg;
    store *st = c->st;
    int rc = 0;
    pthread_mutex_lock(&st->lock);
    while (c->b->runs != c && rc == 0) {
        if (deadline == RT_NO_DEADLINE) {
            pthread_cond_wait(&st->ended, &st->lock);
        } else {
            struct timespec ts = {.tv_sec = deadline / 1000000000,
                                  .tv_nsec = deadline % 1000000000};
            if (rt_now_ns() >= deadline ||
                pthread_cond_timedwait(&st->ended, &st->lock, &ts) == ETIMEDOUT)
                rc = c->b->runs == c ? 0 : -ETIMEDOUT;
        }
    }
    pthread_mutex_unlock(&st->lock);
    return rc;
}

/* Runs one batch as the leader of b, whose queue head is self. Answers
 * every op of the batch and passes the lead on (if the batch did not
 * already: batch_sent). */
static void lead_batch(store *st, store__batcher *b, store__op *self)
{
    store__op *ops_small[64], **ops = ops_small;
    store__batch_result r;
    lead_ctx lc = {.st = st, .b = b, .ev = self->ev};
    int n = 0, rc, i;
    int64_t t0;

    if (st->cfg.batch_max > 64 && (ops = malloc(sizeof *ops * st->cfg.batch_max)) == NULL)
        ops = ops_small;   /* degrade to batches of 64 */
    int cap = ops == ops_small ? (st->cfg.batch_max < 64 ? st->cfg.batch_max : 64) : st->cfg.batch_max;

    pthread_mutex_lock(&st->lock);
    KIT_ASSERT(b->head == self);   /* the lead goes to the head */
    do_expire(st, b, self);
    while (n < cap && b->head != NULL) {
        store__op *op = b->head;
        b->head = op->next;
        if (b->head == NULL)
            b->tail = NULL;
        b->qlen--;
        op->state = OP_TAKEN;
        op->next = NULL;
        ops[n++] = op;
    }
    __atomic_fetch_sub(&st->stats.queued, (uint64_t)n, __ATOMIC_RELAXED);
    if (n > 0) {
        /* One at a time, a batch may start while the one before is
         * answered, but never while its transaction runs. */
        if (b->running++ > 0 && st->cfg.pipeline_depth > 1)
            STORE__STAT_ADD(st, pipelined, 1);
        if (b->runs_tail != NULL)
            b->runs_tail->next = &lc;
        else
            b->runs = &lc;
        b->runs_tail = &lc;
    }
    pthread_mutex_unlock(&st->lock);
    if (n == 0)
        goto handoff;   /* every queued request had passed its deadline */

    memset(&r, 0, sizeof r);
    if (st->cfg.pipeline_depth > 1) {
        r.sent = batch_sent;
        r.wait_prior = batch_wait_prior;
        r.ctx = &lc;
    } else {
        r.ended = batch_ended;
        r.ctx = &lc;
    }
    t0 = rt_now_ns();
    rc = st->be->batch(st, b->sku, ops, n, &r);
    double dt = (double)(rt_now_ns() - t0) / 1e9;

    /* The item's batches are answered in the order they were started (a
     * later one commits after an earlier one anyway): the commit hook
     * sees rising versions. */
    pthread_mutex_lock(&st->lock);
    while (b->runs != &lc) {
        pthread_mutex_unlock(&st->lock);
        rt_event_wait(lc.ev, RT_NO_DEADLINE);
        pthread_mutex_lock(&st->lock);
    }
    pthread_mutex_unlock(&st->lock);

    STORE__STAT_ADD(st, batches, 1);
    STORE__STAT_ADD(st, batched_requests, (uint64_t)n);
    STORE__STAT_ADD(st, batch_size_sum, (uint64_t)n);
    hist_add(st->stats.batch_size_bucket, store_batch_bucket_le, STORE_BATCH_BUCKETS, n);
    hist_add(st->stats.latency_bucket, store_latency_bucket_le, STORE_LATENCY_BUCKETS, dt);
    {   /* a double sum, updated with a CAS loop on its bits */
        uint64_t old, upd;
        double d;
        __atomic_load((uint64_t *)&st->stats.latency_sum_s, &old, __ATOMIC_RELAXED);
        do {
            memcpy(&d, &old, sizeof d);
            d += dt;
            memcpy(&upd, &d, sizeof d);
        } while (!__atomic_compare_exchange((uint64_t *)&st->stats.latency_sum_s, &old, &upd, 0,
                                            __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    }

    if (rc == 0) {
        store__finish(&r.state, ops, n);
        for (i = 0; i < n; i++) {
            store__op *op = ops[i];
            if (op->kind != STORE__DECR)
                continue;
            if (op->outcome == STORE_OK)
                STORE__STAT_ADD(st, orders, 1);
            else if (op->outcome == STORE_REPLAYED)
                STORE__STAT_ADD(st, replays, 1);
            else
                STORE__STAT_ADD(st, rejects, 1);
            if (op->replay_of >= 0)
                strcpy(op->prior.sku, b->sku);
        }
        if (r.changed) {
            STORE__STAT_ADD(st, commits, 1);
            store__so_drop(st, b->sku);
            if (st->cfg.on_commit != NULL) {
                store_committed row = {.stock = r.state.stock,
                                       .version = r.state.version,
                                       .per_user_limit = r.state.per_user_limit,
                                       .sale_starts_at_ms = r.state.sale_starts_at_ms,
                                       .committed_at_ms = r.committed_at_ms};
                st->cfg.on_commit(st->cfg.on_commit_ctx, b->sku, &row);
            }
        }
    } else {
        if (rc == -ECONNABORTED)
            STORE__STAT_ADD(st, unknown_outcomes, 1);
        else
            STORE__STAT_ADD(st, errors, 1);
        for (i = 0; i < n; i++) {
            ops[i]->err = rc;
            ops[i]->batch_size = n;
        }
    }

    pthread_mutex_lock(&st->lock);
    for (i = 0; i < n; i++) {
        ops[i]->state = OP_DONE;
        if (ops[i] != self)
            rt_event_signal(ops[i]->ev);
    }
    /* The oldest in flight (waited for above) leaves the list; the next
     * one may now be answered. */
    KIT_ASSERT(b->runs == &lc);
    b->running--;
    if ((b->runs = lc.next) != NULL)
        rt_event_signal(b->runs->ev);
    else
        b->runs_tail = NULL;
    pthread_cond_broadcast(&st->ended);
    /* A deferred batch ends only after the batches before it, the first
     * of which handed its lead on. */
    KIT_ASSERT(b->deferred != &lc);
    if (b->deferred != NULL) {
        /* A later batch, sent while pipeline_depth ran, passes its lead
         * now that this one has ended. */
        b->deferred->passed = 1;
        b->deferred = NULL;
        do_pass_lead(st, b, 0);
    }
    if (!lc.passed && b->head == NULL) {
        /* Nothing queued yet: give the callers just answered a scheduling
         * turn to make their next requests, which then queue behind this
         * lead instead of one of them starting a batch of one. */
        pthread_mutex_unlock(&st->lock);
        rt_yield();
        pthread_mutex_lock(&st->lock);
    }
    goto pass;
handoff:
    pthread_mutex_lock(&st->lock);
pass:
    if (!lc.passed)
        do_pass_lead(st, b, n);
    /* Nobody leads, nothing is queued and no batch runs (one still running
     * removes b when it ends). */
    if (b->leaderless && b->running == 0)
        do_batcher_remove(st, b);
    pthread_mutex_unlock(&st->lock);
    if (ops != ops_small)
        free(ops);
}

/* Queues op on sku's batcher and parks until it is answered. Returns 0
 * (op answered: op->err and op->outcome tell), -EBUSY (queue full, nothing
 * queued), -ETIMEDOUT (deadline passed while queued, removed), -ENOMEM. */
static int submit(store *st, const char *sku, store__op *op, int64_t deadline)
{
    store__batcher *b;
    int created, rc;

    op->state = OP_QUEUED;
    op->lead = 0;
    op->next = NULL;
    op->deadline = deadline;
    op->timed_out = 0;
    if ((op->ev = rt_event_new()) == NULL)
        return -ENOMEM;

    pthread_mutex_lock(&st->lock);
    if ((b = do_batcher_get(st, sku, &created)) == NULL) {
        pthread_mutex_unlock(&st->lock);
        rt_event_free(op->ev);
        return -ENOMEM;
    }
    if (b->qlen >= st->cfg.queue_max) {
        pthread_mutex_unlock(&st->lock);
        rt_event_free(op->ev);
        STORE__STAT_ADD(st, overloaded, 1);
        return -EBUSY;
    }
    if (b->tail != NULL)
        b->tail->next = op;
    else
        b->head = op;
    if (created || deadline < b->earliest)
        b->earliest = deadline;
    b->tail = op;
    b->qlen++;
    op->seq = ++st->next_seq;
    /* A new batcher has no leader, nor has one whose batches are in
     * flight with nothing queued: this op leads. */
    if (b->leaderless) {
        b->leaderless = 0;
        created = 1;
    }
    op->lead = created;
    STORE__STAT_ADD(st, queued, 1);
    pthread_mutex_unlock(&st->lock);

    /* created, not op->lead: once unlocked, a leader may set op->lead. */
    if (created) {
        rt_yield();   /* as below: callers just answered may join this batch */
        lead_batch(st, b, op);
        rt_event_free(op->ev);
        return op->timed_out ? -ETIMEDOUT : 0;
    }

    for (;;) {
        rt_event_wait(op->ev, RT_NO_DEADLINE);
        pthread_mutex_lock(&st->lock);
        if (op->state == OP_DONE) {
            pthread_mutex_unlock(&st->lock);
            rc = op->timed_out ? -ETIMEDOUT : 0;
            break;
        }
        if (op->lead) {
            pthread_mutex_unlock(&st->lock);
            /* The previous leader just woke its batch's callers and then
             * this op; when few requests are queued, let those callers run
             * first so that the requests they make next join this batch
             * instead of waiting a whole commit for the one after (see
             * lead_yield in lead_batch). A scheduling turn, not a timed
             * wait. */
            if (op->lead_yield)
                rt_yield();
            lead_batch(st, b, op);
            rc = op->timed_out ? -ETIMEDOUT : 0;
            break;
        }
        pthread_mutex_unlock(&st->lock);
    }
    rt_event_free(op->ev);
    return rc;
}

int store_decrement(store *st, const char *sku, const char *user_id, int64_t qty,
                    const char *key, int64_t deadline, store_decrement_result *out)
{
    store__op op;
    int rc;

    memset(out, 0, sizeof *out);
    if (!store_valid_id(sku) || !store_valid_id(user_id) || qty < 1 || qty > STORE_QTY_MAX ||
        (key != NULL && !store_valid_key(key)))
        return -EINVAL;
    memset(&op, 0, sizeof op);
    op.kind = STORE__DECR;
    op.sku = sku;
    op.user_id = user_id;
    op.qty = qty;
    op.key = key;
    store__enter(st);
    rc = submit(st, sku, &op, deadline);
    store__leave(st);
    out->seq = op.seq;
    out->batch_size = op.batch_size;
    if (rc == -EBUSY) {
        out->outcome = STORE_OVERLOADED;
        return 0;
    }
    if (rc == -ETIMEDOUT) {
        out->outcome = STORE_UNAVAILABLE;
        return 0;
    }
    if (rc < 0)
        return rc;
    if (op.err == -ECONNABORTED) {
        out->outcome = STORE_OUTCOME_UNKNOWN;
        return 0;
    }
    if (op.err < 0) {
        out->outcome = STORE_UNAVAILABLE;
        return 0;
    }
    out->outcome = (store_outcome)op.outcome;
    out->stock = op.stock;
    out->version = op.version;
    if (op.outcome == STORE_OK) {
        out->order_id = op.order_id;
        out->qty = qty;
        strcpy(out->user_id, user_id);
        strcpy(out->sku, sku);
    } else if (op.outcome == STORE_REPLAYED || op.outcome == STORE_KEY_MISMATCH) {
        out->order_id = op.prior.order_id;
        out->qty = op.prior.qty;
        strcpy(out->user_id, op.prior.user_id);
        strcpy(out->sku, op.prior.sku[0] ? op.prior.sku : sku);
        out->stock = op.prior.stock;
        out->version = op.prior.version;
    }
    return 0;
}

int store_put_item(store *st, const char *sku, const store_put *p, int64_t deadline,
                   store_item *out, int *created)
{
    store__op op;
    int rc;

    if (created != NULL)
        *created = 0;
    if (!store_valid_id(sku) || p == NULL)
        return -EINVAL;
    memset(&op, 0, sizeof op);
    op.kind = STORE__PUT;
    op.put = *p;
    store__enter(st);
    rc = submit(st, sku, &op, deadline);
    store__leave(st);
    if (rc < 0)
        return rc;
    if (op.err < 0)
        return op.err;
    if (op.outcome < 0)
        return op.outcome;
    if (out != NULL)
        store__state_to_item(&op.after, sku, out);
    if (created != NULL)
        *created = op.created;
    return 0;
}

/* Counts a backend call's error; the call's store__leave. */
static int count_error(store *st, int rc)
{
    if (rc < 0 && rc != -ENOENT && rc != -EINVAL)
        STORE__STAT_ADD(st, errors, 1);
    store__leave(st);
    return rc;
}

int store_order_by_key(store *st, const char *key, store_order *out)
{
    memset(out, 0, sizeof *out);
    if (!store_valid_key(key))
        return -EINVAL;
    store__enter(st);
    return count_error(st, st->be->order_by_key(st, key, out));
}

int store_get_item(store *st, const char *sku, store_item *out)
{
    if (!store_valid_id(sku))
        return -EINVAL;
    store__enter(st);
    return count_error(st, st->be->get_item(st, sku, out));
}

int store_version_check(store *st, const char *sku, int64_t version,
                        store_version_info *out)
{
    int64_t updated = 0, over = 0;
    out->version = 0;
    out->first_newer_ms = 0;
    if (!store_valid_id(sku) || version < 0)
        return -EINVAL;
    store__enter(st);
    int rc = count_error(st, st->be->version_check(st, sku, version, out, &over, &updated));
    if (rc < 0 || out->version <= version) {
        out->first_newer_ms = 0;
        return rc;
    }
    /* Every commit adds one to the version and stamps the row
     * (updated_at_ms). The next commit after the read's version is the
     * row's last one when the version moved by one, else the first newer
     * order when it carries version + 1 (exact), else that order or the
     * last commit, whichever came first (an upper bound: item writes in
     * between leave no stamp of their own). */
    if (out->version != version + 1 && out->first_newer_ms > 0 && over == version + 1)
        return 0;
    if (out->version == version + 1 || out->first_newer_ms == 0 || updated < out->first_newer_ms)
        out->first_newer_ms = updated;
    return 0;
}

int store_audit(store *st, const char *sku, int with_orders, store_audit_result *out)
{
    memset(out, 0, sizeof *out);
    if (!store_valid_id(sku))
        return -EINVAL;
    store__enter(st);
    return count_error(st, st->be->audit(st, sku, with_orders, out));
}

int store_outbox_fetch(store *st, int64_t after_id, size_t max, store_outbox_row *rows)
{
    if (max == 0)
        return 0;
    store__enter(st);
    return count_error(st, st->be->outbox_fetch(st, after_id, max, rows));
}

int store_outbox_stats(store *st, int64_t *rows, int64_t *oldest_committed_at_ms)
{
    *rows = 0;
    *oldest_committed_at_ms = 0;
    store__enter(st);
    return count_error(st, st->be->outbox_stats(st, rows, oldest_committed_at_ms));
}

int store_outbox_claim(store *st, const char *claimer, int64_t lease_ms, int mine,
                       int64_t after_id, size_t max, store_outbox_row *rows)
{
    size_t cl = claimer != NULL ? strlen(claimer) : 0;
    if (cl == 0 || cl > 128 || lease_ms <= 0)
        return -EINVAL;
    if (max == 0)
        return 0;
    store__enter(st);
    return count_error(st, st->be->outbox_claim(st, claimer, lease_ms, mine, after_id, max, rows));
}

int store_outbox_delete(store *st, const int64_t *ids, size_t n)
{
    if (n == 0)
        return 0;
    store__enter(st);
    return count_error(st, st->be->outbox_delete(st, ids, n));
}

int store_ping(store *st)
{
    store__enter(st);
    int rc = st->be->ping(st);
    store__leave(st);
    return rc;
}

void store_stats_get(store *st, store_stats *out)
{
    uint64_t *src = (uint64_t *)&st->stats, *dst = (uint64_t *)out;
    for (size_t i = 0; i < sizeof *out / sizeof(uint64_t); i++)
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}
