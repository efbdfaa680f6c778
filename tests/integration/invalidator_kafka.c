/*
 * invalidator_kafka.c: integration tests of the invalidator against
 * librdkafka's mock cluster (in process) and a real 3-master Redis Cluster
 * on loopback (ports 24100-24102, scripts/redis-cluster), reached through
 * the cluster client (cachesvc/redis/rc.h).
 *
 * Usage: test_invalidator_kafka [filter]       (cmocka test-name pattern)
 *        test_invalidator_kafka --child-delay BOOTSTRAPS SEEDS TOPIC GROUP
 *   The second form is the delay consumer that the restart test starts as a
 *   child process and kills with SIGKILL.
 *
 * cmocka keeps its state in thread-local variables, so the tests run on the
 * main thread (a foreign thread to the runtime) and the invalidator on the
 * runtime's workers; calls that need a coroutine go through on_rt().
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "invalidator/inv_kafka.h"
#include "runtime/rt.h"
#include "kit/kit.h"
#include "tests/support/invalidator_support.h"

#define REDIS_PORT 24100
#define REDIS_TIMEOUT_MS 300

extern char **environ;

static its_rsink *rsink;
static its_outbox *outbox;

/* ---------------------------------------------------------------------- */
/* Helpers                                                                  */

/* Runs fn(arg) as a coroutine and waits for it from the main thread. */
static void on_rt(rt_fn fn, void *arg)
{
    rt_co *co = NULL;
    rt_spawn_opts o = {.joinable = 1, .stack_size = 256 * 1024};
    assert_int_equal(rt_spawn_ex(&co, fn, arg, &o), 0);
    assert_int_equal(rt_join(co), 0);
}

typedef struct inv_call {
    inv *iv;
    int rc;
} inv_call;

static void co_start(void *arg)
{
    inv_call *c = arg;
    c->rc = inv_start(c->iv);
}

static void co_purge(void *arg)
{
    inv_call *c = arg;
    c->rc = inv_purge(c->iv, 5000);
}

static void co_stop(void *arg)
{
    inv_call *c = arg;
    c->rc = inv_stop(c->iv, 2000);
}

static void sleep_ms(int ms)
{
    usleep((useconds_t)ms * 1000);
}

static int g_installing;   /* make_inv's local sink also takes installs */

static inv *make_inv(const char *name, int roles, const char *instance,
                     int64_t delay_ms, its_lsink *ls, inv_config *extra)
{
    char topic[128], group[128];
    snprintf(topic, sizeof(topic), "inv-test-%s", name);
    snprintf(group, sizeof(group), "inv-test-%s-delay", name);
    inv_config cfg;
    if (extra != NULL)
        cfg = *extra;
    else
        memset(&cfg, 0, sizeof(cfg));
    cfg.brokers = cfg.brokers ? cfg.brokers : "embedded";
    cfg.topic = topic;
    cfg.delay_group = group;
    cfg.instance_id = instance;
    cfg.delay_ms = delay_ms;
    cfg.roles = roles;
    cfg.relay_poll_ms = cfg.relay_poll_ms ? cfg.relay_poll_ms : 200;
    cfg.session_timeout_ms = cfg.session_timeout_ms ? cfg.session_timeout_ms : 3000;
    inv_source src = its_outbox_source(outbox);
    inv_redis_sink rs = its_rsink_sink(rsink);
    inv_local_sink lsk;
    if (ls != NULL)
        lsk = g_installing ? its_lsink_sink_installing(ls) : its_lsink_sink(ls);
    inv *iv = NULL;
    assert_int_equal(inv_new(&cfg, &src, &rs, ls ? &lsk : NULL, &iv), 0);
    inv_call c = {iv, 0};
    on_rt(co_start, &c);
    assert_int_equal(c.rc, 0);
    return iv;
}

static bool ready_cond(void *arg)
{
    return inv_ready(arg);
}

static void wait_ready(inv *iv)
{
    assert_true(its_wait_until(ready_cond, iv, 20000));
}

static void stop_inv(inv *iv)
{
    inv_call c = {iv, 0};
    on_rt(co_stop, &c);
    inv_free(iv);
}

static inv_stats *stats(inv *iv)
{
    static inv_stats st;           /* tests run on one coroutine */
    inv_stats_get(iv, &st);
    return &st;
}

typedef struct keys_gone {
    const char *prefix;
    int n;
} keys_gone;

static bool all_gone(void *arg)
{
    keys_gone *k = arg;
    return its_redis_count(k->prefix, k->n) == 0;
}

static bool key_gone(void *arg)
{
    return its_redis_get(arg, NULL) == 0;
}

static bool outbox_empty(void *arg)
{
    (void)arg;
    return its_outbox_depth(outbox) == 0;
}

typedef struct applied_at_least {
    inv *iv;
    uint64_t n;
} applied_at_least;

static bool applied_cond(void *arg)
{
    applied_at_least *a = arg;
    return stats(a->iv)->applied >= a->n;
}

/* The delay consumer read at least n events (the relay published them). */
static bool received_cond(void *arg)
{
    applied_at_least *a = arg;
    return stats(a->iv)->received >= a->n;
}

static int setup(void **state)
{
    (void)state;
    its_redis_flush();
    outbox = its_outbox_new();
    return outbox == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    its_outbox_free(outbox);
    outbox = NULL;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Tests                                                                    */

/* An event deletes the Redis copy no earlier than its due time and soon
 * after; the broadcast consumer evicts the local copy. */
static void test_due_time(void **state)
{
    (void)state;
    its_lsink *ls = its_lsink_new();
    inv *iv = make_inv("due", INV_ROLE_ALL, "due-a", 1000, ls, NULL);
    wait_ready(iv);
    assert_int_equal(its_redis_set("due1", 5), 0);
    int64_t t0 = kit_wall_ms();
    its_outbox_add(outbox, "due1", 5, t0);
    inv_notify(iv);
    sleep_ms(500);
    assert_int_equal(its_redis_get("due1", NULL), 1);
    assert_true(its_wait_until(key_gone, "due1", 3000));
    int64_t gone = kit_wall_ms();
    assert_true(gone >= t0 + 1000);
    assert_true(gone <= t0 + 1000 + 500);
    assert_true(its_wait_until(outbox_empty, NULL, 2000));
    assert_int_equal(its_lsink_version(ls, "due1"), 5);
    applied_at_least a = {iv, 1};   /* counted once the sink call returns */
    assert_true(its_wait_until(applied_cond, &a, 2000));
    inv_stats *st = stats(iv);
    assert_true(st->published >= 1);
    assert_true(inv_hist_quantile(&st->lateness, 1.0) < 500);
    stop_inv(iv);
    its_lsink_free(ls);
}

/* The delay counts from when the delay consumer received the event, on its
 * own clock: an event whose commit time was stamped long before its
 * commit (a lock wait, a slow commit) or on a clock behind the consumer's
 * still waits the whole delay before the Redis copy goes. */
static void test_due_on_receipt(void **state)
{
    (void)state;
    inv *iv = make_inv("rcpt", INV_ROLE_RELAY | INV_ROLE_DELAY, "rcpt-a", 1000, NULL, NULL);
    wait_ready(iv);
    assert_int_equal(its_redis_set("rcpt1", 5), 0);
    int64_t t0 = kit_wall_ms();
    its_outbox_add(outbox, "rcpt1", 5, t0 - 10000);   /* stamped 10 s early */
    inv_notify(iv);
    applied_at_least rcv = {iv, 1};
    assert_true(its_wait_until(received_cond, &rcv, 3000));  /* published */
    int64_t published = kit_wall_ms();
    sleep_ms(600);
    assert_int_equal(its_redis_get("rcpt1", NULL), 1);        /* still there */
    /* The embedded log dies with the process: the row stays in the outbox
     * until its Redis delete is applied, so a kill -9 now loses nothing. */
    assert_int_equal(its_outbox_depth(outbox), 1);
    assert_true(its_wait_until(key_gone, "rcpt1", 3000));
    assert_true(its_wait_until(outbox_empty, NULL, 3000));
    assert_true(kit_wall_ms() >= published + 600);
    int64_t v = 0;
    its_redis_get("rcpt1", &v);
    assert_int_equal(v, 5);                                   /* its tombstone */
    stop_inv(iv);
}

/* Outbox rows become visible out of id order (concurrent transactions): a
 * row whose transaction commits after higher ids were published and
 * deleted is still published, and deleted, within the poll interval. */
static void test_out_of_order_commit(void **state)
{
    (void)state;
    inv *iv = make_inv("ooo", INV_ROLE_RELAY | INV_ROLE_DELAY, "ooo-a", 0, NULL, NULL);
    wait_ready(iv);
    assert_int_equal(its_redis_set("ooo-late", 3), 0);
    int64_t late = its_outbox_reserve(outbox);        /* a transaction held open */
    for (int i = 0; i < 5; i++) {
        char sku[16];
        snprintf(sku, sizeof sku, "ooo-%d", i);
        its_outbox_add(outbox, sku, 1, -1);
    }
    inv_notify(iv);
    applied_at_least a = {iv, 5};
    assert_true(its_wait_until(applied_cond, &a, 5000));
    assert_true(its_wait_until(outbox_empty, NULL, 3000));   /* later rows gone */
    its_outbox_commit(outbox, late, "ooo-late", 4);            /* commits now */
    int64_t t0 = kit_wall_ms();
    /* No notify: the poll alone must find it (relay_poll_ms, 200 ms here). */
    assert_true(its_wait_until(key_gone, "ooo-late", 5000));
    assert_true(its_wait_until(outbox_empty, NULL, 3000));
    assert_true(kit_wall_ms() - t0 < 2500);
    inv_stats *st = stats(iv);
    assert_int_equal(st->published, 6);
    stop_inv(iv);
}

/* A claim that committed but whose answer was lost (the database died
 * between them): the rows are this relay's for the lease, and a relay that
 * only asks for unclaimed rows would leave them unpublished until the lease
 * ends (10 s). After a failed fetch the relay asks for its own claims too,
 * so the row is published and deleted within the poll interval. */
static void test_lost_claim_reply(void **state)
{
    (void)state;
    inv *iv = make_inv("lostclaim", INV_ROLE_RELAY | INV_ROLE_DELAY, "lc-a", 0, NULL, NULL);
    wait_ready(iv);
    assert_int_equal(its_redis_set("lc1", 1), 0);
    its_outbox_lose_replies(outbox, 1);
    its_outbox_add(outbox, "lc1", 2, -1);
    int64_t t0 = kit_wall_ms();
    inv_notify(iv);
    assert_true(its_wait_until(key_gone, "lc1", 5000));
    assert_true(its_wait_until(outbox_empty, NULL, 3000));
    assert_true(kit_wall_ms() - t0 < 5000);   /* the lease is 10 s */
    stop_inv(iv);
}

/* An older event never deletes a newer cached version. */
static void test_older_event_keeps_newer(void **state)
{
    (void)state;
    inv *iv = make_inv("older", INV_ROLE_RELAY | INV_ROLE_DELAY, "older-a",
                       100, NULL, NULL);
    wait_ready(iv);
    assert_int_equal(its_redis_set("old1", 10), 0);
    its_outbox_add(outbox, "old1", 5, -1);
    inv_notify(iv);
    applied_at_least a = {iv, 1};
    assert_true(its_wait_until(applied_cond, &a, 10000));
    int64_t v = 0;
    assert_int_equal(its_redis_get("old1", &v), 1);
    assert_int_equal(v, 10);
    /* The event of the cached version itself deletes it. */
    its_outbox_add(outbox, "old1", 10, -1);
    inv_notify(iv);
    assert_true(its_wait_until(key_gone, "old1", 5000));
    stop_inv(iv);
}

/* A delay change takes effect for the next event. */
static void test_delay_change(void **state)
{
    (void)state;
    inv *iv = make_inv("delaychg", INV_ROLE_RELAY | INV_ROLE_DELAY, "dc-a",
                       4000, NULL, NULL);
    wait_ready(iv);
    assert_int_equal(its_redis_set("dc1", 1), 0);
    assert_int_equal(its_redis_set("dc2", 1), 0);
    int64_t t0 = kit_wall_ms();
    its_outbox_add(outbox, "dc1", 1, t0);
    inv_notify(iv);
    applied_at_least rcv = {iv, 1};
    assert_true(its_wait_until(received_cond, &rcv, 3000));  /* published */
    inv_set_delay_ms(iv, 200);
    assert_int_equal(inv_delay_ms(iv), 200);
    int64_t t1 = kit_wall_ms();
    its_outbox_add(outbox, "dc2", 1, t1);
    inv_notify(iv);
    assert_true(its_wait_until(key_gone, "dc2", 2000));
    assert_true(kit_wall_ms() >= t1 + 200);
    assert_true(kit_wall_ms() < t0 + 4000);
    assert_int_equal(its_redis_get("dc1", NULL), 1);
    assert_true(its_wait_until(key_gone, "dc1", 6000));
    assert_true(kit_wall_ms() >= t0 + 4000);
    stop_inv(iv);
}

/* Broadcast eviction reaches a second consumer group (another instance). */
static void test_broadcast_two_groups(void **state)
{
    (void)state;
    its_lsink *la = its_lsink_new(), *lb = its_lsink_new();
    inv *a = make_inv("bcast", INV_ROLE_RELAY | INV_ROLE_BCAST, "bc-a", 100,
                      la, NULL);
    inv *b = make_inv("bcast", INV_ROLE_BCAST, "bc-b", 100, lb, NULL);
    wait_ready(a);
    wait_ready(b);
    for (int v = 1; v <= 3; v++)
        its_outbox_add(outbox, "bc1", v, -1);
    inv_notify(a);
    int64_t deadline = rt_now_ms() + 10000;
    while ((its_lsink_version(la, "bc1") != 3 ||
            its_lsink_version(lb, "bc1") != 3) && rt_now_ms() < deadline)
        sleep_ms(5);
    assert_int_equal(its_lsink_version(la, "bc1"), 3);
    assert_int_equal(its_lsink_version(lb, "bc1"), 3);
    assert_int_equal(its_lsink_count(lb), 3);
    stop_inv(b);
    stop_inv(a);
    its_lsink_free(la);
    its_lsink_free(lb);
}

static bool lsink_at(its_lsink *l, const char *sku, int64_t v)
{
    int64_t deadline = rt_now_ms() + 10000;
    while (its_lsink_version(l, sku) != v && rt_now_ms() < deadline)
        sleep_ms(5);
    return its_lsink_version(l, sku) == v;
}

/* Update events: a row that carries the item's committed row is installed,
 * one without it (superseded) evicts; a consumer on broadcast_evict evicts
 * on both; a relay on broadcast_evict (the older protocol) sends no rows,
 * so even an installing consumer evicts. */
static void test_update_events(void **state)
{
    (void)state;
    its_lsink *lu = its_lsink_new(), *le = its_lsink_new(), *lr = its_lsink_new();
    inv_config evict = {.broadcast_evict = 1};
    g_installing = 1;
    inv *a = make_inv("upd", INV_ROLE_RELAY | INV_ROLE_BCAST, "up-a", 100, lu, NULL);
    inv *b = make_inv("upd", INV_ROLE_BCAST, "up-b", 100, le, &evict);
    g_installing = 0;
    wait_ready(a);
    wait_ready(b);
    its_outbox_add(outbox, "up1", 1, -1);
    its_outbox_add_item(outbox, "up1", 2, 42);
    inv_notify(a);
    assert_true(lsink_at(lu, "up1", 2));
    assert_true(lsink_at(le, "up1", 2));
    int64_t stock = -1;
    assert_int_equal(its_lsink_installs(lu, &stock), 1);
    assert_int_equal(stock, 42);
    assert_int_equal(its_lsink_count(lu), 1);
    assert_int_equal(its_lsink_installs(le, NULL), 0);
    assert_int_equal(its_lsink_count(le), 2);
    stop_inv(b);
    stop_inv(a);

    inv *r = make_inv("upd2", INV_ROLE_RELAY, "up-r", 100, NULL, &evict);
    g_installing = 1;
    inv *c = make_inv("upd2", INV_ROLE_BCAST, "up-c", 100, lr, NULL);
    g_installing = 0;
    wait_ready(r);
    wait_ready(c);
    its_outbox_add_item(outbox, "up2", 3, 9);
    inv_notify(r);
    assert_true(lsink_at(lr, "up2", 3));
    assert_int_equal(its_lsink_installs(lr, NULL), 0);
    assert_int_equal(its_lsink_count(lr), 1);
    stop_inv(c);
    stop_inv(r);
    its_lsink_free(lu);
    its_lsink_free(le);
    its_lsink_free(lr);
}

/* An operator's purge from one instance reaches every instance's local
 * sink (versions forgotten); the delay consumer skips it without holding
 * it; events after it are delivered as before. */
static void test_purge_fleet(void **state)
{
    (void)state;
    its_lsink *la = its_lsink_new(), *lb = its_lsink_new();
    inv *a = make_inv("purge", INV_ROLE_ALL, "pg-a", 100, la, NULL);
    inv *b = make_inv("purge", INV_ROLE_BCAST, "pg-b", 100, lb, NULL);
    wait_ready(a);
    wait_ready(b);
    its_outbox_add(outbox, "pu1", 7, -1);
    inv_notify(a);
    int64_t deadline = rt_now_ms() + 10000;
    while (its_lsink_version(lb, "pu1") != 7 && rt_now_ms() < deadline)
        sleep_ms(5);
    assert_int_equal(its_lsink_version(lb, "pu1"), 7);
    inv_call c = {a, 1};
    on_rt(co_purge, &c);
    assert_int_equal(c.rc, 0);
    deadline = rt_now_ms() + 10000;
    while ((its_lsink_purges(la) < 1 || its_lsink_purges(lb) < 1) && rt_now_ms() < deadline)
        sleep_ms(5);
    assert_int_equal(its_lsink_purges(la), 1);
    assert_int_equal(its_lsink_purges(lb), 1);
    assert_int_equal(its_lsink_version(lb, "pu1"), -1);   /* forgotten */
    inv_stats *st = stats(a);
    assert_int_equal(st->decode_errors, 0);
    assert_int_equal(st->pending, 0);
    /* Later events still flow (the delay consumer did not stall on it). */
    assert_int_equal(its_redis_set("pu2", 1), 0);
    its_outbox_add(outbox, "pu2", 2, -1);
    inv_notify(a);
    assert_true(its_wait_until(key_gone, "pu2", 5000));
    deadline = rt_now_ms() + 5000;
    while (its_lsink_version(lb, "pu2") != 2 && rt_now_ms() < deadline)
        sleep_ms(5);
    assert_int_equal(its_lsink_version(lb, "pu2"), 2);
    /* Without the relay role there is no producer to publish with. */
    c = (inv_call){b, 1};
    on_rt(co_purge, &c);
    assert_int_equal(c.rc, -ENOTSUP);
    stop_inv(b);
    stop_inv(a);
    its_lsink_free(la);
    its_lsink_free(lb);
}

typedef struct streamer {
    const char *prefix;
    int n, gap_ms;
    inv *iv;
    rt_co *co;
} streamer;

static void stream_rows(void *arg)
{
    streamer *s = arg;
    char sku[64];
    for (int i = 0; i < s->n; i++) {
        snprintf(sku, sizeof(sku), "%s%d", s->prefix, i);
        its_outbox_add(outbox, sku, 1, -1);
        if (s->iv != NULL)
            inv_notify(s->iv);
        rt_sleep(s->gap_ms);
    }
}

static void stream_start(streamer *s)
{
    rt_spawn_opts o = {.joinable = 1};
    assert_int_equal(rt_spawn_ex(&s->co, stream_rows, s, &o), 0);
}

static void set_keys(const char *prefix, int n)
{
    char sku[64];
    for (int i = 0; i < n; i++) {
        snprintf(sku, sizeof(sku), "%s%d", prefix, i);
        assert_int_equal(its_redis_set(sku, 1), 0);
    }
}

/* Kafka down during a stream of writes: rows wait in the outbox and nothing
 * is lost once it is back. */
static void test_broker_down(void **state)
{
    (void)state;
    inv_config extra;
    memset(&extra, 0, sizeof(extra));
    extra.message_timeout_ms = 1000;
    inv *iv = make_inv("down", INV_ROLE_RELAY | INV_ROLE_DELAY, "down-a", 50,
                       NULL, &extra);
    wait_ready(iv);
    const int n = 400;
    set_keys("bd", n);
    streamer s = {"bd", n, 5, iv, NULL};
    stream_start(&s);
    sleep_ms(400);
    rd_kafka_mock_cluster_t *mc = inv__mock_cluster();
    assert_non_null(mc);
    rd_kafka_mock_broker_set_down(mc, 1);
    sleep_ms(2000);
    int64_t depth_during = its_outbox_depth(outbox);
    rd_kafka_mock_broker_set_up(mc, 1);
    rt_join(s.co);
    assert_true(depth_during > 0);   /* rows waited in the outbox */
    assert_true(its_wait_until(outbox_empty, NULL, 30000));
    keys_gone k = {"bd", n};
    assert_true(its_wait_until(all_gone, &k, 30000));
    inv_stats *st = stats(iv);
    assert_true(st->applied >= (uint64_t)n);
    stop_inv(iv);
}

/* Redis not accepting the deletes (CLIENT PAUSE WRITE on every master): they
 * time out, are retried with backoff, and nothing is skipped. */
static void test_redis_outage(void **state)
{
    (void)state;
    inv *iv = make_inv("redisdown", INV_ROLE_RELAY | INV_ROLE_DELAY, "rd-a",
                       50, NULL, NULL);
    wait_ready(iv);
    set_keys("ro", 20);
    assert_int_equal(its_redis_pause_writes(2500), 0);
    for (int i = 0; i < 20; i++) {
        char sku[16];
        snprintf(sku, sizeof(sku), "ro%d", i);
        its_outbox_add(outbox, sku, 1, -1);
    }
    inv_notify(iv);
    int64_t deadline = rt_now_ms() + 2000;
    while (stats(iv)->retries < 20 && rt_now_ms() < deadline)
        sleep_ms(10);
    inv_stats *st = stats(iv);
    assert_true(st->retries >= 20);
    assert_true(st->errors >= 20);
    assert_int_equal(st->applied, 0);
    assert_int_equal(st->pending, 20);
    assert_int_equal(its_redis_get("ro0", NULL), 1);
    /* The pause ends by itself: every delete goes through. */
    keys_gone k = {"ro", 20};
    assert_true(its_wait_until(all_gone, &k, 10000));
    applied_at_least a = {iv, 20};
    assert_true(its_wait_until(applied_cond, &a, 2000));
    stop_inv(iv);
}

/* A full pending set pauses fetching instead of growing or dropping. */
static void test_pending_cap_pauses(void **state)
{
    (void)state;
    inv_config extra;
    memset(&extra, 0, sizeof(extra));
    extra.pending_cap = 50;
    inv *iv = make_inv("cap", INV_ROLE_RELAY | INV_ROLE_DELAY, "cap-a", 1000,
                       NULL, &extra);
    wait_ready(iv);
    const int n = 300;
    set_keys("pc", n);
    for (int i = 0; i < n; i++) {
        char sku[16];
        snprintf(sku, sizeof(sku), "pc%d", i);
        its_outbox_add(outbox, sku, 1, -1);
    }
    inv_notify(iv);
    int64_t max_pending = 0;
    keys_gone k = {"pc", n};
    int64_t deadline = rt_now_ms() + 30000;
    while (!all_gone(&k) && rt_now_ms() < deadline) {
        inv_stats *st = stats(iv);
        if (st->pending > max_pending)
            max_pending = st->pending;
        sleep_ms(10);
    }
    assert_true(all_gone(&k));
    applied_at_least a = {iv, (uint64_t)n};   /* counted after the sink call */
    assert_true(its_wait_until(applied_cond, &a, 2000));
    assert_true(its_wait_until(outbox_empty, NULL, 3000));
    inv_stats *st = stats(iv);
    assert_true(st->pauses >= 1);
    assert_true(max_pending <= 50);
    stop_inv(iv);
}

/* ---------------------------------------------------------------------- */
/* Consumer killed and restarted mid-stream                                 */

static pid_t spawn_child(const char *boot, const char *topic,
                         const char *group)
{
    char *argv[] = {"test_invalidator_kafka", "--child-delay", (char *)boot,
                    (char *)its_cluster_seeds(), (char *)topic, (char *)group,
                    NULL};
    pid_t pid;
    if (posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, environ) != 0)
        return -1;
    return pid;
}

static void test_consumer_restart(void **state)
{
    (void)state;
    inv *relay = make_inv("restart", INV_ROLE_RELAY, "rs-relay", 100, NULL,
                          NULL);
    wait_ready(relay);
    const char *boot = inv_bootstraps(relay);
    const int n = 600;
    set_keys("cr", n);
    pid_t c1 = spawn_child(boot, "inv-test-restart", "inv-test-restart-delay");
    assert_true(c1 > 0);
    streamer s = {"cr", n, 10, relay, NULL};
    stream_start(&s);
    /* Kill the consumer once it has applied some events. */
    int left = n;
    int64_t deadline = rt_now_ms() + 20000;
    while (left > n - 30 && rt_now_ms() < deadline) {
        sleep_ms(20);
        left = its_redis_count("cr", n);
    }
    kill(c1, SIGKILL);
    waitpid(c1, NULL, 0);
    assert_true(left < n);          /* it applied some */
    assert_true(left > 0);          /* and died mid-stream */
    pid_t c2 = spawn_child(boot, "inv-test-restart", "inv-test-restart-delay");
    assert_true(c2 > 0);
    rt_join(s.co);
    keys_gone k = {"cr", n};
    bool ok = its_wait_until(all_gone, &k, 40000);
    kill(c2, SIGKILL);
    waitpid(c2, NULL, 0);
    print_message("restart: %d of %d keys left when the first consumer died\n",
                  left, n);
    assert_true(ok);
    stop_inv(relay);
}

/* The standalone binaries: cachesvc-devbroker serves the events, the
 * `invalidator` binary applies them to the Redis Cluster, SIGTERM stops
 * both cleanly. */
static pid_t spawn_out(char *const argv[], int *out_fd)
{
    posix_spawn_file_actions_t fa;
    int fds[2];
    if (pipe(fds) < 0)
        return -1;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        return -1;
    }
    *out_fd = fds[0];
    return pid;
}

static void test_standalone_binaries(void **state)
{
    (void)state;
    int fd = -1;
    char *dargv[] = {INV_TEST_DEVBROKER, "--partitions", "3", NULL};
    pid_t broker = spawn_out(dargv, &fd);
    assert_true(broker > 0);
    char boot[256] = "";
    size_t len = 0;
    while (len + 1 < sizeof(boot)) {
        ssize_t n = read(fd, boot + len, 1);
        if (n <= 0 || boot[len] == '\n')
            break;
        len++;
    }
    boot[len] = '\0';
    close(fd);
    assert_true(len > 0);

    inv_config extra;
    memset(&extra, 0, sizeof(extra));
    extra.brokers = boot;
    inv *relay = make_inv("standalone", INV_ROLE_RELAY, "sa-relay", 100, NULL,
                          &extra);
    wait_ready(relay);
    char a_brokers[300], a_redis[200];
    snprintf(a_brokers, sizeof(a_brokers), "--kafka.brokers=%s", boot);
    snprintf(a_redis, sizeof(a_redis), "--redis.url=%s", its_cluster_seeds());
    char *iargv[] = {INV_TEST_INVALIDATOR, "--stats-ms", "0", a_brokers,
                     "--invalidator.listen=127.0.0.1:0",   /* any free port */
                     "--kafka.topic=inv-test-standalone",
                     "--kafka.group=inv-test-standalone-delay", a_redis, NULL};
    pid_t inval;
    assert_int_equal(posix_spawn(&inval, iargv[0], NULL, NULL, iargv, environ), 0);

    /* The copies are at version 1 and the events at version 2: every copy
     * is older than its event and goes. One more copy stands at its event's
     * own version, the row that commit wrote (a writer's refresh): with the
     * default broadcast_mode (update) the binary's delete spares it. */
    const int n = 50;
    set_keys("sa", n);
    for (int i = 0; i < n; i++) {
        char sku[16];
        snprintf(sku, sizeof(sku), "sa%d", i);
        its_outbox_add(outbox, sku, 2, -1);
    }
    assert_int_equal(its_redis_set("saeq", 2), 0);
    its_outbox_add(outbox, "saeq", 2, -1);
    inv_notify(relay);
    keys_gone k = {"sa", n};
    bool ok = its_wait_until(all_gone, &k, 30000);
    int64_t eqv = 0;
    sleep_ms(300);   /* saeq's event is in the same batches as the others */
    int eq = its_redis_get("saeq", &eqv);
    int st_inval = -1, st_broker = -1;
    kill(inval, SIGTERM);
    waitpid(inval, &st_inval, 0);
    stop_inv(relay);
    kill(broker, SIGTERM);
    waitpid(broker, &st_broker, 0);
    assert_true(ok);
    assert_int_equal(eq, 1);
    assert_int_equal(eqv, 2);
    assert_true(WIFEXITED(st_inval) && WEXITSTATUS(st_inval) == 0);
    assert_true(WIFEXITED(st_broker) && WEXITSTATUS(st_broker) == 0);
}

typedef struct child_args {
    const char *boot, *seeds, *topic, *group;
} child_args;

static void child_main(void *arg)
{
    child_args *a = arg;
    prctl(PR_SET_PDEATHSIG, SIGKILL);   /* never outlive the test */
    its_rsink *rs = its_rsink_new(a->seeds, REDIS_TIMEOUT_MS);
    if (rs == NULL)
        exit(2);
    inv_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.brokers = a->boot;
    cfg.topic = a->topic;
    cfg.delay_group = a->group;
    cfg.delay_ms = 100;
    cfg.roles = INV_ROLE_DELAY;
    cfg.session_timeout_ms = 3000;
    inv_redis_sink sink = its_rsink_sink(rs);
    inv *iv = NULL;
    if (inv_new(&cfg, NULL, &sink, NULL, &iv) < 0 || inv_start(iv) < 0)
        exit(3);
    for (;;)
        rt_sleep(1000);            /* until killed */
}

/* ---------------------------------------------------------------------- */

/* inv_fanout_new: a missing callback is -EINVAL, not out of memory; a
 * pool runs every item of a batch through the callback. */
static int fanout_one(void *ctx, const char *sku, int64_t version)
{
    (void)sku;
    atomic_fetch_add((_Atomic int64_t *)ctx, version);
    return version == 3 ? -EIO : 0;
}

static void co_fanout(void *arg)
{
    int *ok = arg;
    _Atomic int64_t sum = 0;
    inv_fanout *f = (inv_fanout *)1;
    if (inv_fanout_new(4, NULL, &sum, &f) != -EINVAL || f != NULL)
        return;
    if (inv_fanout_new(4, fanout_one, &sum, &f) != 0 || f == NULL)
        return;
    inv_del items[5] = {{"a", 1, 1}, {"b", 2, 1}, {"c", 3, 1}, {"d", 4, 1}, {"e", 5, 1}};
    int r = inv_fanout_del(f, items, 5);
    inv_fanout_free(f);
    *ok = r == 0 && atomic_load(&sum) == 15 && items[2].result == -EIO &&
          items[0].result == 0 && items[4].result == 0;
}

static void test_fanout(void **state)
{
    (void)state;
    int ok = 0;
    rt_co *co = NULL;
    rt_spawn_opts o = {.joinable = 1};
    assert_int_equal(rt_spawn_ex(&co, co_fanout, &ok, &o), 0);
    assert_int_equal(rt_join(co), 0);
    assert_true(ok);
}

static void co_rsink_new(void *arg)
{
    (void)arg;
    rsink = its_rsink_new(its_cluster_seeds(), REDIS_TIMEOUT_MS);
}

static void co_rsink_free(void *arg)
{
    (void)arg;
    its_rsink_free(rsink);
}

int main(int argc, char **argv)
{
    rt_config cfg = {.workers = 2, .stack_size = 256 * 1024};
    if (argc == 6 && strcmp(argv[1], "--child-delay") == 0) {
        child_args a = {argv[2], argv[3], argv[4], argv[5]};
        return rt_main(&cfg, child_main, &a);
    }
    if (argc == 2)
        cmocka_set_test_filter(argv[1]);
    if (its_cluster_up(CACHESVC_SOURCE_DIR, REDIS_PORT) < 0) {
        fprintf(stderr, "cannot start a Redis Cluster on port %d\n", REDIS_PORT);
        return 1;
    }
    int rc = 1;
    if (rt_start(&cfg) < 0)
        goto out;
    rt_co *co = NULL;
    rt_spawn_opts o = {.joinable = 1};
    if (rt_spawn_ex(&co, co_rsink_new, NULL, &o) < 0 || rt_join(co) < 0 ||
        rsink == NULL) {
        fprintf(stderr, "cannot connect to the Redis Cluster\n");
        rt_stop();
        goto out;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fanout),
        cmocka_unit_test_setup_teardown(test_due_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_due_on_receipt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_order_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_claim_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_older_event_keeps_newer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delay_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broadcast_two_groups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_purge_fleet, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_outage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_cap_pauses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broker_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consumer_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_standalone_binaries, setup, teardown),
    };
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (rt_spawn_ex(&co, co_rsink_free, NULL, &o) == 0)
        rt_join(co);
    rt_stop();
out:
    its_cluster_down();
    return rc;
}
