/*
 * test_localcache.c: unit tests of localcache/ (cmocka).
 *
 * Single-threaded semantics first (errors, versions, floors, leases, TTL,
 * memory bound), then the Zipf hit ratio against a plain LRU, then
 * concurrent stress with oracles. Sanitizer builds scale the big runs down.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "localcache/lc.h"
#include "localcache/lc_int.h"
#include "tests/bench/localcache/lc_trace.h"

#include "tests/support/sanitized.h"

/* ---- helpers ------------------------------------------------------------ */

/* A clock the tests move by hand. */
static _Atomic uint64_t fake_now = 1000;
static uint64_t fake_clock(void *ctx)
{
    (void)ctx;
    return atomic_load(&fake_now);
}

static lc_cache *new_cache(size_t capacity, unsigned shards)
{
    lc_config cfg = {
        .shards = shards,
        .capacity_bytes = capacity,
        .max_value_bytes = 1024,
        .floor_ttl_ms = 5000,
        .lease_ttl_ms = 1000,
        .clock_ms = fake_clock,
    };
    lc_cache *c = NULL;
    assert_int_equal(lc_new(&cfg, &c), 0);
    assert_non_null(c);
    return c;
}

static int set_str(lc_cache *c, const char *key, const char *val, uint64_t version)
{
    return lc_set_if_newer(c, key, strlen(key), val, strlen(val), version, LC_TTL_DEFAULT);
}

/* Gets key; returns the lc_get code and the value as a string. */
static int get_str(lc_cache *c, const char *key, char *buf, size_t cap, uint64_t *version)
{
    size_t vlen = 0;
    int rc = lc_get(c, key, strlen(key), buf, cap - 1, &vlen, version);
    buf[rc == 0 ? vlen : 0] = 0;
    return rc;
}

/* ---- configuration and bad input ---------------------------------------- */

static void test_config_errors(void **state)
{
    (void)state;
    lc_cache *c = (lc_cache *)1;
    lc_config cfg = {.shards = 3, .capacity_bytes = 1 << 20};
    assert_int_equal(lc_new(&cfg, &c), -EINVAL);
    assert_null(c);
    cfg.shards = 4;
    cfg.capacity_bytes = 0;
    assert_int_equal(lc_new(&cfg, &c), -EINVAL);
    cfg.capacity_bytes = 1 << 20;
    cfg.max_value_bytes = (1u << 20) + 1;
    assert_int_equal(lc_new(&cfg, &c), -EINVAL);
    /* too small to hold one entry of the largest size per shard */
    cfg.max_value_bytes = 4096;
    cfg.capacity_bytes = 40000;
    assert_int_equal(lc_new(&cfg, &c), -EINVAL);
    cfg.shards = 1;
    cfg.capacity_bytes = 64 << 10;
    assert_int_equal(lc_new(&cfg, &c), 0);
    lc_stats st;
    lc_stats_get(c, &st);
    assert_true(st.mem_bytes <= st.capacity_bytes);
    assert_int_equal(lc_shards(c), 1);
    lc_free(c);
    assert_string_equal(lc_strerror(-ESTALE), "refused: version below the key's floor or lease cancelled");
}

static void test_bad_input(void **state)
{
    (void)state;
    lc_cache *c = new_cache(1 << 20, 4);
    char big[2048], key[LC_KEY_MAX + 1], buf[64];
    uint64_t v;
    memset(big, 'x', sizeof(big));
    memset(key, 'k', sizeof(key));
    assert_int_equal(lc_set_if_newer(c, "", 0, "v", 1, 1, 0), -EINVAL);
    assert_int_equal(lc_set_if_newer(c, key, LC_KEY_MAX + 1, "v", 1, 1, 0), -EINVAL);
    assert_int_equal(lc_set_if_newer(c, "k", 1, big, 1025, 1, 0), -EINVAL);
    assert_int_equal(lc_set_if_newer(c, "k", 1, NULL, 3, 1, 0), -EINVAL);
    assert_int_equal(lc_get(c, "", 0, buf, sizeof(buf), NULL, NULL), -EINVAL);
    assert_int_equal(lc_get(c, key, LC_KEY_MAX + 1, buf, sizeof(buf), NULL, NULL), -EINVAL);
    assert_int_equal(lc_evict(c, "", 0, 1), -EINVAL);
    lc_lease l;
    assert_int_equal(lc_lease_acquire(c, key, LC_KEY_MAX + 1, &l), -EINVAL);
    /* A maximal key and value work, and nothing above was stored. */
    assert_int_equal(lc_set_if_newer(c, key, LC_KEY_MAX, big, 1024, 7, 0), 0);
    char out[1024];
    size_t vlen;
    assert_int_equal(lc_get(c, key, LC_KEY_MAX, out, sizeof(out), &vlen, &v), 0);
    assert_int_equal(vlen, 1024);
    assert_int_equal(v, 7);
    assert_memory_equal(out, big, 1024);
    assert_int_equal(lc_get(c, "k", 1, buf, sizeof(buf), NULL, &v), -ENOENT);
    /* an empty value is a value */
    assert_int_equal(lc_set_if_newer(c, "e", 1, NULL, 0, 1, 0), 0);
    assert_int_equal(lc_get(c, "e", 1, buf, sizeof(buf), &vlen, &v), 0);
    assert_int_equal(vlen, 0);
    lc_stats st;
    lc_stats_get(c, &st);
    assert_int_equal(st.entries, 2);
    assert_int_equal(lc__check(c), 0);
    lc_free(c);
}

/* ---- versions and floors ------------------------------------------------ */

static void test_get_set_versions(void **state)
{
    (void)state;
    lc_cache *c = new_cache(1 << 20, 4);
    char buf[64];
    uint64_t v = 99;
    assert_int_equal(get_str(c, "sku1", buf, sizeof(buf), &v), -ENOENT);
    assert_int_equal(v, 0);
    assert_int_equal(set_str(c, "sku1", "{\"stock\":10}", 5), 0);
    assert_int_equal(get_str(c, "sku1", buf, sizeof(buf), &v), 0);
    assert_string_equal(buf, "{\"stock\":10}");
    assert_int_equal(v, 5);
    /* older refused, equal and newer accepted */
    assert_int_equal(set_str(c, "sku1", "{\"stock\":11}", 4), -ESTALE);
    assert_int_equal(set_str(c, "sku1", "{\"stock\":10} ", 5), 0);
    assert_int_equal(set_str(c, "sku1", "{\"stock\":9}", 6), 0);
    assert_int_equal(get_str(c, "sku1", buf, sizeof(buf), &v), 0);
    assert_string_equal(buf, "{\"stock\":9}");
    assert_int_equal(v, 6);
    /* buffer too small */
    size_t vlen = 0;
    assert_int_equal(lc_get(c, "sku1", 4, buf, 3, &vlen, &v), -ENOSPC);
    assert_int_equal(vlen, strlen("{\"stock\":9}"));
    assert_int_equal(v, 6);
    /* values of every length round-trip (word padding) */
    for (size_t n = 0; n < 40; n++) {
        char val[64], out[64];
        for (size_t i = 0; i < n; i++)
            val[i] = (char)('a' + (i * 7 + n) % 26);
        assert_int_equal(lc_set_if_newer(c, "len", 3, val, n, 10 + n, 0), 0);
        assert_int_equal(lc_get(c, "len", 3, out, n, &vlen, &v), 0);
        assert_int_equal(vlen, n);
        assert_memory_equal(out, val, n);
    }
    lc_stats st;
    lc_stats_get(c, &st);
    assert_int_equal(st.refused_version, 1);
    assert_int_equal(st.sets, 43);
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.entries, 2);
    assert_int_equal(lc__check(c), 0);
    lc_free(c);
}

static void test_floor_semantics(void **state)
{
    (void)state;
    lc_cache *c = new_cache(1 << 20, 4);
    char buf[64];
    uint64_t v;
    assert_int_equal(set_str(c, "a", "v5", 5), 0);
    /* evict leaves floor 6: the old version is refused, 6 and up accepted */
    assert_int_equal(lc_evict(c, "a", 1, 6), 0);
    assert_int_equal(get_str(c, "a", buf, sizeof(buf), &v), -ENOENT);
    assert_int_equal(v, 6);
    assert_int_equal(set_str(c, "a", "v5", 5), -ESTALE);
    assert_int_equal(set_str(c, "a", "v6", 6), 0);
    assert_int_equal(get_str(c, "a", buf, sizeof(buf), &v), 0);
    assert_string_equal(buf, "v6");
    /* an evict at or below the cached version keeps the (not stale) value */
    assert_int_equal(lc_evict(c, "a", 1, 6), 0);
    assert_int_equal(get_str(c, "a", buf, sizeof(buf), &v), 0);
    assert_int_equal(v, 6);
    /* floor 0 removes whatever is cached and keeps what is known */
    assert_int_equal(lc_evict(c, "a", 1, 0), 0);
    assert_int_equal(get_str(c, "a", buf, sizeof(buf), &v), -ENOENT);
    assert_int_equal(v, 6);
    assert_int_equal(set_str(c, "a", "v5", 5), -ESTALE);
    /* a floor for a key never cached */
    assert_int_equal(lc_evict(c, "b", 1, 10), 0);
    assert_int_equal(get_str(c, "b", buf, sizeof(buf), &v), -ENOENT);
    assert_int_equal(v, 10);
    assert_int_equal(set_str(c, "b", "v9", 9), -ESTALE);
    assert_int_equal(set_str(c, "b", "v11", 11), 0);
    /* floors only rise */
    assert_int_equal(lc_evict(c, "b", 1, 3), 0);
    assert_int_equal(get_str(c, "b", buf, sizeof(buf), &v), 0);
    assert_int_equal(v, 11);
    lc_stats st;
    lc_stats_get(c, &st);
    assert_int_equal(st.removals, 2);
    assert_int_equal(st.refused_floor, 3);
    assert_int_equal(lc__check(c), 0);
    lc_free(c);
}

/* Floors survive their records being evicted for room (the sketch): after
 * heavy churn, fills older than the floors are still refused. */
/* lc_clear forgets values, floors and leases: after it any version is
 * accepted (versions that start over after a database restore). */
static void test_clear(void **state)
{
    (void)state;
    lc_cache *c = new_cache(1 << 20, 4);
    char buf[64], key[16];
    uint64_t v;
    for (uint32_t i = 0; i < 100; i++) {
        size_t kl = lct_key(i, key);
        assert_int_equal(lc_set_if_newer(c, key, kl, "x", 1, 50, 0), 0);
        assert_int_equal(lc_evict(c, key, kl, i % 2 ? 60 : 0), 0);
    }
    assert_int_equal(set_str(c, "a", "v9", 9), 0);
    lc_lease l;
    assert_int_equal(lc_lease_acquire(c, "b", 1, &l), 0);
    lc_clear(c);
    assert_int_equal(get_str(c, "a", buf, sizeof(buf), &v), -ENOENT);
    assert_int_equal(v, 0);                        /* no floor either */
    assert_int_equal(lc_fill(c, &l, "old", 3, 7, 0), -ESTALE);   /* pre-clear lease */
    for (uint32_t i = 0; i < 100; i++) {
        size_t kl = lct_key(i, key);
        assert_int_equal(lc_get(c, key, kl, buf, sizeof(buf), NULL, &v), -ENOENT);
        assert_int_equal(v, 0);
        assert_int_equal(lc_set_if_newer(c, key, kl, "y", 1, 3, 0), 0);  /* lower: accepted */
    }
    assert_int_equal(set_str(c, "a", "v2", 2), 0);
    assert_int_equal(get_str(c, "a", buf, sizeof(buf), &v), 0);
    assert_string_equal(buf, "v2");
    lc_stats st;
    lc_stats_get(c, &st);
    assert_int_equal(st.entries, 101);
    lc_free(c);
}

static void test_floor_survives_eviction(void **state)
{
    (void)state;
    lc_cache *c = new_cache(256 << 10, 2);
    char key[16], val[100];
    memset(val, 'x', sizeof(val));
    for (uint32_t i = 0; i < 200; i++) {
        size_t kl = lct_key(i, key);
        assert_int_equal(lc_set_if_newer(c, key, kl, val, 50, 100, 0), 0);
        assert_int_equal(lc_evict(c, key, kl, 101), 0);
    }
    /* keys read after their store move on to M and push the floors out */
    for (uint32_t i = 1000; i < 50000; i++) {
        size_t kl = lct_key(i, key);
        assert_int_equal(lc_set_if_newer(c, key, kl, val, 100, 1, 0), 0);
        lc_get(c, key, kl, val, sizeof(val), NULL, NULL);
    }
    lc_stats st;
    lc_stats_get(c, &st);
    assert_true(st.floors_spilled > 0);
    assert_true(st.evictions > 0);
    for (uint32_t i = 0; i < 200; i++) {
        size_t kl = lct_key(i, key);
        uint64_t v = 0;
        assert_int_equal(lc_set_if_newer(c, key, kl, val, 50, 100, 0), -ESTALE);
        assert_int_equal(lc_get(c, key, kl, val, sizeof(val), NULL, &v), -ENOENT);
        assert_true(v >= 101);
    }
    /* once the floors expire, the keys are free again */
    atomic_fetch_add(&fake_now, 6000);
    size_t kl = lct_key(7, key);
    assert_int_equal(lc_set_if_newer(c, key, kl, val, 50, 100, 0), 0);
    assert_int_equal(lc__check(c), 0);
    lc_free(c);
}

/* An evict renews its floor's lifetime also when the floor stands in the
 * sketch already at that version: the second evict, for a key whose
 * record was pushed out, was dropped as "nothing to raise", and the floor
 * expired a lifetime after the first (fuzz_localcache found it). */
static void test_floor_renewed_in_sketch(void **state)
{
    (void)state;
    lc_cache *c = new_cache(256 << 10, 1);
    char key[16], val[100];
    memset(val, 'x', sizeof(val));
    size_t kl = lct_key(7, key);
    assert_int_equal(lc_evict(c, key, kl, 255), 0);
    for (uint32_t i = 1000; i < 50000; i++) {
        char fk[16];
        size_t fl = lct_key(i, fk);
        assert_int_equal(lc_set_if_newer(c, fk, fl, val, 100, 1, 0), 0);
        lc_get(c, fk, fl, val, sizeof(val), NULL, NULL);
    }
    uint64_t kw[LC_KEY_WORDS];
    size_t nkw = lc__key_words(key, kl, kw);
    uint64_t h = lc__hash(kw, nkw, kl);
    assert_true(do_index_find(lc__shard(c, h), h, kw, nkw, kl) < 0);   /* in the sketch */
    atomic_fetch_add(&fake_now, 3000);
    assert_int_equal(lc_evict(c, key, kl, 255), 0);
    atomic_fetch_add(&fake_now, 3000);   /* past the first evict's lifetime */
    assert_int_equal(lc_set_if_newer(c, key, kl, val, 50, 58, 0), -ESTALE);
    uint64_t v = 0;
    assert_int_equal(lc_get(c, key, kl, val, sizeof(val), NULL, &v), -ENOENT);
    assert_int_equal(v, 255);
    assert_int_equal(lc__check(c), 0);
    lc_free(c);
}

/* ---- leases ------------------------------------------------------------- */

static void test_lease_basic(void **state)
{
    (void)state;
    lc_cache *c = new_cache(1 << 20, 4);
    lc_lease l1, l2;
    char buf[64];
    uint64_t v;
    assert_int_equal(lc_lease_acquire(c, "k", 1, &l1), 0);
    assert_int_equal(lc_lease_acquire(c, "k", 1, &l2), -EBUSY);
    assert_int_equal(lc_fill(c, &l1, "v3", 2, 3, 0), 0);
    assert_int_equal(get_str(c, "k", buf, sizeof(buf), &v), 0);
    assert_string_equal(buf, "v3");
    assert_int_equal(lc_lease_acquire(c, "k", 1, &l2), -EEXIST);
    /* a used lease cannot fill again */
    assert_int_equal(lc_fill(c, &l1, "v4", 2, 4, 0), -ESTALE);

    /* evict after the lease was issued cancels it */
    assert_int_equal(lc_evict(c, "k", 1, 0), 0);
    assert_int_equal(lc_lease_acquire(c, "k", 1, &l1), 0);
    assert_int_equal(lc_evict(c, "k", 1, 0), 0);
    assert_int_equal(lc_fill(c, &l1, "v4", 2, 4, 0), -ESTALE);
    assert_int_equal(get_str(c, "k", buf, sizeof(buf), &v), -ENOENT);

    /* a fill below the floor is refused and uses the lease up */
    assert_int_equal(lc_evict(c, "k", 1, 8), 0);
    assert_int_equal(lc_lease_acquire(c, "k", 1, &l1), 0);
    assert_int_equal(lc_fill(c, &l1, "v7", 2, 7, 0), -ESTALE);
    assert_int_equal(lc_lease_acquire(c, "k", 1, &l1), 0);
    assert_int_equal(lc_fill(c, &l1, "v8", 2, 8, 0), 0);

    /* release hands the lease on at once */
    assert_int_equal(lc_lease_acquire(c, "r", 1, &l1), 0);
    lc_lease_release(c, &l1);
    assert_int_equal(lc_lease_acquire(c, "r", 1, &l2), 0);
    lc_lease_release(c, &l1); /* stale release: harmless */
    assert_int_equal(lc_lease_acquire(c, "r", 1, &l1), -EBUSY);
    assert_int_equal(lc_fill(c, &l2, "r1", 2, 1, 0), 0);

    /* an expired lease is taken over; the old holder's fill is refused */
    assert_int_equal(lc_lease_acquire(c, "x", 1, &l1), 0);
    atomic_fetch_add(&fake_now, 1001);
    assert_int_equal(lc_lease_acquire(c, "x", 1, &l2), 0);
    assert_int_equal(lc_fill(c, &l1, "x1", 2, 1, 0), -ESTALE);
    assert_int_equal(lc_fill(c, &l2, "x2", 2, 2, 0), 0);

    lc_stats st;
    lc_stats_get(c, &st);
    assert_int_equal(st.leases, 8);
    assert_int_equal(st.lease_busy, 2);
    assert_int_equal(st.refused_lease, 3);
    assert_int_equal(lc__check(c), 0);
    lc_free(c);
}

/* A lease cancelled by an evict running in another thread: whenever an
 * evict started after the lease was granted and finished before the fill
 * was called, the fill must be refused. */
typedef struct lease_race {
    lc_cache *c;
    _Atomic unsigned started, done;
    _Atomic bool stop;
} lease_race;

static void *lease_evictor(void *arg)
{
    lease_race *lr = arg;
    while (!atomic_load(&lr->stop)) {
        atomic_fetch_add(&lr->started, 1);
        lc_evict(lr->c, "hot", 3, 0);
        atomic_fetch_add(&lr->done, 1);
        for (volatile int i = 0; i < 200; i++)
            ;
    }
    return NULL;
}

static void test_lease_cancel_concurrent(void **state)
{
    (void)state;
    lease_race lr = {.c = new_cache(1 << 20, 4)};
    pthread_t t;
    unsigned refused = 0, filled = 0, rounds = SANITIZED ? 20000 : 100000;
    assert_int_equal(pthread_create(&t, NULL, lease_evictor, &lr), 0);
    for (unsigned i = 0; i < rounds; i++) {
        lc_lease l;
        int rc = lc_lease_acquire(lr.c, "hot", 3, &l);
        if (rc == -EEXIST) {
            lc_evict(lr.c, "hot", 3, 0);
            rc = lc_lease_acquire(lr.c, "hot", 3, &l);
        }
        assert_int_equal(rc, 0);
        unsigned s1 = atomic_load(&lr.started);
        for (volatile int k = 0; k < (int)(i % 500); k++)
            ; /* the fetch */
        if (i % 100 == 0) /* now and then wait for an evict to overlap */
            while (atomic_load(&lr.done) <= s1)
                sched_yield();
        unsigned d2 = atomic_load(&lr.done);
        rc = lc_fill(lr.c, &l, "v", 1, i, 0);
        if (d2 > s1)
            assert_int_equal(rc, -ESTALE);
        if (rc == 0)
            filled++;
        else
            refused++;
    }
    atomic_store(&lr.stop, true);
    pthread_join(t, NULL);
    print_message("lease race: %u filled, %u refused\n", filled, refused);
    assert_true(refused > 0);
    assert_int_equal(lc__check(lr.c), 0);
    lc_free(lr.c);
}

/* ---- TTL ---------------------------------------------------------------- */

static void test_ttl(void **state)
{
    (void)state;
    lc_config cfg = {.shards = 2, .capacity_bytes = 1 << 20, .default_ttl_ms = 500,
                     .clock_ms = fake_clock};
    lc_cache *c;
    char buf[64];
    uint64_t v;
    assert_int_equal(lc_new(&cfg, &c), 0);
    assert_int_equal(lc_set_if_newer(c, "t", 1, "a", 1, 3, 100), 0);
    assert_int_equal(lc_set_if_newer(c, "d", 1, "b", 1, 3, LC_TTL_DEFAULT), 0);
    assert_int_equal(lc_set_if_newer(c, "n", 1, "c", 1, 3, LC_TTL_NONE), 0);
    atomic_fetch_add(&fake_now, 99);
    assert_int_equal(get_str(c, "t", buf, sizeof(buf), &v), 0);
    atomic_fetch_add(&fake_now, 1);
    assert_int_equal(get_str(c, "t", buf, sizeof(buf), &v), -ENOENT);
    assert_int_equal(v, 3); /* the expired version stays the floor */
    assert_int_equal(lc_set_if_newer(c, "t", 1, "a", 1, 2, 100), -ESTALE);
    assert_int_equal(get_str(c, "d", buf, sizeof(buf), &v), 0);
    atomic_fetch_add(&fake_now, 400);
    assert_int_equal(get_str(c, "d", buf, sizeof(buf), &v), -ENOENT);
    atomic_fetch_add(&fake_now, 1000000);
    assert_int_equal(get_str(c, "n", buf, sizeof(buf), &v), 0);
    /* an expired value does not block a lease; a refill brings it back */
    lc_lease l;
    assert_int_equal(lc_lease_acquire(c, "t", 1, &l), 0);
    assert_int_equal(lc_fill(c, &l, "a2", 2, 4, 100), 0);
    assert_int_equal(get_str(c, "t", buf, sizeof(buf), &v), 0);
    assert_string_equal(buf, "a2");
    /* expired values are dropped (and counted) when their turn comes */
    char key[16], val[200];
    memset(val, 'z', sizeof(val));
    for (uint32_t i = 0; i < 20000; i++)
        lc_set_if_newer(c, key, lct_key(i, key), val, sizeof(val), 1, 10);
    atomic_fetch_add(&fake_now, 20);
    for (uint32_t i = 20000; i < 40000; i++)
        lc_set_if_newer(c, key, lct_key(i, key), val, sizeof(val), 1, 10);
    lc_stats st;
    lc_stats_get(c, &st);
    assert_true(st.expirations > 0);
    assert_int_equal(lc__check(c), 0);
    lc_free(c);
}

/* ---- memory bound ------------------------------------------------------- */

/* Values carry their key id and version so that any read can be checked. */
static size_t make_value(unsigned char *v, size_t len, uint32_t id, uint64_t version)
{
    for (size_t i = 0; i < len; i++)
        v[i] = (unsigned char)(id * 31 + version * 7 + i);
    if (len >= 12) {
        memcpy(v, &id, 4);
        memcpy(v + 4, &version, 8);
    }
    return len;
}

static void check_value(const unsigned char *v, size_t len, uint32_t id, uint64_t version)
{
    unsigned char want[1024];
    assert_true(len <= sizeof(want));
    make_value(want, len, id, version);
    assert_memory_equal(v, want, len);
}

static void test_memory_bound_churn(void **state)
{
    (void)state;
    size_t capacity = 2 << 20;
    lc_cache *c = new_cache(capacity, 8);
    uint64_t rng = 42;
    unsigned char val[1024], out[1024];
    char key[16];
    unsigned ops = SANITIZED ? 100000 : 1000000;
    for (unsigned n = 0; n < ops; n++) {
        uint32_t id = (uint32_t)(lct_rand(&rng) % 50000);
        size_t kl = lct_key(id, key), vlen;
        uint64_t ver;
        unsigned op = (unsigned)(lct_rand(&rng) % 100);
        if (op < 60) {
            int rc = lc_get(c, key, kl, out, sizeof(out), &vlen, &ver);
            if (rc == 0) {
                size_t want = 12 + (size_t)((id * 2654435761u + ver) % 1000);
                assert_int_equal(vlen, want);
                check_value(out, vlen, id, ver);
            }
        } else if (op < 97) {
            ver = n;
            size_t len = 12 + (size_t)((id * 2654435761u + ver) % 1000);
            make_value(val, len, id, ver);
            assert_int_equal(lc_set_if_newer(c, key, kl, val, len, ver, 0), 0);
        } else {
            assert_int_equal(lc_evict(c, key, kl, n), 0);
        }
        if (n % 100000 == 0) {
            lc_stats st;
            lc_stats_get(c, &st);
            assert_true(st.bytes <= capacity);
            assert_true(st.mem_bytes <= capacity);
            assert_int_equal(lc__check(c), 0);
        }
    }
    lc_stats st;
    lc_stats_get(c, &st);
    print_message("churn: %llu entries, %llu bytes held, %llu allocated, %llu evictions\n",
                  (unsigned long long)st.entries, (unsigned long long)st.bytes,
                  (unsigned long long)st.mem_bytes, (unsigned long long)st.evictions);
    assert_true(st.mem_bytes <= capacity && st.mem_bytes > capacity * 9 / 10);
    assert_true(st.bytes <= st.mem_bytes);
    assert_true(st.bytes > capacity / 2); /* the space is used */
    assert_true(st.evictions > 0);
    assert_int_equal(lc__check(c), 0);
    lc_free(c);
}

/* The smallest cache lc_new accepts (S holds one largest record and little
 * more) stays consistent under records of every size, large ones included,
 * which make the rings wrap with pads and empty out completely. */
static void test_smallest_cache(void **state)
{
    (void)state;
    lc_config cfg = {.shards = 1, .max_value_bytes = 1024, .clock_ms = fake_clock};
    lc_cache *c = NULL;
    size_t lo = 1, hi = 1 << 20;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        cfg.capacity_bytes = mid;
        if (lc_new(&cfg, &c) == 0) {
            lc_free(c);
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    cfg.capacity_bytes = lo;
    assert_int_equal(lc_new(&cfg, &c), 0);
    unsigned char val[1024], out[1024];
    char key[16];
    uint64_t rng = 9;
    for (unsigned n = 0; n < 20000; n++) {
        uint32_t id = (uint32_t)(lct_rand(&rng) % 40);
        size_t kl = lct_key(id, key), vlen;
        size_t len = lct_rand(&rng) % 4 ? 1024 - lct_rand(&rng) % 64 : lct_rand(&rng) % 100;
        uint64_t ver = n;
        make_value(val, len, id, ver);
        assert_int_equal(lc_set_if_newer(c, key, kl, val, len, ver, 0), 0);
        if (lc_get(c, key, kl, out, sizeof(out), &vlen, &ver) == 0)
            check_value(out, vlen, id, ver);
        if (n % 7 == 0)
            lc_evict(c, key, kl, 0);
        if (n % 500 == 0)
            assert_int_equal(lc__check(c), 0);
    }
    lc_stats st;
    lc_stats_get(c, &st);
    print_message("smallest cache: %zu bytes, %llu evictions\n", lo,
                  (unsigned long long)st.evictions);
    assert_true(st.mem_bytes <= lo);
    assert_int_equal(lc__check(c), 0);
    lc_free(c);
}

/* ---- hit ratio ---------------------------------------------------------- */

/* The trace: Zipf(0.99), 10M requests over 1M keys, a cache of 10%
 * of the keys' bytes; S3-FIFO must beat a plain LRU given the same bytes. */
static void test_hit_ratio_vs_lru(void **state)
{
    (void)state;
    uint64_t nkeys = SANITIZED ? 100000 : 1000000;
    size_t len = SANITIZED ? 1000000 : 10000000, bytes = 0;
    double ours = 0, lru = 0;
    assert_int_equal(lct_hit_ratios(nkeys, len, 0.99, 32, &ours, &lru, &bytes), 0);
    print_message("zipf 0.99, %zu requests over %llu keys, %zu bytes: hit_ratio=%.4f "
                  "lru_hit_ratio=%.4f\n",
                  len, (unsigned long long)nkeys, bytes, ours, lru);
    assert_true(ours > lru);
}

/* ---- concurrent stress with an oracle ----------------------------------- */

#define STRESS_KEYS 2000
#define STRESS_THREADS 4

typedef struct stress {
    lc_cache *c;
    _Atomic uint64_t next_version[STRESS_KEYS]; /* versions handed out */
    _Atomic uint64_t floor_done[STRESS_KEYS];   /* highest floor whose evict returned */
    unsigned ops;
    _Atomic uint64_t hits, stale_refused;
} stress;

typedef struct stress_arg {
    stress *s;
    uint64_t seed;
} stress_arg;

static void atomic_max(_Atomic uint64_t *p, uint64_t v)
{
    uint64_t cur = atomic_load(p);
    while (cur < v && !atomic_compare_exchange_weak(p, &cur, v))
        ;
}

static void *stress_worker(void *arg)
{
    stress_arg *a = arg;
    stress *s = a->s;
    uint64_t rng = a->seed;
    unsigned char val[1024], out[1024];
    char key[16];
    uint64_t hits = 0, refused = 0;
    for (unsigned n = 0; n < s->ops; n++) {
        uint32_t id = (uint32_t)(lct_rand(&rng) % STRESS_KEYS);
        size_t kl = lct_key(id, key), vlen;
        unsigned op = (unsigned)(lct_rand(&rng) % 100);
        if (op < 70) {
            /* the oracle: no value below a floor set before this get began */
            uint64_t floor = atomic_load(&s->floor_done[id]), ver;
            int rc = lc_get(s->c, key, kl, out, sizeof(out), &vlen, &ver);
            if (rc == 0) {
                hits++;
                assert_true(ver >= floor);
                check_value(out, vlen, id, ver);
            } else {
                assert_int_equal(rc, -ENOENT);
            }
        } else if (op < 90) {
            /* a fresh version, or a stale one (a slow reader's fill) */
            uint64_t ver = atomic_fetch_add(&s->next_version[id], 1) + 1;
            if (op < 80 && ver > 5)
                ver -= 1 + lct_rand(&rng) % 5;
            size_t len = 12 + (size_t)(lct_rand(&rng) % 300);
            make_value(val, len, id, ver);
            if (op % 2) {
                int rc = lc_set_if_newer(s->c, key, kl, val, len, ver, 0);
                assert_true(rc == 0 || rc == -ESTALE);
                refused += rc == -ESTALE;
            } else {
                lc_lease l;
                if (lc_lease_acquire(s->c, key, kl, &l) == 0) {
                    int rc = lc_fill(s->c, &l, val, len, ver, 0);
                    assert_true(rc == 0 || rc == -ESTALE);
                }
            }
        } else {
            uint64_t f = atomic_load(&s->next_version[id]);
            assert_int_equal(lc_evict(s->c, key, kl, f), 0);
            atomic_max(&s->floor_done[id], f);
        }
    }
    atomic_fetch_add(&s->hits, hits);
    atomic_fetch_add(&s->stale_refused, refused);
    return NULL;
}

static void run_stress(size_t capacity, unsigned shards)
{
    stress *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    lc_config cfg = {.shards = shards, .capacity_bytes = capacity, .max_value_bytes = 1024,
                     .floor_ttl_ms = 3600 * 1000};
    assert_int_equal(lc_new(&cfg, &s->c), 0);
    s->ops = SANITIZED ? 100000 : 1000000;
    pthread_t t[STRESS_THREADS];
    stress_arg args[STRESS_THREADS];
    for (int i = 0; i < STRESS_THREADS; i++) {
        args[i] = (stress_arg){.s = s, .seed = 1000 + (uint64_t)i};
        assert_int_equal(pthread_create(&t[i], NULL, stress_worker, &args[i]), 0);
    }
    for (int i = 0; i < STRESS_THREADS; i++)
        pthread_join(t[i], NULL);
    lc_stats st;
    lc_stats_get(s->c, &st);
    print_message("stress %zu bytes: hits=%llu refused=%llu evictions=%llu spilled=%llu\n",
                  capacity, (unsigned long long)atomic_load(&s->hits),
                  (unsigned long long)(st.refused_floor + st.refused_version),
                  (unsigned long long)st.evictions, (unsigned long long)st.floors_spilled);
    assert_true(atomic_load(&s->hits) > 0);
    assert_int_equal(lc__check(s->c), 0);
    lc_free(s->c);
    free(s);
}

/* Everything fits: exercises the seqlock against in-place and moved records. */
static void test_stress_oracle(void **state)
{
    (void)state;
    run_stress(8 << 20, 4);
}

/* Too small for the keys: evictions and floor spills race with readers. */
static void test_stress_oracle_evicting(void **state)
{
    (void)state;
    run_stress(256 << 10, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_get_set_versions),
        cmocka_unit_test(test_floor_semantics),
        cmocka_unit_test(test_floor_survives_eviction),
        cmocka_unit_test(test_floor_renewed_in_sketch),
        cmocka_unit_test(test_clear),
        cmocka_unit_test(test_lease_basic),
        cmocka_unit_test(test_lease_cancel_concurrent),
        cmocka_unit_test(test_ttl),
        cmocka_unit_test(test_memory_bound_churn),
        cmocka_unit_test(test_smallest_cache),
        cmocka_unit_test(test_hit_ratio_vs_lru),
        cmocka_unit_test(test_stress_oracle),
        cmocka_unit_test(test_stress_oracle_evicting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
