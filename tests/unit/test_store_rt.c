/*
 * test_store_rt.c: the store on the real runtime with the SQLite backend:
 * thousands of concurrent decrements and restocks from many coroutines on
 * two workers, decided in batches, must equal the serial model in arrival
 * order; the commit hook sees each committed batch once with rising
 * versions; a full queue answers "overloaded" and applies nothing.
 *
 * Includes store.c to reach submit() for puts (their arrival position).
 * cmocka's asserts run on the main thread after rt_main() returned.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cachesvc/store/store.c"
#define TSM_WITH_RUNTIME 1
#include "tests/support/store_model.h"

typedef struct ctx {
    const char *url;
    store_config cfg;
    int open_rc;
    store_stats stats;
    int n;
    int ok, overloaded, other;
    int64_t orders;
} ctx;

static void test_sqlite_concurrent_model(void **state)
{
    (void)state;
    char url[300];
    snprintf(url, sizeof url, "sqlite:%s/model.db", tsm_tmpdir);
    tsm_run_model(url, "hot", 4000, 64, 256, 4242, 1);
}

static void test_sqlite_concurrent_model_small_batches(void **state)
{
    (void)state;
    char url[300];
    snprintf(url, sizeof url, "sqlite:%s/model_small.db", tsm_tmpdir);
    tsm_run_model(url, "hot", 2000, 32, 3, 99, 1);
}

typedef struct ov_arg {
    ctx *c;
    store *st;
    rt_wg *wg;
} ov_arg;

static void ov_worker(void *arg)
{
    ov_arg *a = arg;
    store_decrement_result r;
    if (store_decrement(a->st, "ov", "u1", 1, NULL, RT_NO_DEADLINE, &r) == 0) {
        if (r.outcome == STORE_OK)
            __atomic_fetch_add(&a->c->ok, 1, __ATOMIC_RELAXED);
        else if (r.outcome == STORE_OVERLOADED)
            __atomic_fetch_add(&a->c->overloaded, 1, __ATOMIC_RELAXED);
        else
            __atomic_fetch_add(&a->c->other, 1, __ATOMIC_RELAXED);
    } else {
        __atomic_fetch_add(&a->c->other, 1, __ATOMIC_RELAXED);
    }
    rt_wg_done(a->wg);
}

static void overload_body(void *arg)
{
    ctx *c = arg;
    store *st;
    ov_arg a = {.c = c};
    store_put p = {.stock = 1000, .per_user_limit = -1, .sale_starts_at_ms = -1};
    if ((c->open_rc = store_open(c->url, &c->cfg, &st)) < 0)
        return;
    a.st = st;
    a.wg = rt_wg_new();
    if (store_put_item(st, "ov", &p, RT_NO_DEADLINE, NULL, NULL) < 0)
        c->other = -1000;
    rt_wg_add(a.wg, c->n);
    for (int i = 0; i < c->n; i++)
        if (rt_spawn(NULL, ov_worker, &a) < 0)
            rt_wg_done(a.wg);
    rt_wg_wait(a.wg, RT_NO_DEADLINE);
    rt_wg_free(a.wg);
    store_audit_result au;
    if (store_audit(st, "ov", 0, &au) == 0)
        c->orders = au.orders;
    store_stats_get(st, &c->stats);
    store_close(st);
}

static void test_sqlite_overloaded(void **state)
{
    (void)state;
    char url[300];
    ctx c;
    memset(&c, 0, sizeof c);
    snprintf(url, sizeof url, "sqlite:%s/ov.db", tsm_tmpdir);
    c.url = url;
    c.cfg.queue_max = 1;
    c.n = 200;
    rt_config rc = {.workers = 2};
    assert_int_equal(rt_main(&rc, overload_body, &c), 0);
    assert_int_equal(c.open_rc, 0);
    assert_int_equal(c.other, 0);
    assert_int_equal(c.ok + c.overloaded, c.n);
    assert_int_equal(c.orders, c.ok);   /* an overloaded request applied nothing */
    assert_int_equal(c.stats.overloaded, (uint64_t)c.overloaded);
    fprintf(stderr, "store: %d ok, %d overloaded with queue_max 1\n", c.ok, c.overloaded);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sqlite_concurrent_model),
        cmocka_unit_test(test_sqlite_concurrent_model_small_batches),
        cmocka_unit_test(test_sqlite_overloaded),
    };
    return cmocka_run_group_tests(tests, tsm_tmpdir_setup, tsm_tmpdir_teardown);
}
