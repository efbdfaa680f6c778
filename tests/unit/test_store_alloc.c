/*
 * test_store_alloc.c: the store's in-memory decisions under allocation
 * failure (failalloc.h): the decision rules (decide.c) and the sold-out
 * sets (soldout.c, included to reach its slots). The database is a fake
 * backend that hands the sets their rows from memory, so only the
 * store's own allocations are counted, never a database library's.
 *
 * A failure must leave a clean answer: store__so_new -ENOMEM; a sold-out
 * load that fails answers 0 ("cannot tell": the caller goes to the
 * batcher), keeps no half-built set, accounts no rows, and is not retried
 * before its retry time; once the item's set is dropped (as a commit
 * does) the next request loads it and every answer is the store's. The
 * decision rules answer the same with and without memory.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cachesvc/store/soldout.c"
#include "tests/support/failalloc.h"

/* ---- the fake backend ------------------------------------------------------ */

#define VERSION 42
#define LIMIT 5
#define USERS 150

static int fake_reads;

/* The orders of an item: "hot" 600, "big" 1500, any other 150. */
static int norders(const char *sku)
{
    return strcmp(sku, "hot") == 0 ? 600 : strcmp(sku, "big") == 0 ? 1500 : 150;
}

/* Order i of sku (order id i + 1): user u<i % USERS>, qty 1 or 2, a key
 * "<sku>/k<i>" on even orders only. key has room for 80 bytes. */
static const char *order_of(const char *sku, int i, char *user, int64_t *qty, char *key)
{
    sprintf(user, "u%d", i % USERS);
    *qty = 1 + i % 2;
    if (i % 2)
        return NULL;
    sprintf(key, "%s/k%d", sku, i);
    return key;
}

static int fake_sold_out_read(store *st, const char *sku, int64_t max, store__so_set *set)
{
    (void)st;
    fake_reads++;
    store__state s = {.found = 1, .stock = 0, .version = VERSION, .per_user_limit = LIMIT};
    store__so_set_item(set, &s);
    for (int i = 0; i < norders(sku); i++) {
        char user[16], kbuf[80];
        int64_t qty;
        const char *key = order_of(sku, i, user, &qty, kbuf);
        if ((int64_t)store__so_count(set) >= max)
            return -E2BIG;
        int rc = store__so_add(set, user, qty, key, i + 1, 0, VERSION);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* One key belongs to another item's order; no other key is known. */
static int fake_order_by_key(store *st, const char *key, store_order *out)
{
    (void)st;
    if (strcmp(key, "elsewhere") != 0)
        return -ENOENT;
    *out = (store_order){.order_id = 9999, .sku = "other", .user_id = "u7", .qty = 1};
    return 0;
}

static const store__backend fake_backend = {
    .name = "fake",
    .sold_out_read = fake_sold_out_read,
    .order_by_key = fake_order_by_key,
};

static store *fx_open(int64_t max_orders)
{
    store *st = calloc(1, sizeof *st);
    assert_non_null(st);
    st->be = &fake_backend;
    st->cfg.sold_out_max_orders = max_orders;
    assert_int_equal(store__so_new(st), 0);
    return st;
}

static void fx_close(store *st)
{
    store__so_free(st);
    free(st);
}

/* ---- expected answers -------------------------------------------------------- */

typedef struct request {
    const char *user;
    int64_t qty;
    const char *key;
} request;

/* A replay, a key sent with another buyer, keys the item does not have
 * (one is another item's), buyers under and past the limit. */
static const request requests[] = {
    {"u2", 1, "hot/k2"}, {"u3", 1, "hot/k2"}, {"u9", 1, "hot/k9"}, {"u7", 1, "elsewhere"},
    {"u0", 1, NULL},     {"u0", 2, NULL},     {"u200", 1, "new"},  {"u1", 1, NULL},
};

/* What the store decides for r on sku (decide.c's rules on the fake's
 * orders); *order_id gets the order a key found. */
static store_outcome expected(const char *sku, const request *r, int64_t *order_id)
{
    int64_t bought = 0;
    *order_id = 0;
    for (int i = 0; i < norders(sku); i++) {
        char user[16], kbuf[80];
        int64_t qty;
        const char *key = order_of(sku, i, user, &qty, kbuf);
        if (r->key != NULL && key != NULL && strcmp(key, r->key) == 0) {
            *order_id = i + 1;
            return strcmp(user, r->user) == 0 && qty == r->qty ? STORE_REPLAYED
                                                              : STORE_KEY_MISMATCH;
        }
        if (strcmp(user, r->user) == 0)
            bought += qty;
    }
    if (r->key != NULL && strcmp(r->key, "elsewhere") == 0) {
        *order_id = 9999;
        return STORE_KEY_MISMATCH;
    }
    return bought + r->qty > LIMIT ? STORE_LIMIT_EXCEEDED : STORE_SOLD_OUT;
}

/* Asks every request of sku; each is answered from memory as the store
 * would. */
static void ask_all(store *st, const char *sku)
{
    for (size_t i = 0; i < sizeof requests / sizeof requests[0]; i++) {
        const request *r = &requests[i];
        char key[80];
        const char *k = r->key;
        if (k != NULL && strncmp(k, "hot/", 4) == 0) {
            snprintf(key, sizeof key, "%s/%s", sku, k + 4);
            k = key;
        }
        request rs = {r->user, r->qty, k};
        store_decrement_result out;
        int64_t order_id;
        store_outcome want = expected(sku, &rs, &order_id);
        assert_int_equal(store_sold_out(st, sku, VERSION, rs.user, rs.qty, rs.key, &out), 1);
        assert_int_equal(out.outcome, want);
        assert_int_equal(out.order_id, order_id);
    }
}

/* The sets' invariants: no load left in progress, the rows accounted are
 * the READY sets' rows, within the budget. Returns sku's slot or NULL. */
static so_slot *so_check(store *st, const char *sku)
{
    struct store__so *so = st->so;
    so_slot *found = NULL;
    size_t rows = 0;
    pthread_mutex_lock(&so->lock);
    for (int b = 0; b < SO_NBUCKETS; b++)
        for (so_slot *sl = so->buckets[b]; sl != NULL; sl = sl->next) {
            assert_int_not_equal(sl->state, SO_LOADING);
            assert_true((sl->state == SO_READY) == (sl->set != NULL));
            if (sl->set != NULL)
                rows += sl->set->nrows;
            if (strcmp(sl->sku, sku) == 0)
                found = sl;
        }
    assert_int_equal(rows, so->rows);
    assert_true(rows <= (size_t)st->cfg.sold_out_max_orders * SO_BUDGET);
    pthread_mutex_unlock(&so->lock);
    return found;
}

/* After an injected failure: sku's request was not answered, nothing half
 * built is kept, and the load is not retried before its time (unless the
 * slot itself could not be made); then the item's set is dropped, as a
 * commit does. */
static void after_failed_load(store *st, const char *sku, int answered,
                              const store_decrement_result *out)
{
    assert_int_equal(answered, 0);
    assert_int_equal(out->outcome, 0);
    assert_int_equal(out->version, 0);
    so_slot *sl = so_check(st, sku);
    if (sl != NULL) {
        assert_int_equal(sl->state, SO_REFUSED);
        assert_true(sl->retry_ns > 0);
        int reads = fake_reads;
        store_decrement_result again;
        assert_int_equal(store_sold_out(st, sku, VERSION, "u1", 1, NULL, &again), 0);
        assert_int_equal(fake_reads, reads);
    }
    store__so_drop(st, sku);
}

/* ---- the tests ------------------------------------------------------------------- */

static void run_so_new(void *ctx)
{
    (void)ctx;
    store st;
    memset(&st, 0, sizeof st);
    st.be = &fake_backend;
    failalloc_begin();
    int rc = store__so_new(&st);
    failalloc_end();
    if (failalloc_failed()) {
        assert_int_equal(rc, -ENOMEM);
        assert_null(st.so);
        /* Without sets every request goes to the batcher. */
        store_decrement_result out;
        assert_int_equal(store_sold_out(&st, "hot", VERSION, "u1", 1, NULL, &out), 0);
    } else {
        assert_int_equal(rc, 0);
    }
    store__so_free(&st);
}

static void test_so_new(void **state)
{
    (void)state;
    assert_int_equal(failalloc_loop("store__so_new", run_so_new, NULL), 1);
}

/* The first request after the sell-out loads the item's set (600 orders:
 * the rows and the strings grow several times, then the indexes). */
static void run_load(void *ctx)
{
    (void)ctx;
    store *st = fx_open(1000);
    store_decrement_result out;
    failalloc_begin();
    int r = store_sold_out(st, "hot", VERSION, "u2", 1, "hot/k2", &out);
    failalloc_end();
    if (failalloc_failed()) {
        after_failed_load(st, "hot", r, &out);
    } else {
        assert_int_equal(r, 1);
        assert_int_equal(out.outcome, STORE_REPLAYED);
        assert_int_equal(out.order_id, 3);
    }
    ask_all(st, "hot");
    so_check(st, "hot");
    fx_close(st);
}

/* A load past the memory budget: the least recently used set gives way,
 * only when the new one is built. */
static void run_evict(void *ctx)
{
    (void)ctx;
    static const char *const skus[] = {"s0", "s1", "s2", "s3", "s4"};
    store *st = fx_open(200);   /* budget: 800 orders */
    for (int i = 0; i < 5; i++)
        ask_all(st, skus[i]);
    store_decrement_result out;
    failalloc_begin();
    int r = store_sold_out(st, "s5", VERSION, "u0", 1, NULL, &out);
    failalloc_end();
    if (failalloc_failed()) {
        after_failed_load(st, "s5", r, &out);
        assert_int_equal(st->so->rows, 750);   /* nothing evicted */
    } else {
        assert_int_equal(r, 1);
        assert_int_equal(out.outcome, STORE_SOLD_OUT);
        assert_null(so_check(st, "s0"));       /* the oldest gave way */
    }
    ask_all(st, "s5");
    ask_all(st, "s1");
    so_check(st, "s5");
    fx_close(st);
}

/* More orders than the bound: refused (until the version moves) whether
 * memory ran out on the way or not, with nothing kept. */
static void run_too_big(void *ctx)
{
    (void)ctx;
    store *st = fx_open(1000);
    store_decrement_result out;
    failalloc_begin();
    int r = store_sold_out(st, "big", VERSION, "u0", 1, NULL, &out);
    failalloc_end();
    assert_int_equal(r, 0);
    so_slot *sl = so_check(st, "big");
    assert_int_equal(st->so->rows, 0);
    assert_true(sl == NULL || sl->state == SO_REFUSED);
    if (!failalloc_failed()) {
        assert_non_null(sl);
        assert_int_equal(sl->retry_ns, 0);
    }
    fx_close(st);
}

static void test_sold_out(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        void (*run)(void *ctx);
    } runs[] = {
        {"store_sold_out, a set of 600 orders", run_load},
        {"store_sold_out, a load that evicts", run_evict},
        {"store_sold_out, more orders than the bound", run_too_big},
    };
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++)
        assert_true(failalloc_loop(runs[i].what, runs[i].run, NULL) > 0);
}

/* ---- decide.c ------------------------------------------------------------------- */

#define NOPS 600

typedef struct batch {
    store__op ops[NOPS];
    store__op *p[NOPS];
    char users[NOPS][16];
} batch;

/* A batch of NOPS requests from 300 buyers (a put first): more than
 * store__distinct_users keeps on its stack. */
static void batch_init(batch *b)
{
    memset(b, 0, sizeof *b);
    for (int i = 0; i < NOPS; i++) {
        store__op *op = &b->ops[i];
        snprintf(b->users[i], sizeof b->users[i], "u%d", i % 300);
        op->kind = i == 0 ? STORE__PUT : STORE__DECR;
        op->put = (store_put){.stock = 1000, .per_user_limit = 3, .sale_starts_at_ms = -1};
        op->user_id = b->users[i];
        op->qty = 1 + i % 2;
        b->p[i] = op;
    }
}

static void run_decide(void *ctx)
{
    batch *b = ctx;
    const char *users[NOPS], *deltas[NOPS];
    int64_t qtys[NOPS];
    store__state s0 = {0}, s;
    batch_init(b);
    s = s0;
    failalloc_begin();
    int changed = store__decide(&s, 0, b->p, NOPS);
    store__finish(&s, b->p, NOPS);
    int nd = store__purchase_deltas(b->p, NOPS, deltas, qtys);
    int rebuild = store__needs_rebuild(&s0, b->p, NOPS);
    int nu = store__distinct_users(b->p, NOPS, users);
    failalloc_end();
    assert_int_equal(changed, 1);
    assert_int_equal(rebuild, 0);
    assert_int_equal(nu, 300);
    assert_int_equal(nd, 300);
    /* The buyers in first-seen order: u1 .. u299 (the put came first), u0. */
    for (int i = 0; i < nu; i++)
        assert_string_equal(users[i], b->users[i + 1]);
    /* u0 bought 2 units (1 + 1), u1 2 (2, then 2 refused at the limit). */
    assert_int_equal(b->ops[1].outcome, STORE_OK);
    assert_int_equal(b->ops[301].outcome, STORE_LIMIT_EXCEEDED);
}

static void test_decide(void **state)
{
    (void)state;
    batch *b = malloc(sizeof *b);
    assert_non_null(b);
    /* Only store__distinct_users allocates (its set, past 512 buyers'
     * room), and falls back to the quadratic scan without it. */
    assert_int_equal(failalloc_loop("store__decide and the batch helpers", run_decide, b), 1);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FAILALLOC_TEST(test_so_new),
        FAILALLOC_TEST(test_sold_out),
        FAILALLOC_TEST(test_decide),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
