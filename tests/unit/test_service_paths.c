/*
 * Unit tests of the service's read and write paths, in process: the real
 * service (SQLite in a temp file, embedded Kafka, no Redis) driven through
 * its api/http_service.h functions on the runtime, plus the Redis breaker.
 *
 * cmocka's assertions longjmp, which must not cross coroutine stacks, so the
 * coroutine bodies count failures with CHECK (tests/support/check.h) and the
 * cmocka test asserts the count after rt_main returns.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cachesvc/log.h"
#include "cachesvc/metrics.h"
#include "cachesvc/service.h"
#include "tests/support/check.h"

static char dir[64];
static int negative_ttl_ms = -1;   /* >= 0: cache.negative_ttl_ms of open_svc */

static svc *open_svc(int queue_max, int batch_max)
{
    svc_config cfg;
    svc_config_defaults(&cfg);
    char err[256];
    char url[128];
    static int n;
    snprintf(url, sizeof url, "sqlite:%s/db%d", dir, n++);
    CHECK(svc_config_set(&cfg, "store.url", url, err, sizeof err) == 0);
    cfg.store_queue_max = queue_max;
    cfg.store_batch_max = batch_max;
    cfg.cache_capacity_mb = 8;
    cfg.local_ttl_ms = 60000;
    if (negative_ttl_ms >= 0)
        cfg.negative_ttl_ms = negative_ttl_ms;
    snprintf(cfg.instance_id, sizeof cfg.instance_id, "unit-%d", n);
#ifdef SVC_TEST_NO_KAFKA
    /* Build with -DSVC_TEST_NO_KAFKA to run the paths without librdkafka
     * (kafka.brokers = none), e.g. under a sanitizer that cannot follow
     * its threads. */
    snprintf(cfg.kafka_brokers, sizeof cfg.kafka_brokers, "none");
#endif
    svc *s = NULL;
    int r = svc_open(&cfg, &s);
    CHECK(r == 0);
    return s;
}

static int put(svc *s, const char *sku, int64_t stock, int64_t limit)
{
    http_put_item_req rq = {.sku = sku, .has_stock = 1, .stock = stock,
                            .has_per_user_limit = limit >= 0, .per_user_limit = limit};
    http_item it;
    int created = 0;
    return svc_put_item(s, &rq, &it, &created);
}

static int decr(svc *s, const char *sku, const char *user, int64_t qty, const char *key,
                http_decrement_res *res)
{
    http_decrement_req rq = {.sku = sku, .user_id = user, .qty = qty, .idempotency_key = key};
    memset(res, 0, sizeof *res);
    return s->api.decrement(s->api.ctx, &rq, res);
}

/* ------------------------------------------------------------------------ */

/* Readers wait behind a gate so they all become runnable together. */
struct gate {
    rt_mutex *mu;
    rt_cond *cv;
    int open;
};

struct reader {
    svc *s;
    rt_wg *wg;
    struct gate *g;
    int64_t version;
    int rc;
};

static void read_one(void *arg)
{
    struct reader *r = arg;
    rt_mutex_lock(r->g->mu);
    while (!r->g->open)
        rt_cond_wait(r->g->cv, r->g->mu, RT_NO_DEADLINE);
    rt_mutex_unlock(r->g->mu);
    http_item it;
    http_tier tier;
    r->rc = svc_get_item(r->s, "cold", &it, &tier);
    r->version = it.version;
    rt_wg_done(r->wg);
}

static void paths_body(void *arg)
{
    (void)arg;
    svc *s = open_svc(4096, 1024);
    if (s == NULL)
        return;
    http_item it;
    http_tier tier;
    http_decrement_res res;

    /* Unknown item. */
    CHECK(svc_get_item(s, "nope", &it, &tier) == HTTP_E_NOT_FOUND);
    CHECK(decr(s, "nope", "u1", 1, NULL, &res) == HTTP_E_NOT_FOUND);

    /* A put installs the committed row locally. */
    CHECK(put(s, "hot", 3, 0) == 0);
    CHECK(svc_get_item(s, "hot", &it, &tier) == 0);
    CHECK(tier == HTTP_TIER_LOCAL && it.stock == 3);
    int64_t v0 = it.version;

    /* A decrement: the commit hook installs the new row (read-your-writes,
     * still a local hit). */
    CHECK(decr(s, "hot", "u1", 1, "key-1", &res) == 0);
    CHECK(res.stock == 2 && res.version == v0 + 1 && !res.replayed);
    CHECK(svc_get_item(s, "hot", &it, &tier) == 0);
    CHECK(tier == HTTP_TIER_LOCAL && it.version == v0 + 1 && it.stock == 2);
    CHECK(decr(s, "hot", "u1", 1, "key-1", &res) == 0 && res.replayed);

    int64_t order1 = res.order_id;

    /* Sell out, then the fast answers from memory, without and with a key. */
    CHECK(decr(s, "hot", "u2", 2, NULL, &res) == 0 && res.stock == 0);
    CHECK(decr(s, "hot", "u3", 1, NULL, &res) == HTTP_E_SOLD_OUT);
    uint64_t fr = svc_metric_get(SVC_C_DECR_FAST_REJECT);
    CHECK(decr(s, "hot", "u3", 1, NULL, &res) == HTTP_E_SOLD_OUT);
    CHECK(svc_metric_get(SVC_C_DECR_FAST_REJECT) == fr + 1);
    /* With a key, from memory too: the first request reads the item's
     * orders at this version, the others use them; no batch runs. */
    store_stats st0, st1;
    store_stats_get(s->st, &st0);
    CHECK(decr(s, "hot", "u3", 1, "key-2", &res) == HTTP_E_SOLD_OUT);
    CHECK(svc_metric_get(SVC_C_DECR_FAST_REJECT) == fr + 2);
    /* The replay of a key that bought before the sell-out replays the
     * original order exactly as the store does. */
    CHECK(decr(s, "hot", "u1", 1, "key-1", &res) == 0 && res.replayed);
    CHECK(res.order_id == order1 && res.stock == 2 && res.version == v0 + 1);
    CHECK(!strcmp(res.sku, "hot") && !strcmp(res.user_id, "u1") && res.qty == 1);
    /* The key with another buyer or qty: refused, never described as a
     * purchase of the new request. */
    CHECK(decr(s, "hot", "u7", 3, "key-1", &res) == HTTP_E_KEY_MISMATCH);
    CHECK(decr(s, "hot", "u3", 1, "key-3", &res) == HTTP_E_SOLD_OUT);
    store_stats_get(s->st, &st1);
    CHECK(st1.batches == st0.batches);
    CHECK(st1.sold_out_loads == st0.sold_out_loads + 1);
    CHECK(st1.sold_out_answers == st0.sold_out_answers + 4);
    /* The key on another item: refused there too, nothing applied. */
    CHECK(put(s, "other", 3, 0) == 0);
    CHECK(decr(s, "other", "u1", 1, "key-1", &res) == HTTP_E_KEY_MISMATCH);
    http_item oit;
    http_tier otier;
    CHECK(svc_get_item(s, "other", &oit, &otier) == 0 && oit.stock == 3);
    /* The order is found by its key and buyer only. */
    http_order ord;
    CHECK(s->api.order_by_key(s, "key-1", "u1", &ord) == 0 && ord.order_id == order1 &&
          !strcmp(ord.sku, "hot") && ord.qty == 1);
    CHECK(s->api.order_by_key(s, "key-1", "u7", &ord) == HTTP_E_NOT_FOUND);
    CHECK(s->api.order_by_key(s, "key-3", "u3", &ord) == HTTP_E_NOT_FOUND);

    /* A restock clears the sold-out state: the key refused before buys. */
    CHECK(put(s, "hot", 5, -1) == 0);
    CHECK(decr(s, "hot", "u3", 1, "key-2", &res) == 0 && res.stock == 4 && !res.replayed);
    CHECK(decr(s, "hot", "u3", 1, NULL, &res) == 0 && res.stock == 3);

    /* A per-user limit: a buyer at the limit gets limit_exceeded, as the
     * store decides (limit before stock), with and without a key. */
    CHECK(put(s, "lim", 2, 1) == 0);
    CHECK(decr(s, "lim", "a", 1, "lim-1", &res) == 0);
    int64_t lim_order = res.order_id;
    CHECK(decr(s, "lim", "b", 1, NULL, &res) == 0 && res.stock == 0);
    CHECK(decr(s, "lim", "a", 1, NULL, &res) == HTTP_E_LIMIT_EXCEEDED);
    CHECK(decr(s, "lim", "a", 1, "lim-2", &res) == HTTP_E_LIMIT_EXCEEDED);
    CHECK(decr(s, "lim", "c", 1, NULL, &res) == HTTP_E_SOLD_OUT);
    CHECK(decr(s, "lim", "c", 2, "lim-3", &res) == HTTP_E_LIMIT_EXCEEDED);
    CHECK(decr(s, "lim", "c", 1, "lim-3", &res) == HTTP_E_SOLD_OUT);
    CHECK(decr(s, "lim", "a", 1, "lim-1", &res) == 0 && res.replayed &&
          res.order_id == lim_order);
    CHECK(decr(s, "lim", "c", 1, "lim-1", &res) == HTTP_E_KEY_MISMATCH);

    /* A cold item read by many coroutines at once: one fill, the others
     * wait for it and share its answer. */
    CHECK(put(s, "cold", 10, 0) == 0);
    /* The creation's own broadcast event installs the row again: wait until
     * it has (a copy reappears after an eviction), so that the eviction
     * below leaves the item cold. */
    for (int i = 0; i < 300 && s->iv != NULL; i++) {
        svc__local_evict(s, "cold", 0);
        rt_sleep(10);
        if (svc__local_get(s, "cold", &(svc_entry){0}))
            break;
    }
    svc__local_evict(s, "cold", 0);
    CHECK(!svc__local_get(s, "cold", &(svc_entry){0}));
    enum { N = 40 };
    struct reader rd[N];
    rt_wg *wg = rt_wg_new();
    struct gate g = {rt_mutex_new(), rt_cond_new(), 0};
    uint64_t waits = svc_metric_get(SVC_C_FILL_WAIT);
    rt_wg_add(wg, N);
    for (int i = 0; i < N; i++) {
        rd[i] = (struct reader){.s = s, .wg = wg, .g = &g};
        CHECK(rt_spawn(NULL, read_one, &rd[i]) == 0);
    }
    rt_sleep(20);
    rt_mutex_lock(g.mu);
    g.open = 1;
    rt_cond_broadcast(g.cv);
    rt_mutex_unlock(g.mu);
    rt_wg_wait(wg, RT_NO_DEADLINE);
    rt_mutex_free(g.mu);
    rt_cond_free(g.cv);
    rt_wg_free(wg);
    for (int i = 0; i < N; i++)
        CHECK(rd[i].rc == 0 && rd[i].version == rd[0].version);
    uint64_t joined = svc_metric_get(SVC_C_FILL_WAIT) - waits;
    fprintf(stderr, "cold read: %llu of %d readers joined a fill in flight\n",
            (unsigned long long)joined, N);
    CHECK(joined >= 1);
    CHECK(svc_get_item(s, "cold", &it, &tier) == 0 && tier == HTTP_TIER_LOCAL);

    /* An eviction with a floor above the cached version makes the next read
     * go to the database. */
    svc__local_evict(s, "cold", rd[0].version + 1);
    CHECK(svc_get_item(s, "cold", &it, &tier) == 0);
    CHECK(tier == HTTP_TIER_DB);

    /* Admin config. */
    http_config_update upd = {.has_invalidation_delay_ms = 1, .invalidation_delay_ms = 42,
                              .log_level = "warn"};
    http_config_values cv;
    CHECK(s->api.put_config(s, &upd, &cv) == 0);
    CHECK(cv.invalidation_delay_ms == 42 && strcmp(cv.log_level, "warn") == 0);
    upd = (http_config_update){.log_level = "loud"};
    CHECK(s->api.put_config(s, &upd, &cv) == HTTP_E_BAD_REQUEST);
    svc_log_set_level(SVC_LOG_INFO);

    /* Audit. */
    http_audit au;
    CHECK(s->api.audit(s, "hot", 1, &au) == 0);
    CHECK(au.units_supplied - au.units_sold == au.stock && au.orders == 4 && au.n_order_ids == 4);
    free(au.order_ids);

    /* Metrics render. */
    kit_buf b = {0};
    CHECK(s->api.metrics(s, &b) == 0);
    CHECK(b.data != NULL && strstr(b.data, "cachesvc_decrements_total{outcome=\"ok\"}") != NULL);
    CHECK(strstr(b.data, "cachesvc_local_entries") != NULL);
    kit_buf_free(&b);

    svc_close(s, 1000);
}

struct buyer {
    svc *s;
    rt_wg *wg;
    int rc;
    int64_t retry;
    int id;
};

static void buy(void *arg)
{
    struct buyer *b = arg;
    char user[32];
    snprintf(user, sizeof user, "b%d", b->id);
    http_decrement_res res;
    b->rc = decr(b->s, "busy", user, 1, NULL, &res);
    b->retry = res.retry_after_s;
    rt_wg_done(b->wg);
}

static void overload_body(void *arg)
{
    (void)arg;
    svc *s = open_svc(1, 1);
    if (s == NULL)
        return;
    CHECK(put(s, "busy", 100000, 0) == 0);
    enum { N = 200 };
    struct buyer *b = calloc(N, sizeof *b);
    rt_wg *wg = rt_wg_new();
    rt_wg_add(wg, N);
    for (int i = 0; i < N; i++) {
        b[i] = (struct buyer){.s = s, .wg = wg, .id = i};
        CHECK(rt_spawn(NULL, buy, &b[i]) == 0);
    }
    rt_wg_wait(wg, RT_NO_DEADLINE);
    rt_wg_free(wg);
    int ok = 0, over = 0;
    for (int i = 0; i < N; i++) {
        if (b[i].rc == 0)
            ok++;
        else if (b[i].rc == HTTP_E_OVERLOADED && b[i].retry >= 1)
            over++;
    }
    fprintf(stderr, "overload: %d ok, %d answered 429\n", ok, over);
    CHECK(ok >= 1 && over >= 1 && ok + over == N);
    free(b);
    svc_close(s, 1000);
}

/* log.slow_ms: item writes, decrements and reads past the local cache
 * whose service time passes it are logged at warn; 0 turns that off. */
static void slow_body(void *arg)
{
    (void)arg;
    char path[128];
    snprintf(path, sizeof path, "%s/slow.log", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    svc *s = open_svc(100, 10);
    if (s == NULL || fd < 0)
        return;
    svc_log_set_fd(fd);
    atomic_store(&s->slow_ns, 1);        /* everything is slow */
    http_decrement_res res;
    http_item it;
    http_tier tier;
    CHECK(put(s, "slow", 10, -1) == 0);
    CHECK(decr(s, "slow", "u1", 1, NULL, &res) == 0);
    svc__local_evict(s, "slow", 0);   /* unconditional */
    CHECK(svc_get_item(s, "slow", &it, &tier) == 0 && tier == HTTP_TIER_DB);
    CHECK(svc_get_item(s, "slow", &it, &tier) == 0 && tier == HTTP_TIER_LOCAL);
    atomic_store(&s->slow_ns, 0);        /* off */
    CHECK(decr(s, "slow", "u2", 1, NULL, &res) == 0);
    svc_log_set_fd(2);
    char buf[4096] = {0};
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    CHECK(n > 0);
    CHECK(strstr(buf, "level=warn msg=\"slow request\" op=put_item sku=slow ms=") != NULL);
    CHECK(strstr(buf, "msg=\"slow request\" op=decrement sku=slow ms=") != NULL);
    CHECK(strstr(buf, "msg=\"slow request\" op=read sku=slow ms=") != NULL);
    int lines = 0;
    for (const char *p = buf; (p = strstr(p, "slow request")) != NULL; p++)
        lines++;
    CHECK(lines == 3);                   /* not the local hit, nor after 0 */
    svc_close(s, 1000);
}

static void breaker_body(void *arg)
{
    (void)arg;
    svc_breaker b;
    svc__breaker_init(&b, 3, 50);
    CHECK(svc__breaker_allow(&b));
    svc__breaker_result(&b, 0);
    svc__breaker_result(&b, 0);
    CHECK(!svc__breaker_is_open(&b));
    svc__breaker_result(&b, 1);          /* a success resets the count */
    svc__breaker_result(&b, 0);
    svc__breaker_result(&b, 0);
    CHECK(!svc__breaker_is_open(&b));
    svc__breaker_result(&b, 0);
    CHECK(svc__breaker_is_open(&b));
    CHECK(!svc__breaker_allow(&b));      /* open: skip */
    rt_sleep(60);
    CHECK(svc__breaker_allow(&b));       /* one probe per interval */
    CHECK(!svc__breaker_allow(&b));
    svc__breaker_result(&b, 0);          /* the probe failed: stay open */
    CHECK(svc__breaker_is_open(&b));
    rt_sleep(60);
    CHECK(svc__breaker_allow(&b));
    svc__breaker_result(&b, 1);          /* the probe worked: closed */
    CHECK(!svc__breaker_is_open(&b));
    CHECK(svc__breaker_allow(&b) && svc__breaker_allow(&b));
}

/* Negative caching: an unknown sku is answered from the local cache after
 * the first database miss, for cache.negative_ttl_ms; the item's creation
 * replaces the absent entry at once; a decrement is never refused by it;
 * 0 turns it off. */
static void absent_body(void *arg)
{
    (void)arg;
    negative_ttl_ms = 300;
    svc *s = open_svc(4096, 1024);
    negative_ttl_ms = -1;
    if (s == NULL)
        return;
    http_item it;
    http_tier tier;
    http_decrement_res res;
    int64_t db0 = (int64_t)svc_metric_get(SVC_C_READ_ABSENT_DB), loc0 = (int64_t)svc_metric_get(SVC_C_READ_ABSENT_LOCAL);
    CHECK(svc_get_item(s, "ghost", &it, &tier) == HTTP_E_NOT_FOUND && tier == HTTP_TIER_DB);
    for (int i = 0; i < 5; i++)
        CHECK(svc_get_item(s, "ghost", &it, &tier) == HTTP_E_NOT_FOUND && tier == HTTP_TIER_LOCAL);
    CHECK((int64_t)svc_metric_get(SVC_C_READ_ABSENT_DB) == db0 + 1);
    CHECK((int64_t)svc_metric_get(SVC_C_READ_ABSENT_LOCAL) == loc0 + 5);
    /* The database decides a decrement, whatever the local cache holds. */
    CHECK(decr(s, "ghost", "u1", 1, NULL, &res) == HTTP_E_NOT_FOUND);
    /* The absent entry expires. */
    rt_sleep(400);
    CHECK(svc_get_item(s, "ghost", &it, &tier) == HTTP_E_NOT_FOUND && tier == HTTP_TIER_DB);
    /* Creating the item replaces it at once, and it sells. */
    CHECK(put(s, "ghost", 2, 0) == 0);
    CHECK(svc_get_item(s, "ghost", &it, &tier) == 0 && tier == HTTP_TIER_LOCAL && it.stock == 2);
    CHECK(decr(s, "ghost", "u1", 1, NULL, &res) == 0 && res.stock == 1);
    /* When broadcast events may have been missed, no local copy is trusted
     * until it is read again. */
    CHECK(svc_get_item(s, "ghost", &it, &tier) == 0 && tier == HTTP_TIER_LOCAL);
    int64_t distrusts = (int64_t)svc_metric_get(SVC_C_LOCAL_DISTRUST);
    svc__local_distrust(s);
    CHECK((int64_t)svc_metric_get(SVC_C_LOCAL_DISTRUST) == distrusts + 1);
    CHECK(svc_get_item(s, "ghost", &it, &tier) == 0 && tier == HTTP_TIER_DB && it.stock == 1);
    CHECK(svc_get_item(s, "ghost", &it, &tier) == 0 && tier == HTTP_TIER_LOCAL);
    /* An eviction from another instance's commit (its broadcast) removes
     * an absent entry too: the version floor is above 0. */
    CHECK(svc_get_item(s, "ghost2", &it, &tier) == HTTP_E_NOT_FOUND);
    svc__local_evict(s, "ghost2", 1);
    svc_entry e;
    CHECK(!svc__local_get(s, "ghost2", &e));
    svc_close(s, 1000);

    negative_ttl_ms = 0;
    s = open_svc(4096, 1024);
    negative_ttl_ms = -1;
    if (s == NULL)
        return;
    for (int i = 0; i < 3; i++)
        CHECK(svc_get_item(s, "ghost", &it, &tier) == HTTP_E_NOT_FOUND && tier == HTTP_TIER_DB);
    svc_close(s, 1000);
}

static void run(rt_fn fn)
{
    check_reset();
    rt_config rc = {.workers = 2};
    assert_int_equal(rt_main(&rc, fn, NULL), 0);
    assert_checks_passed();
}

static void test_paths(void **state) { (void)state; run(paths_body); }
static void test_overload(void **state) { (void)state; run(overload_body); }
static void test_breaker(void **state) { (void)state; run(breaker_body); }
static void test_slow(void **state) { (void)state; run(slow_body); }
static void test_absent(void **state) { (void)state; run(absent_body); }

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/svc-unit.XXXXXX");
    if (mkdtemp(dir) == NULL)
        return 1;
    svc_log_set_level(SVC_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_breaker),
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_overload),
        cmocka_unit_test(test_slow),
        cmocka_unit_test(test_absent),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        r = r ? r : 1;
    return r;
}
