/*
 * store_model.h: the serial model of the store, shared by the store's
 * unit and integration tests. A randomized request sequence (decrements
 * with random users, qty and idempotency keys; restocks that change the
 * per-user limit) is decided one request at a time against an in-memory
 * item, its orders by key and its purchases by user. The real store's
 * outcomes, in arrival order, must equal the model's exactly, and every
 * replay must return the order its key created.
 *
 * Header-only (static functions): include it in one test file per
 * executable, after cmocka.h and store_int.h.
 */
#ifndef CACHESVC_TESTS_STORE_MODEL_H
#define CACHESVC_TESTS_STORE_MODEL_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kit/kit.h"

typedef struct tsm_spec {
    int kind;              /* STORE__DECR or STORE__PUT */
    char user[16];
    int64_t qty;
    char key[48];
    int has_key;
    store_put put;
} tsm_spec;

typedef struct tsm_ops {
    int n;
    tsm_spec *v;
    store__op *ops;        /* the model's decided ops, index = arrival */
} tsm_ops;

typedef struct tsm_model {
    store__state s;
    int nkeys;
    char (*keys)[48];
    int *key_order;        /* index of the op whose order holds the key */
    store_order *key_prior; /* that order as the store's key lookup finds it */
    int nusers;
    char (*users)[16];
    int64_t *bought;
    int64_t sold;
    int64_t norders;
    int cap;
} tsm_model;

/* A scratch directory per test executable, removed at the end. */
static char tsm_tmpdir[256];

static inline int tsm_tmpdir_setup(void **state)
{
    (void)state;
    snprintf(tsm_tmpdir, sizeof tsm_tmpdir, "/tmp/test_store.XXXXXX");
    return mkdtemp(tsm_tmpdir) == NULL ? -1 : 0;
}

static inline int tsm_tmpdir_teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tsm_tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

#ifdef STORE_SOURCE_DIR
/* Runs scripts/postgres what ("up", "down", "kill") for the server in dir
 * on port; "up" copies the URL it prints into url (urlcap bytes). Returns
 * 0 or -1. */
static inline int tsm_pg_cmd(const char *what, const char *dir, int port, char *url,
                             size_t urlcap)
{
    char cmd[1024], line[256];
    FILE *f;
    if (strcmp(what, "up") == 0)
        snprintf(cmd, sizeof cmd, "%s/scripts/postgres up --dir %s --port %d", STORE_SOURCE_DIR,
                 dir, port);
    else
        snprintf(cmd, sizeof cmd, "%s/scripts/postgres %s --dir %s", STORE_SOURCE_DIR, what,
                 dir);
    if ((f = popen(cmd, "r")) == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (url != NULL && strncmp(line, "postgresql://", 13) == 0) {
            line[strcspn(line, "\n")] = '\0';
            snprintf(url, urlcap, "%s", line);
        }
    return pclose(f) == 0 ? 0 : -1;
}

/* Makes sure the server in pgdir is stopped and rmdir removed even if this
 * process dies without its teardown (an abort, a sanitizer halt, a kill):
 * a forked guard waits for EOF on a pipe whose write end only this process
 * holds (close-on-exec, so scripts it runs do not keep it open), then runs
 * scripts/postgres down and rm -rf. Call once, after the server is up. */
static inline void tsm_pg_guard(const char *pgdir, const char *rmdir)
{
    int fds[2];
    char cmd[1024], c;
    if (pipe2(fds, O_CLOEXEC) < 0)
        return;
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[1]);
        setsid();   /* outlive a kill of the test's process group */
        while (read(fds[0], &c, 1) > 0)
            ;
        snprintf(cmd, sizeof cmd, "%s/scripts/postgres down --dir %s >/dev/null 2>&1; rm -rf '%s'",
                 STORE_SOURCE_DIR, pgdir, rmdir);
        _exit(system(cmd) == 0 ? 0 : 1);
    }
    close(fds[0]);
    /* fds[1] stays open, on purpose, until this process exits. */
}
#endif

/* Fills o (a fresh op) from spec sp; strings point into sp. */
static inline void tsm_op_from(store__op *o, tsm_spec *sp)
{
    memset(o, 0, sizeof *o);
    o->kind = sp->kind;
    o->user_id = sp->user;
    o->qty = sp->qty;
    o->key = sp->has_key ? sp->key : NULL;
    o->put = sp->put;
}

/* Resets real (for a backend run) from model op m: same inputs. */
static inline void tsm_reset(store__op *real, const store__op *m)
{
    memset(real, 0, sizeof *real);
    real->kind = m->kind;
    real->user_id = m->user_id;
    real->qty = m->qty;
    real->key = m->key;
    real->put = m->put;
}

/* Generates n requests: the first creates the item with initial_stock;
 * about 2% are puts (restock 0..40, limit one of 0,2,3,5); decrements
 * draw users from nusers, qty 1..3, and a key from nkeys half of the time. */
static inline void tsm_generate(tsm_ops *o, int n, int nusers, int nkeys, int64_t initial_stock,
                         unsigned *seed)
{
    static const int64_t limits[] = {0, 2, 3, 5};
    o->n = n;
    o->v = calloc((size_t)n, sizeof *o->v);
    o->ops = calloc((size_t)n, sizeof *o->ops);
    for (int i = 0; i < n; i++) {
        tsm_spec *sp = &o->v[i];
        unsigned r = (unsigned)rand_r(seed);
        if (i == 0 || r % 50 == 0) {
            sp->kind = STORE__PUT;
            sp->put.stock = i == 0 ? initial_stock : (int64_t)(rand_r(seed) % 41);
            sp->put.per_user_limit = limits[rand_r(seed) % 4];
            sp->put.sale_starts_at_ms = -1;
        } else {
            sp->kind = STORE__DECR;
            snprintf(sp->user, sizeof sp->user, "u%d", rand_r(seed) % nusers);
            sp->qty = 1 + rand_r(seed) % 3;
            if (rand_r(seed) % 2 == 0) {
                sp->has_key = 1;
                snprintf(sp->key, sizeof sp->key, "k%d", rand_r(seed) % nkeys);
            }
        }
        tsm_op_from(&o->ops[i], sp);
        o->ops[i].seq = (uint64_t)i;
    }
}

static inline void tsm_free(tsm_ops *o)
{
    free(o->v);
    free(o->ops);
}

static inline void tsm_model_init(tsm_model *m)
{
    memset(m, 0, sizeof *m);
    m->cap = 4096;
    m->keys = calloc((size_t)m->cap, sizeof *m->keys);
    m->key_order = calloc((size_t)m->cap, sizeof *m->key_order);
    m->key_prior = calloc((size_t)m->cap, sizeof *m->key_prior);
    m->users = calloc((size_t)m->cap, sizeof *m->users);
    m->bought = calloc((size_t)m->cap, sizeof *m->bought);
}

static inline void tsm_model_free(tsm_model *m)
{
    free(m->keys);
    free(m->key_order);
    free(m->key_prior);
    free(m->users);
    free(m->bought);
}

/* Decides op (index idx in arrival order) against the model. For a replay
 * the model's op->prior.order_id is the index of the original order. */
static inline void tsm_model_apply(tsm_model *m, store__op *op, int64_t now_ms)
{
    int ui = -1, ki = -1;
    int idx = (int)op->seq;
    if (op->kind == STORE__DECR) {
        for (int i = 0; i < m->nusers; i++)
            if (strcmp(m->users[i], op->user_id) == 0)
                ui = i;
        if (ui < 0) {
            ui = m->nusers++;
            snprintf(m->users[ui], sizeof m->users[ui], "%s", op->user_id);
        }
        op->bought = m->bought[ui];
        op->key_found = 0;
        if (op->key != NULL)
            for (int i = 0; i < m->nkeys; i++)
                if (strcmp(m->keys[i], op->key) == 0) {
                    ki = i;
                    op->key_found = 1;
                    op->prior = m->key_prior[i];
                    op->prior.order_id = m->key_order[i];
                }
    }
    if (store__decide(&m->s, now_ms, &op, 1))
        m->s.version++;
    if (op->kind == STORE__DECR && op->outcome == STORE_OK) {
        m->bought[ui] += op->qty;
        m->sold += op->qty;
        m->norders++;
        op->order_id = idx;
        if (op->key != NULL && ki < 0) {
            snprintf(m->keys[m->nkeys], sizeof m->keys[0], "%s", op->key);
            store_order *pr = &m->key_prior[m->nkeys];
            memset(pr, 0, sizeof *pr);   /* sku "": the model's one item */
            snprintf(pr->user_id, sizeof pr->user_id, "%s", op->user_id);
            pr->qty = op->qty;
            m->key_order[m->nkeys++] = idx;
        }
    }
}

/* The real run's answer to request i: outcome (a store_outcome for a
 * decrement; 0 or a negative errno for a put) and the order id (OK: its
 * own; REPLAYED: the original's). */
typedef struct tsm_real {
    int outcome;
    int64_t order_id;
} tsm_real;

/* Asserts that the real answers equal the model's, request by request. */
static inline void tsm_compare_real(const tsm_ops *o, const tsm_real *real)
{
    for (int i = 0; i < o->n; i++) {
        const store__op *m = &o->ops[i];
        if (m->outcome != real[i].outcome)
            fprintf(stderr, "request %d (%s user %s qty %lld key %s): model %d, store %d"
                    " (order %lld)\n", i, m->kind == STORE__PUT ? "put" : "decrement",
                    m->user_id ? m->user_id : "-", (long long)m->qty, m->key ? m->key : "-",
                    m->outcome, real[i].outcome, (long long)real[i].order_id);
        if (m->outcome != real[i].outcome)
            for (int j = 0; j < o->n; j++)
                if (real[j].order_id == real[i].order_id && j != i)
                    fprintf(stderr, "  order %lld is request %d's (%s, outcome %d)\n",
                            (long long)real[j].order_id, j, o->ops[j].key ? o->ops[j].key : "-",
                            real[j].outcome);
        assert_int_equal(m->outcome, real[i].outcome);
        if (m->kind == STORE__DECR &&
            (m->outcome == STORE_REPLAYED || m->outcome == STORE_KEY_MISMATCH))
            assert_int_equal(real[i].order_id, real[m->prior.order_id].order_id);
        if (m->kind == STORE__DECR && m->outcome == STORE_OK)
            assert_true(real[i].order_id > 0);
    }
}

/* For backend-level runs: compares the model with ops decided by the
 * backend (after store__finish). */
static inline void tsm_compare(const tsm_model *m, const store__op *model_ops, const store__op *real,
                        int n)
{
    tsm_ops o = {.n = n, .ops = (store__op *)model_ops};
    tsm_real *r = calloc((size_t)n, sizeof *r);
    (void)m;
    for (int i = 0; i < n; i++) {
        r[i].outcome = real[i].outcome;
        r[i].order_id = real[i].outcome == STORE_REPLAYED || real[i].outcome == STORE_KEY_MISMATCH
                            ? real[i].prior.order_id : real[i].order_id;
    }
    tsm_compare_real(&o, r);
    free(r);
}

/* Runs ops[0..n-1] through the backend in batches of random size, the way
 * store.c does (store__finish after each successful batch). With st2 (a
 * second store on the same database, like a second instance) each batch
 * goes to one of the two at random. */
static inline void tsm_run_batches(store *st, store *st2, const char *sku, store__op *ops, int n,
                                   unsigned *seed, int max_batch)
{
    store__op **p = malloc(sizeof *p * (size_t)max_batch);
    for (int i = 0; i < n;) {
        int k = 1 + (int)(rand_r(seed) % (unsigned)max_batch);
        if (k > n - i)
            k = n - i;
        for (int j = 0; j < k; j++)
            p[j] = &ops[i + j];
        store__batch_result r;
        store *on = st2 != NULL && rand_r(seed) % 2 ? st2 : st;
        memset(&r, 0, sizeof r);
        assert_int_equal(on->be->batch(on, sku, p, k, &r), 0);
        store__finish(&r.state, p, k);
        i += k;
    }
    free(p);
}

/* Runs a randomized sequence of n requests (keys drawn from nkeys) through
 * st's backend (and st2's, when not NULL: see tsm_run_batches) in random
 * batches of 1-64 and checks it against the serial model, then the audit invariants and the
 * outbox (one row per changing batch, versions rising), which it drains. */
static inline void tsm_backend_model_test(store *st, store *st2, const char *sku, int n,
                                          int nkeys, unsigned seed)
{
    tsm_ops ops;
    tsm_model model;

    tsm_generate(&ops, n, 20, nkeys, 40, &seed);
    /* Keys are global: this run's own, whatever ran on the database before. */
    for (int i = 0; i < n; i++)
        if (ops.v[i].has_key) {
            char k[sizeof ops.v[i].key];
            snprintf(k, sizeof k, "%.20s/%.20s", sku, ops.v[i].key);
            memcpy(ops.v[i].key, k, sizeof k);
        }
    tsm_model_init(&model);
    int seen[STORE_OUTCOME_COUNT_] = {0};
    for (int i = 0; i < n; i++) {
        tsm_model_apply(&model, &ops.ops[i], 2000);
        if (ops.ops[i].kind == STORE__DECR)
            seen[ops.ops[i].outcome]++;
    }
    /* The mix reaches every rule the model has. */
    for (int o = STORE_OK; o <= STORE_LIMIT_EXCEEDED; o++)
        if (o != STORE_NOT_FOUND)
            assert_true(seen[o] > 0);

    store__op *real = calloc((size_t)n, sizeof *real);
    for (int i = 0; i < n; i++)
        tsm_reset(&real[i], &ops.ops[i]);
    tsm_run_batches(st, st2, sku, real, n, &seed, 64);
    tsm_compare(&model, ops.ops, real, n);

    store_audit_result au;
    assert_int_equal(st->be->audit(st, sku, 1, &au), 0);
    assert_int_equal(au.item.stock, model.s.stock);
    assert_int_equal(au.item.units_supplied - au.units_sold, au.item.stock);
    assert_int_equal(au.units_sold, model.sold);
    assert_int_equal(au.orders, model.norders);
    assert_int_equal(au.duplicate_idempotency_keys, 0);
    assert_int_equal((int64_t)au.n_order_ids, au.orders);
    for (size_t i = 1; i < au.n_order_ids; i++)
        assert_true(au.order_ids[i - 1] < au.order_ids[i]);
    store_audit_free(&au);

    /* One outbox row per batch that changed the item, versions ascending. */
    store_outbox_row rows[64];
    int64_t after = 0, last_version = 0, total = 0;
    int got;
    while ((got = st->be->outbox_fetch(st, after, 64, rows)) > 0) {
        for (int i = 0; i < got; i++) {
            assert_string_equal(rows[i].sku, sku);
            assert_true(rows[i].version > last_version);
            last_version = rows[i].version;
            after = rows[i].id;
        }
        total += got;
        int64_t ids[64];
        for (int i = 0; i < got; i++)
            ids[i] = rows[i].id;
        assert_int_equal(st->be->outbox_delete(st, ids, (size_t)got), 0);
    }
    assert_int_equal(got, 0);
    store_item it;
    assert_int_equal(st->be->get_item(st, sku, &it), 0);
    assert_int_equal(total, it.version);
    assert_int_equal(st->be->outbox_fetch(st, 0, 64, rows), 0);

    free(real);
    tsm_free(&ops);
    tsm_model_free(&model);
}


#ifdef TSM_WITH_RUNTIME
/* ---- the same model under concurrency, through the batcher ------------
 * Needs the runtime and store.c's submit() (the test includes store.c).
 * tsm_load_run() is called from a coroutine: C coroutines share the
 * request list round-robin and run their share in order; every answer is
 * recorded with its arrival position (seq). tsm_load_check() then runs on
 * the main thread (cmocka asserts must not run on coroutine stacks): it
 * sorts by arrival, decides the same requests serially in that order and
 * compares. */

typedef struct tsm_answer {
    uint64_t seq;
    int spec;          /* index into the generated requests */
    int outcome;
    int64_t order_id;
} tsm_answer;

typedef struct tsm_load {
    store *st;
    const char *sku;
    tsm_ops ops;       /* generated; .ops reused for the model afterwards */
    int coroutines;
    tsm_answer *ans;
    int bad_calls;     /* API calls that returned an error */
    rt_wg *wg;
    store_audit_result audit;
    int audit_rc;
} tsm_load;

typedef struct tsm_worker {
    tsm_load *l;
    int id;
} tsm_worker;

static inline void tsm_worker_fn(void *arg)
{
    tsm_worker *w = arg;
    tsm_load *l = w->l;
    for (int i = w->id; i < l->ops.n; i += l->coroutines) {
        tsm_spec *sp = &l->ops.v[i];
        tsm_answer *a = &l->ans[i];
        a->spec = i;
        if (sp->kind == STORE__PUT) {
            store__op op;
            memset(&op, 0, sizeof op);
            op.kind = STORE__PUT;
            op.put = sp->put;
            if (submit(l->st, l->sku, &op, RT_NO_DEADLINE) < 0 || op.err < 0)
                __atomic_fetch_add(&l->bad_calls, 1, __ATOMIC_RELAXED);
            a->seq = op.seq;
            a->outcome = op.outcome;
        } else {
            store_decrement_result r;
            if (store_decrement(l->st, l->sku, sp->user, sp->qty, sp->has_key ? sp->key : NULL,
                                RT_NO_DEADLINE, &r) < 0)
                __atomic_fetch_add(&l->bad_calls, 1, __ATOMIC_RELAXED);
            a->seq = r.seq;
            a->outcome = r.outcome;
            a->order_id = r.order_id;
        }
    }
    rt_wg_done(l->wg);
}

/* Runs the load (from a coroutine) and reads the audit afterwards. */
static inline void tsm_load_run(tsm_load *l)
{
    tsm_worker *w = calloc((size_t)l->coroutines, sizeof *w);
    l->ans = calloc((size_t)l->ops.n, sizeof *l->ans);
    l->wg = rt_wg_new();
    rt_wg_add(l->wg, l->coroutines);
    for (int i = 0; i < l->coroutines; i++) {
        w[i].l = l;
        w[i].id = i;
        if (rt_spawn(NULL, tsm_worker_fn, &w[i]) < 0) {
            l->bad_calls++;
            rt_wg_done(l->wg);
        }
    }
    rt_wg_wait(l->wg, RT_NO_DEADLINE);
    rt_wg_free(l->wg);
    free(w);
    l->audit_rc = store_audit(l->st, l->sku, 0, &l->audit);
}

static inline int tsm_cmp_seq(const void *a, const void *b)
{
    const tsm_answer *x = a, *y = b;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

/* On the main thread after the runtime stopped. */
static inline void tsm_load_check(tsm_load *l)
{
    int n = l->ops.n;
    tsm_ops arrival = {.n = n};
    tsm_model model;
    tsm_real *real = calloc((size_t)n, sizeof *real);

    assert_int_equal(l->bad_calls, 0);
    qsort(l->ans, (size_t)n, sizeof *l->ans, tsm_cmp_seq);
    for (int i = 1; i < n; i++)
        assert_true(l->ans[i - 1].seq < l->ans[i].seq);
    arrival.v = calloc((size_t)n, sizeof *arrival.v);
    arrival.ops = calloc((size_t)n, sizeof *arrival.ops);
    for (int i = 0; i < n; i++) {
        arrival.v[i] = l->ops.v[l->ans[i].spec];
        tsm_op_from(&arrival.ops[i], &arrival.v[i]);
        arrival.ops[i].seq = (uint64_t)i;
        real[i].outcome = l->ans[i].outcome;
        real[i].order_id = l->ans[i].order_id;
    }
    tsm_model_init(&model);
    for (int i = 0; i < n; i++)
        tsm_model_apply(&model, &arrival.ops[i], kit_wall_ms());
    tsm_compare_real(&arrival, real);

    assert_int_equal(l->audit_rc, 0);
    assert_int_equal(l->audit.item.stock, model.s.stock);
    assert_int_equal(l->audit.units_sold, model.sold);
    assert_int_equal(l->audit.orders, model.norders);
    assert_int_equal(l->audit.item.units_supplied - l->audit.units_sold, l->audit.item.stock);
    assert_int_equal(l->audit.duplicate_idempotency_keys, 0);
    store_audit_free(&l->audit);
    tsm_model_free(&model);
    tsm_free(&arrival);
    free(real);
    free(l->ans);
}
typedef struct tsm_hook {
    uint64_t calls;
    int64_t last_version;
    int out_of_order;
} tsm_hook;

static inline void tsm_on_commit(void *ctx, const char *sku, const store_committed *row)
{
    tsm_hook *h = ctx;
    int64_t stock = row->stock, version = row->version, committed_at_ms = row->committed_at_ms;
    (void)sku;
    if (version <= h->last_version || stock < 0 || committed_at_ms <= 0)
        h->out_of_order = 1;
    h->last_version = version;
    __atomic_fetch_add(&h->calls, 1, __ATOMIC_RELAXED);
}

typedef struct tsm_model_ctx {
    const char *url;
    store_config cfg;
    tsm_load load;
    tsm_hook hook;
    int open_rc;
    store_stats stats;
    int64_t version;
} tsm_model_ctx;

static inline void tsm_model_body(void *arg)
{
    tsm_model_ctx *c = arg;
    c->cfg.on_commit = tsm_on_commit;
    c->cfg.on_commit_ctx = &c->hook;
    if ((c->open_rc = store_open(c->url, &c->cfg, &c->load.st)) < 0)
        return;
    tsm_load_run(&c->load);
    store_item it;
    if (store_get_item(c->load.st, c->load.sku, &it) == 0)
        c->version = it.version;
    store_stats_get(c->load.st, &c->stats);
    store_close(c->load.st);
}

/* Runs the concurrent model test against url: n requests from the given
 * number of coroutines on two workers, batches of at most batch_max, an
 * item's batches pipelined depth deep (PostgreSQL; SQLite ignores it). */
static inline void tsm_run_model(const char *url, const char *sku, int n, int coroutines, int batch_max, unsigned seed, int depth)
{
    tsm_model_ctx c;
    memset(&c, 0, sizeof c);
    c.url = url;
    c.cfg.batch_max = batch_max;
    c.cfg.queue_max = 100000;
    c.cfg.pipeline_depth = depth;
    c.load.sku = sku;
    c.load.coroutines = coroutines;
    tsm_generate(&c.load.ops, n, 30, 200, 3000, &seed);
    /* Keys are global across items: give each run its own. */
    for (int i = 0; i < n; i++)
        if (c.load.ops.v[i].has_key) {
            char k[128];
            snprintf(k, sizeof k, "%s/%s", sku, c.load.ops.v[i].key);
            k[sizeof c.load.ops.v[i].key - 1] = '\0';
            memcpy(c.load.ops.v[i].key, k, sizeof c.load.ops.v[i].key);
        }
    rt_config rc = {.workers = 2};
    assert_int_equal(rt_main(&rc, tsm_model_body, &c), 0);
    assert_int_equal(c.open_rc, 0);
    tsm_load_check(&c.load);
    tsm_free(&c.load.ops);
    /* One hook call per committed batch, versions strictly rising; the
     * item's version counts the committed batches. */
    assert_int_equal(c.hook.out_of_order, 0);
    assert_int_equal((int64_t)c.hook.calls, c.version);
    assert_int_equal(c.stats.commits, c.hook.calls);
    assert_int_equal(c.stats.batched_requests, (uint64_t)n);
    assert_int_equal(c.stats.errors, 0);
    assert_int_equal(c.stats.queued, 0);
    fprintf(stderr, "store: %d requests in %llu batches (%llu committed, %llu pipelined)\n", n,
            (unsigned long long)c.stats.batches, (unsigned long long)c.stats.commits,
            (unsigned long long)c.stats.pipelined);
}

#endif /* TSM_WITH_RUNTIME */

#endif /* CACHESVC_TESTS_STORE_MODEL_H */
