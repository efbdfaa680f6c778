/*
 * test_localcache_alloc.c: localcache/ under allocation failure
 * (failalloc.h). lc_new is the only call that allocates (lc.h: "none
 * allocates after lc_new()"): each of its allocations fails in turn, for
 * small shards (calloc'ed blocks) and large ones (mapped blocks), and it
 * must answer -ENOMEM with *out NULL and nothing left allocated. Every
 * other call runs a workload with every allocation failing: it must count
 * none and give the answers it gives with memory, the cache consistent
 * (lc__check) and readable after each store.
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

#include "localcache/lc.h"
#include "localcache/lc_int.h"
#include "tests/support/failalloc.h"

static int put(lc_cache *c, const char *key, uint64_t version)
{
    char val[64];
    int n = snprintf(val, sizeof val, "%s@%llu", key, (unsigned long long)version);
    return lc_set_if_newer(c, key, strlen(key), val, (size_t)n, version, LC_TTL_DEFAULT);
}

/* Reads key: 0 with the value put() stored at *version, or lc_get's error. */
static int read_back(lc_cache *c, const char *key, uint64_t *version)
{
    char buf[64], want[64];
    size_t vlen = 0;
    int rc = lc_get(c, key, strlen(key), buf, sizeof buf, &vlen, version);
    if (rc == 0) {
        int n = snprintf(want, sizeof want, "%s@%llu", key, (unsigned long long)*version);
        assert_int_equal(vlen, (size_t)n);
        assert_memory_equal(buf, want, vlen);
    }
    return rc;
}

/* ---- lc_new ------------------------------------------------------------- */

/* Creates a cache armed, then (unarmed) stores, reads and frees it. */
static void run_new(void *ctx)
{
    const lc_config *cfg = ctx;
    lc_cache *c = (lc_cache *)1;
    failalloc_begin();
    int rc = lc_new(cfg, &c);
    failalloc_end();
    if (failalloc_failed()) {
        assert_int_equal(rc, -ENOMEM);
        assert_null(c);
        return;
    }
    assert_int_equal(rc, 0);
    uint64_t v = 0;
    assert_int_equal(put(c, "sku-1", 3), 0);
    assert_int_equal(read_back(c, "sku-1", &v), 0);
    assert_int_equal(v, 3);
    assert_int_equal(lc__check(c), 0);
    lc_free(c);
}

static void test_new(void **state)
{
    (void)state;
    /* The cache, its shards, its stripes and one block per shard; shards
     * of 4 MiB have their blocks mapped, not malloc'ed. */
    static const struct {
        const char *what;
        unsigned shards;
        size_t capacity;
    } configs[] = {
        {"lc_new, 16 shards of 64 KiB", 16, 1 << 20},
        {"lc_new, 1 shard of 64 KiB", 1, 64 << 10},
        {"lc_new, 4 mapped shards of 4 MiB", 4, 16 << 20},
    };
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        lc_config cfg = {.shards = configs[i].shards, .capacity_bytes = configs[i].capacity};
        assert_int_equal(failalloc_loop(configs[i].what, run_new, &cfg), 3 + cfg.shards);
    }
}

/* ---- every other call ----------------------------------------------------- */

/* Every call of lc.h on a small cache, enough stores to evict: the
 * expected answers are those of a cache with memory (no call allocates). */
static void workload(lc_cache *c)
{
    char key[32];
    uint64_t v = 0;
    lc_stats st;
    lc_lease l;

    for (int i = 0; i < 2000; i++) {
        snprintf(key, sizeof key, "sku-%d", i);
        assert_int_equal(put(c, key, (uint64_t)i + 10), 0);
        /* A store just made is readable at once. */
        assert_int_equal(read_back(c, key, &v), 0);
        assert_int_equal(v, (uint64_t)i + 10);
        if (i % 97 == 0)
            assert_int_equal(lc__check(c), 0);
    }
    /* Refused stores leave the value readable. */
    assert_int_equal(put(c, "sku-1999", 5), -ESTALE);
    assert_int_equal(read_back(c, "sku-1999", &v), 0);
    assert_int_equal(v, 2009);
    assert_int_equal(lc_set_if_newer(c, "", 0, "x", 1, 1, LC_TTL_DEFAULT), -EINVAL);

    /* Evict raises the floor; a fill under a lease taken after it stores. */
    assert_int_equal(lc_evict(c, "sku-1999", 8, 3000), 0);
    assert_int_equal(read_back(c, "sku-1999", &v), -ENOENT);
    assert_int_equal(v, 3000);
    assert_int_equal(lc_lease_acquire(c, "sku-1999", 8, &l), 0);
    lc_lease other;
    assert_int_equal(lc_lease_acquire(c, "sku-1999", 8, &other), -EBUSY);
    assert_int_equal(lc_fill(c, &l, "sku-1999@3001", 13, 3001, LC_TTL_NONE), 0);
    assert_int_equal(read_back(c, "sku-1999", &v), 0);
    assert_int_equal(v, 3001);

    /* A lease cancelled by an evict, then given back. */
    assert_int_equal(lc_evict(c, "sku-1998", 8, 0), 0);
    assert_int_equal(lc_lease_acquire(c, "sku-1998", 8, &l), 0);
    assert_int_equal(lc_evict(c, "sku-1998", 8, 0), 0);
    assert_int_equal(lc_fill(c, &l, "v", 1, 4000, LC_TTL_NONE), -ESTALE);
    assert_int_equal(lc_lease_acquire(c, "sku-1998", 8, &l), 0);
    lc_lease_release(c, &l);

    /* A buffer too small, statistics, clear. */
    assert_int_equal(lc_get(c, "sku-1999", 8, NULL, 0, NULL, NULL), -ENOSPC);
    lc_stats_get(c, &st);
    assert_true(st.sets >= 2000 && st.evictions > 0 && st.hits > 0);
    lc_stats_shard(c, 0, &st);
    assert_int_equal(lc__check(c), 0);
    lc_clear(c);
    assert_int_equal(read_back(c, "sku-1999", &v), -ENOENT);
    assert_int_equal(put(c, "sku-1999", 1), 0);
    assert_int_equal(lc__check(c), 0);
}

static void run_calls(void *ctx)
{
    lc_config *cfg = ctx;
    lc_cache *c = NULL;
    assert_int_equal(lc_new(cfg, &c), 0);
    failalloc_begin();
    workload(c);
    failalloc_end();
    assert_int_equal(failalloc_failed(), 0);
    lc_free(c);
}

static void test_calls_allocate_nothing(void **state)
{
    (void)state;
    /* Small enough that 2000 keys evict. */
    lc_config cfg = {.shards = 4, .capacity_bytes = 128 << 10, .max_value_bytes = 512};
    assert_int_equal(failalloc_loop("lc_get, lc_set_if_newer, lc_evict, leases, lc_clear, "
                                    "lc_stats_*", run_calls, &cfg), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FAILALLOC_TEST(test_new),
        FAILALLOC_TEST(test_calls_allocate_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
