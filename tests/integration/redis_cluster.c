/*
 * Integration tests of the Redis Cluster client against real servers on
 * loopback, started by tests/support/redis_run.sh:
 *
 *   redis_cluster_test routing    SEEDS DIR   10,000 keys vs CLUSTER KEYSLOT,
 *                                             versioned scripts, multi-key
 *   redis_cluster_test reshard    SEEDS DIR   redis-cli --cluster reshard
 *                                             under traffic: all succeed,
 *                                             MOVED and ASK seen
 *   redis_cluster_test failover   SEEDS DIR   CLUSTER FAILOVER, kill -9 and
 *                                             SIGSTOP of masters under traffic
 *   redis_cluster_test standalone SEEDS DIR   one plain Redis
 *   redis_cluster_test faults     PORT  DIR   fake servers: reply cut short,
 *                                             garbage, black hole, refused
 *
 * Exits 0 when every check passed. Each check prints what failed.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cachesvc/redis/rc_int.h"
#include "tests/support/check.h"
#include "tests/support/sh.h"

static const char *g_seeds, *g_dir;
static int g_port;

/* How far past its deadline a call may return: scheduling noise on a busy
 * box, more under sanitizers (TSan slows everything several times). The
 * property checked is "bounded by the deadline", not a speed. */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define SLACK_NS (1000LL * 1000 * 1000)
#else
#define SLACK_NS (250LL * 1000 * 1000)
#endif

/* ------------------------------------------------------------------------ */
/* Client helpers                                                            */

static rc_cluster *connect_client(const char *seeds, int replica_reads)
{
    rc_config cfg = {
        .seeds = seeds,
        .connect_timeout_ms = 500,
        .command_timeout_ms = 1000,
        .replica_reads = replica_reads,
        .refresh_cooldown_ms = 50,
    };
    rc_cluster *c;
    int rc = rc_new(&cfg, &c);

    if (rc < 0) {
        CHECK(rc == 0, "rc_new: %s", rc_strerror(rc));
        return NULL;
    }
    rc = rc_connect(c, rt_deadline_ms(5000));
    CHECK(rc == 0, "rc_connect: %s", rc_strerror(rc));
    if (rc < 0) {
        rc_free(c);
        return NULL;
    }
    return c;
}

static int cmd2(rc_cluster *c, const char *a0, const char *a1, int64_t dl, rc_reply **out)
{
    const char *argv[2] = {a0, a1};
    return rc_command(c, 2, argv, NULL, dl, out);
}

static int cmd3(rc_cluster *c, const char *a0, const char *a1, const char *a2,
                int64_t dl, rc_reply **out)
{
    const char *argv[3] = {a0, a1, a2};
    return rc_command(c, 3, argv, NULL, dl, out);
}

static uint64_t sum_counter(rc_cluster *c, size_t off)
{
    rc_node_stats st[32];
    int n = rc_stats(c, st, 32);
    uint64_t s = 0;
    for (int i = 0; i < n && i < 32; i++)
        s += *(uint64_t *)((char *)&st[i] + off);
    return s;
}
#define SUM(c, field) sum_counter(c, offsetof(rc_node_stats, field))

static void print_stats(rc_cluster *c)
{
    rc_node_stats st[32];
    int n = rc_stats(c, st, 32);
    for (int i = 0; i < n && i < 32; i++)
        printf("  node %-16s master=%d up=%d inflight=%" PRIu64 " batches=%" PRIu64
               " commands=%" PRIu64 " moved=%" PRIu64 " ask=%" PRIu64 " retries=%" PRIu64
               " errors=%" PRIu64 " refreshes=%" PRIu64 "\n",
               st[i].addr, st[i].master, st[i].up, st[i].inflight, st[i].batches,
               st[i].commands, st[i].moved, st[i].ask, st[i].retries, st[i].errors,
               st[i].refreshes);
}

/* ------------------------------------------------------------------------ */
/* Traffic: N coroutines doing SET then GET on random keys until stopped.   */

typedef struct traffic {
    rc_cluster *c;
    int nkeys;
    int64_t timeout_ms;
    _Atomic int stop;
    _Atomic uint64_t ok, fail, late, ops;
    _Atomic int64_t worst_over_ns;   /* worst return time past the deadline */
    _Atomic uint64_t errs[8];
    rt_wg *wg;
    _Atomic unsigned seq;
} traffic;

static void count_err(traffic *t, int rc)
{
    int idx;
    switch (rc) {
    case RC_ETIMEDOUT: idx = 0; break;
    case RC_EDOWN: idx = 1; break;
    case RC_ECONN: idx = 2; break;
    case RC_EUNAVAIL: idx = 3; break;
    case RC_ESERVER: idx = 4; break;
    case RC_EREDIRECT: idx = 5; break;
    default: idx = 6; break;
    }
    atomic_fetch_add(&t->errs[idx], 1);
}

static void traffic_worker(void *arg)
{
    traffic *t = arg;
    unsigned x = atomic_fetch_add(&t->seq, 1) * 2654435761u + 1;
    char key[32], val[32];

    while (!atomic_load(&t->stop)) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        snprintf(key, sizeof key, "k:%u", x % (unsigned)t->nkeys);
        snprintf(val, sizeof val, "v%u", x);
        for (int op = 0; op < 2; op++) {
            int64_t dl = rt_deadline_ms(t->timeout_ms);
            rc_reply *r = NULL;
            int rc = op == 0 ? cmd3(t->c, "SET", key, val, dl, &r) : cmd2(t->c, "GET", key, dl, &r);
            int64_t over = rt_now_ns() - dl;
            if (over > 0) {
                int64_t w = atomic_load(&t->worst_over_ns);
                while (over > w && !atomic_compare_exchange_weak(&t->worst_over_ns, &w, over))
                    ;
                if (over > SLACK_NS)
                    atomic_fetch_add(&t->late, 1);
            }
            if (rc == 0) {
                atomic_fetch_add(&t->ok, 1);
            } else {
                atomic_fetch_add(&t->fail, 1);
                count_err(t, rc);
                if (rc == RC_ESERVER && r && atomic_load(&t->errs[4]) <= 3)
                    fprintf(stderr, "  error reply: %.*s\n", (int)r->len, r->str);
            }
            atomic_fetch_add(&t->ops, 1);
            rc_reply_free(r);
        }
    }
    rt_wg_done(t->wg);
}

static traffic *traffic_start(rc_cluster *c, int workers, int nkeys, int64_t timeout_ms)
{
    traffic *t = calloc(1, sizeof *t);
    t->c = c;
    t->nkeys = nkeys;
    t->timeout_ms = timeout_ms;
    t->wg = rt_wg_new();
    rt_wg_add(t->wg, workers);
    for (int i = 0; i < workers; i++)
        if (rt_spawn(NULL, traffic_worker, t) < 0)
            rt_wg_done(t->wg);
    return t;
}

static void traffic_stop(traffic *t, const char *what)
{
    atomic_store(&t->stop, 1);
    rt_wg_wait(t->wg, RT_NO_DEADLINE);
    printf("%s: ops=%" PRIu64 " ok=%" PRIu64 " fail=%" PRIu64 " (timeout=%" PRIu64
           " down=%" PRIu64 " conn=%" PRIu64 " unavail=%" PRIu64 " server=%" PRIu64
           " redirect=%" PRIu64 " other=%" PRIu64 ") late=%" PRIu64 " worst_over_ms=%.1f\n",
           what, t->ops, t->ok, t->fail, t->errs[0], t->errs[1], t->errs[2], t->errs[3],
           t->errs[4], t->errs[5], t->errs[6], t->late, (double)t->worst_over_ns / 1e6);
    rt_wg_free(t->wg);
}

/* Preloads keys k:0..n-1 from a few coroutines. */
typedef struct preload {
    rc_cluster *c;
    int n, parts;
    _Atomic int part, errors;
    rt_wg *wg;
} preload;

static void preload_worker(void *arg)
{
    preload *p = arg;
    int part = atomic_fetch_add(&p->part, 1);
    char key[32];
    for (int i = part; i < p->n; i += p->parts) {
        snprintf(key, sizeof key, "k:%d", i);
        if (cmd3(p->c, "SET", key, "init", 0, NULL) != 0)
            atomic_fetch_add(&p->errors, 1);
    }
    rt_wg_done(p->wg);
}

static int preload_keys(rc_cluster *c, int n)
{
    preload p = {.c = c, .n = n, .parts = 32};
    p.wg = rt_wg_new();
    rt_wg_add(p.wg, p.parts);
    for (int i = 0; i < p.parts; i++)
        rt_spawn(NULL, preload_worker, &p);
    rt_wg_wait(p.wg, RT_NO_DEADLINE);
    rt_wg_free(p.wg);
    return p.errors;
}

/* ------------------------------------------------------------------------ */
/* routing                                                                   */

typedef struct keyslot_job {
    rc_cluster *c;
    int from, to;
    _Atomic int *bad;
    rt_wg *wg;
} keyslot_job;

static void keyslot_worker(void *arg)
{
    keyslot_job *j = arg;
    char key[48];
    for (int i = j->from; i < j->to; i++) {
        rc_reply *r = NULL;
        int len = snprintf(key, sizeof key, i % 3 ? "key:%d" : "stock:{sku%d}:x", i);
        int rc = cmd3(j->c, "CLUSTER", "KEYSLOT", key, 0, &r);
        if (rc != 0 || r->type != RC_REPLY_INTEGER ||
            (unsigned)r->integer != rc_keyslot(key, (size_t)len)) {
            if (atomic_fetch_add(j->bad, 1) < 5)
                fprintf(stderr, "  keyslot mismatch for %s: rc=%d\n", key, rc);
        }
        rc_reply_free(r);
        /* The key lands on the master that owns its slot: SET through the
         * client, then GET straight from that master. */
        if (cmd3(j->c, "SET", key, key, 0, NULL) != 0) {
            atomic_fetch_add(j->bad, 1);
            continue;
        }
        rc__node *m = atomic_load(&j->c->slots[rc_keyslot(key, (size_t)len)]);
        const char *argv[2] = {"GET", key};
        size_t argvlen[2] = {3, (size_t)len};
        r = NULL;
        rc = rc__node_exec(m, 2, argv, argvlen, rt_deadline_ms(1000), &r);
        if (rc != 0 || r->type != RC_REPLY_STRING || r->len != (size_t)len ||
            memcmp(r->str, key, (size_t)len) != 0) {
            if (atomic_fetch_add(j->bad, 1) < 5)
                fprintf(stderr, "  %s is not on %s (rc=%d)\n", key, m->addr, rc);
        }
        rc_reply_free(r);
    }
    rt_wg_done(j->wg);
}

static void test_versioned(rc_cluster *c, const char *tag)
{
    rc_reply *r = NULL;
    char key[64], buf[64];
    uint64_t v = 0;
    size_t len = 0;
    int klen = rc_item_key(key, sizeof key, tag, strlen(tag));

    cmd2(c, "DEL", key, 0, NULL);
    CHECK(rc_get_versioned(c, key, (size_t)klen, &v, buf, sizeof buf, &len, 0) == 0, "absent");
    CHECK(rc_fill_if_newer(c, key, (size_t)klen, 5, "five", 4, 60000, 0) == 1, "fill 5");
    CHECK(rc_fill_if_newer(c, key, (size_t)klen, 4, "four", 4, 60000, 0) == 0, "older refused");
    CHECK(rc_fill_if_newer(c, key, (size_t)klen, 5, "FIVE", 4, 60000, 0) == 0, "equal refused");
    CHECK(rc_get_versioned(c, key, (size_t)klen, &v, buf, sizeof buf, &len, 0) == 1, "present");
    CHECK(v == 5 && len == 4 && memcmp(buf, "five", 4) == 0, "v=%" PRIu64, v);
    /* Lexical vs numeric: 10 > 9. */
    CHECK(rc_fill_if_newer(c, key, (size_t)klen, 10, "ten", 3, 60000, 0) == 1, "fill 10");
    CHECK(rc_fill_if_newer(c, key, (size_t)klen, 9, "nine", 4, 60000, 0) == 0, "9 < 10");
    CHECK(rc_fill_if_newer(c, key, (size_t)klen, UINT64_MAX, "max", 3, 0, 0) == 1, "max");
    CHECK(rc_fill_if_newer(c, key, (size_t)klen, UINT64_MAX - 1, "m1", 2, 0, 0) == 0, "max-1");
    CHECK(rc_delete_if_not_newer(c, key, (size_t)klen, UINT64_MAX - 1, 60000, 0) == 0, "newer kept");
    CHECK(rc_delete_if_not_newer(c, key, (size_t)klen, UINT64_MAX, 60000, 0) == 1, "equal deleted");
    cmd2(c, "DEL", key, 0, NULL);
    CHECK(rc_fill_if_newer(c, key, (size_t)klen, 7, "seven|with|bars", 15, 60000, 0) == 1, "fill 7");
    CHECK(rc_get_versioned(c, key, (size_t)klen, &v, buf, sizeof buf, &len, 0) == 1, "get 7");
    CHECK(v == 7 && len == 15 && memcmp(buf, "seven|with|bars", 15) == 0, "payload with |");
    CHECK(rc_delete_if_not_newer(c, key, (size_t)klen, 6, 60000, 0) == 0, "6 < 7 kept");
    CHECK(rc_delete_if_not_newer(c, key, (size_t)klen, 8, 60000, 0) == 1, "8 > 7 deleted");
    /* The delete leaves a tombstone at 8: a reader sees a miss whose
     * version is a floor; a slower reader's fill of 7 is refused, a fill at
     * 8 (read after the commit the delete announced) or above is taken. */
    CHECK(rc_get_versioned(c, key, (size_t)klen, &v, buf, sizeof buf, &len, 0) == 2 && v == 8,
          "tombstone at 8 (got v=%" PRIu64 ")", v);
    CHECK(rc_fill_if_newer(c, key, (size_t)klen, 7, "seven", 5, 60000, 0) == 0,
          "fill of 7 after the delete of 8 refused");
    CHECK(rc_delete_if_not_newer(c, key, (size_t)klen, 5, 60000, 0) == 0, "an older delete keeps it");
    CHECK(rc_fill_if_newer(c, key, (size_t)klen, 8, "eight", 5, 60000, 0) == 1, "fill at 8 taken");
    CHECK(rc_get_versioned(c, key, (size_t)klen, &v, buf, sizeof buf, &len, 0) == 1 && v == 8,
          "value 8");
    /* A delete on an empty key (the copy already expired, or never
     * filled) leaves a tombstone too, with its own expiry. */
    cmd2(c, "DEL", key, 0, NULL);
    CHECK(rc_delete_if_not_newer(c, key, (size_t)klen, 12, 30000, 0) == 1, "delete on an empty key");
    CHECK(rc_fill_if_newer(c, key, (size_t)klen, 11, "eleven", 6, 60000, 0) == 0,
          "fill of 11 after the delete of 12 on an empty key refused");
    r = NULL;
    CHECK(cmd2(c, "PTTL", key, 0, &r) == 0 && r->type == RC_REPLY_INTEGER &&
          r->integer > 20000 && r->integer <= 30000, "tombstone pttl");
    rc_reply_free(r);
    CHECK(rc_fill_if_newer(c, key, (size_t)klen, 13, "t", 1, 60000, 0) == 1, "fill of 13 taken");
    CHECK(rc_fill_if_newer(c, key, (size_t)klen, 14, "~", 1, 60000, 0) == RC_EINVAL,
          "the tombstone payload is reserved");
    /* PX applies. */
    cmd2(c, "DEL", key, 0, NULL);
    CHECK(rc_fill_if_newer(c, key, (size_t)klen, 1, "x", 1, 50000, 0) == 1, "fill with px");
    r = NULL;
    CHECK(cmd2(c, "PTTL", key, 0, &r) == 0 && r->type == RC_REPLY_INTEGER &&
          r->integer > 40000 && r->integer <= 50000, "pttl");
    rc_reply_free(r);
    /* A garbage value counts as older; a wrong type is an error. */
    CHECK(cmd3(c, "SET", key, "garbage", 0, NULL) == 0, "set garbage");
    CHECK(rc_get_versioned(c, key, (size_t)klen, &v, buf, sizeof buf, &len, 0) == RC_EBADVALUE,
          "bad value");
    CHECK(rc_fill_if_newer(c, key, (size_t)klen, 1, "x", 1, 0, 0) == 1, "overwrites garbage");
    CHECK(cmd3(c, "SET", key, "garbage", 0, NULL) == 0, "set garbage");
    CHECK(rc_delete_if_not_newer(c, key, (size_t)klen, 1, 60000, 0) == 1, "deletes garbage");
    cmd2(c, "DEL", key, 0, NULL);
    CHECK(cmd3(c, "SADD", key, "m", 0, NULL) == 0, "sadd");
    CHECK(rc_fill_if_newer(c, key, (size_t)klen, 1, "x", 1, 0, 0) == RC_ESERVER, "wrongtype");
    cmd2(c, "DEL", key, 0, NULL);
    /* NOSCRIPT fallback: flush the script cache of every master. */
    const char *argv[2] = {"SCRIPT", "FLUSH"};
    size_t argvlen[2] = {6, 5};
    for (rc__node *n = c->nodes; n; n = n->next) {
        r = NULL;
        if (atomic_load(&n->master))
            rc__node_exec(n, 2, argv, argvlen, rt_deadline_ms(1000), &r);
        rc_reply_free(r);
    }
    CHECK(rc_fill_if_newer(c, key, (size_t)klen, 3, "three", 5, 0, 0) == 1, "EVAL fallback");
    CHECK(rc_delete_if_not_newer(c, key, (size_t)klen, 3, 60000, 0) == 1, "EVAL fallback delete");
}

/* rc_purge_items removes every item key (values, tombstones) on every
 * master and nothing else. */
static void test_purge(rc_cluster *c)
{
    char key[64];
    int n = 300;
    for (int i = 0; i < n; i++) {
        char sku[16];
        snprintf(sku, sizeof sku, "purge-%d", i);
        int klen = rc_item_key(key, sizeof key, sku, strlen(sku));
        if (i % 3 == 0)
            CHECK(rc_delete_if_not_newer(c, key, (size_t)klen, 9, 60000, 0) == 1, "tombstone %d", i);
        else
            CHECK(rc_fill_if_newer(c, key, (size_t)klen, 9, "x", 1, 60000, 0) == 1, "fill %d", i);
    }
    CHECK(cmd3(c, "SET", "not-an-item", "kept", 0, NULL) == 0, "other key");
    uint64_t deleted = 0;
    int rc = rc_purge_items(c, rt_deadline_ms(5000), &deleted);
    CHECK(rc == 0 && deleted >= (uint64_t)n, "purge: %d, %" PRIu64 " deleted", rc, deleted);
    int left = 0;
    for (int i = 0; i < n; i++) {
        char sku[16], buf[8];
        uint64_t v = 0;
        size_t len = 0;
        snprintf(sku, sizeof sku, "purge-%d", i);
        int klen = rc_item_key(key, sizeof key, sku, strlen(sku));
        if (rc_get_versioned(c, key, (size_t)klen, &v, buf, sizeof buf, &len, 0) != 0)
            left++;
        /* Versions may start over: a fill below the purged 9 is taken. */
        CHECK(rc_fill_if_newer(c, key, (size_t)klen, 2, "y", 1, 60000, 0) == 1, "fill 2 after purge");
    }
    CHECK(left == 0, "%d item keys left after the purge", left);
    rc_reply *r = NULL;
    CHECK(cmd2(c, "GET", "not-an-item", 0, &r) == 0 && r->type == RC_REPLY_STRING, "other key kept");
    rc_reply_free(r);
    cmd2(c, "DEL", "not-an-item", 0, NULL);
    CHECK(rc_purge_items(c, rt_deadline_ms(5000), &deleted) == 0 && deleted == (uint64_t)n,
          "second purge removes the refills (%" PRIu64 ")", deleted);
}

static void test_multikey(rc_cluster *c)
{
    const char *mset[] = {"a", "b", "c", "d", "{a}x"};
    const char *argv[7];
    rc_reply *r = NULL;
    int rc;

    for (int i = 0; i < 5; i++)
        CHECK(cmd3(c, "SET", mset[i], mset[i], 0, NULL) == 0, "set %s", mset[i]);
    argv[0] = "MGET";
    argv[1] = "a"; argv[2] = "nokey"; argv[3] = "b"; argv[4] = "c"; argv[5] = "{a}x"; argv[6] = "d";
    rc = rc_command(c, 7, argv, NULL, 0, &r);
    CHECK(rc == 0 && r->type == RC_REPLY_ARRAY && r->elements == 6, "mget: %d", rc);
    if (rc == 0 && r->elements == 6) {
        CHECK(r->element[0]->type == RC_REPLY_STRING && strcmp(r->element[0]->str, "a") == 0, "a");
        CHECK(r->element[1]->type == RC_REPLY_NIL, "nil");
        CHECK(strcmp(r->element[2]->str, "b") == 0, "b");
        CHECK(strcmp(r->element[3]->str, "c") == 0, "c");
        CHECK(strcmp(r->element[4]->str, "{a}x") == 0, "{a}x");
        CHECK(strcmp(r->element[5]->str, "d") == 0, "d");
    }
    rc_reply_free(r);
    argv[0] = "DEL";
    rc = rc_command(c, 7, argv, NULL, 0, &r);
    CHECK(rc == 0 && r->type == RC_REPLY_INTEGER && r->integer == 5, "del sum: %d", rc);
    rc_reply_free(r);
    argv[0] = "EXISTS";
    rc = rc_command(c, 7, argv, NULL, 0, &r);
    CHECK(rc == 0 && r->integer == 0, "exists after del");
    rc_reply_free(r);
    /* An error reply comes back typed, with its text. */
    rc = cmd2(c, "NOSUCHCOMMAND", "x", 0, &r);
    CHECK(rc == RC_ESERVER && r && r->type == RC_REPLY_ERROR, "error reply: %d", rc);
    rc_reply_free(r);
}

static int run_routing(void)
{
    rc_cluster *c = connect_client(g_seeds, 0);
    _Atomic int bad = 0;
    keyslot_job jobs[16];
    rt_wg *wg = rt_wg_new();

    if (!c)
        return 1;
    rt_wg_add(wg, 16);
    for (int i = 0; i < 16; i++) {
        jobs[i] = (keyslot_job){c, i * 625, (i + 1) * 625, &bad, wg};
        rt_spawn(NULL, keyslot_worker, &jobs[i]);
    }
    rt_wg_wait(wg, RT_NO_DEADLINE);
    rt_wg_free(wg);
    CHECK(bad == 0, "%d of 10000 keys misrouted", (int)bad);
    CHECK(SUM(c, moved) == 0, "MOVED with a fresh map: %" PRIu64, SUM(c, moved));
    CHECK(SUM(c, commands) >= 20000, "commands counted");
    CHECK(SUM(c, batches) > 0 && SUM(c, batches) <= SUM(c, commands), "batches counted");
    /* Prometheus text as /metrics serves it: every node listed. */
    kit_buf mb = {0};
    rc_metrics_append(c, &mb);
    const char *text = kit_buf_cstr(&mb);
    CHECK(!mb.oom && mb.len > 0, "metrics written");
    CHECK(strstr(text, "# TYPE cachesvc_redis_node_commands_total counter") != NULL, "metrics type");
    CHECK(strstr(text, "cachesvc_redis_node_inflight{node=\"127.0.0.1:") != NULL, "metrics gauge");
    CHECK(strstr(text, "cachesvc_redis_node_up{node=") != NULL, "metrics up");
    CHECK(strstr(text, "cachesvc_redis_slot_refreshes_total ") != NULL, "metrics refreshes");
    kit_buf_free(&mb);
    test_versioned(c, "hot");
    test_versioned(c, "cold-1");
    test_multikey(c);
    test_purge(c);
    /* Replica reads: GET on a replica after the write reached it. */
    rc_cluster *rr = connect_client(g_seeds, 1);
    if (rr) {
        CHECK(cmd3(rr, "SET", "rkey", "rv", 0, NULL) == 0, "set");
        /* A replica that is slow to connect is skipped (marked down) and
         * the master answers; and Redis leaves a replica out of CLUSTER
         * SLOTS until gossip reports its replication offset as non-zero,
         * so right after the first writes the map may list none. Retry,
         * refreshing the map, until a replica has served a read. */
        uint64_t replica_cmds = 0;
        int ok = 0;
        for (int i = 0; i < 250 && replica_cmds == 0; i++) {
            if (i > 0 && i % 10 == 0)
                rc_refresh(rr, rt_deadline_ms(1000));
            rc_reply *r = NULL;
            ok = cmd2(rr, "GET", "rkey", 0, &r) == 0;
            rc_reply_free(r);
            rc_node_stats st[32];
            int n = rc_stats(rr, st, 32);
            for (int k = 0; k < n && k < 32; k++)
                if (!st[k].master)
                    replica_cmds += st[k].commands;
            if (replica_cmds == 0)
                rt_sleep(20);
        }
        CHECK(ok, "replica read");
        CHECK(replica_cmds > 0, "reads went to replicas");
        print_stats(rr);
        rc_free(rr);
    }
    print_stats(c);
    rc_free(c);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* reshard                                                                   */

static int node_id(int port, char *id, size_t cap)
{
    return sh(id, cap, "redis-cli -p %d cluster myid", port);
}

static int run_reshard(void)
{
    rc_cluster *c = connect_client(g_seeds, 0);
    char id0[64], id1[64], out[4096];
    traffic *t;
    int rc;

    if (!c)
        return 1;
    CHECK(preload_keys(c, 20000) == 0, "preload");
    node_id(g_port, id0, sizeof id0);
    node_id(g_port + 1, id1, sizeof id1);
    t = traffic_start(c, 64, 20000, 2000);
    rt_sleep(200);
    for (int round = 0; round < 2; round++) {
        rc = sh(out, sizeof out,
                "redis-cli --cluster reshard 127.0.0.1:%d --cluster-from %s --cluster-to %s "
                "--cluster-slots 2000 --cluster-yes --cluster-pipeline 5 >%s/reshard%d.log 2>&1",
                g_port, round ? id1 : id0, round ? id0 : id1, g_dir, round);
        CHECK(rc == 0, "reshard %d exited %d (see %s/reshard%d.log)", round, rc, g_dir, round);
        rt_sleep(200);
    }
    traffic_stop(t, "reshard traffic");
    CHECK(t->ops > 1000, "traffic ran");
    CHECK(t->fail == 0, "%" PRIu64 " commands failed during resharding", t->fail);
    CHECK(t->late == 0, "%" PRIu64 " commands outlived their deadline", t->late);
    CHECK(SUM(c, moved) > 0, "MOVED exercised");
    CHECK(SUM(c, ask) > 0, "ASK exercised");
    printf("moved=%" PRIu64 " ask=%" PRIu64 " refreshes=%" PRIu64 "\n", SUM(c, moved),
           SUM(c, ask), rc_refresh_count(c));
    print_stats(c);
    free(t);
    rc_free(c);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* failover                                                                  */

/* Waits until a pass of writes over every master succeeds; returns ms. */
static int64_t wait_recovered(rc_cluster *c, int64_t max_ms)
{
    int64_t t0 = rt_now_ms();
    char key[32];
    while (rt_now_ms() - t0 < max_ms) {
        int ok = 1;
        for (int i = 0; i < 64 && ok; i++) {
            snprintf(key, sizeof key, "probe:%d", i);
            ok = cmd3(c, "SET", key, "x", rt_deadline_ms(300), NULL) == 0;
        }
        if (ok)
            return rt_now_ms() - t0;
        rt_sleep(50);
    }
    return -1;
}

static int find_master_port(int avoid)
{
    char out[256];
    for (int p = g_port; p < g_port + 6; p++) {
        if (p == avoid)
            continue;
        if (sh(out, sizeof out, "redis-cli -p %d info replication | grep -c role:master", p) == 0 &&
            atoi(out) == 1)
            return p;
    }
    return -1;
}

static int replica_of(int master_port)
{
    char id[64], out[256];
    node_id(master_port, id, sizeof id);
    for (int p = g_port; p < g_port + 6; p++) {
        if (sh(out, sizeof out, "redis-cli -p %d cluster nodes | grep myself,slave | grep -c %s", p,
               id) == 0 && atoi(out) == 1)
            return p;
    }
    return -1;
}

static void check_acked_writes(rc_cluster *c, const char *prefix)
{
    char key[48], val[48];
    int bad = 0;
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "%s:%d", prefix, i);
        snprintf(val, sizeof val, "val-%d", i);
        if (cmd3(c, "SET", key, val, rt_deadline_ms(1000), NULL) != 0)
            bad++;
    }
    CHECK(bad == 0, "%d writes failed after recovery", bad);
    bad = 0;
    for (int i = 0; i < 1000; i++) {
        rc_reply *r = NULL;
        snprintf(key, sizeof key, "%s:%d", prefix, i);
        snprintf(val, sizeof val, "val-%d", i);
        if (cmd2(c, "GET", key, rt_deadline_ms(1000), &r) != 0 || r->type != RC_REPLY_STRING ||
            strcmp(r->str, val) != 0)
            bad++;
        rc_reply_free(r);
    }
    CHECK(bad == 0, "%d acknowledged writes not readable", bad);
}

static int run_failover(void)
{
    rc_cluster *c = connect_client(g_seeds, 0);
    char out[4096];
    traffic *t;
    int64_t ms;

    if (!c)
        return 1;
    preload_keys(c, 5000);

    /* 1. A clean, manual failover. */
    int m = find_master_port(-1), r = replica_of(m);
    CHECK(m > 0 && r > 0, "master %d replica %d", m, r);
    t = traffic_start(c, 32, 5000, 1000);
    rt_sleep(300);
    sh(out, sizeof out, "redis-cli -p %d cluster failover", r);
    CHECK(strstr(out, "OK") != NULL, "CLUSTER FAILOVER: %s", out);
    for (int i = 0; i < 100 && find_master_port(-1) != r && sh(out, sizeof out,
             "redis-cli -p %d info replication | grep -c role:master", r) == 0 && atoi(out) != 1; i++)
        rt_sleep(100);
    rt_sleep(1000);
    traffic_stop(t, "manual failover traffic");
    CHECK(t->late == 0, "%" PRIu64 " commands outlived their deadline", t->late);
    free(t);
    ms = wait_recovered(c, 20000);
    CHECK(ms >= 0, "no recovery after CLUSTER FAILOVER");
    printf("recovered %" PRId64 " ms after manual failover\n", ms);
    check_acked_writes(c, "after-failover");

    /* 2. kill -9 of a master under traffic. */
    m = find_master_port(-1);
    t = traffic_start(c, 32, 5000, 800);
    rt_sleep(300);
    int64_t t_kill = rt_now_ms();
    sh(out, sizeof out, "kill -9 $(cat %s/redis-%d.pid)", g_dir, m);
    printf("killed master %d\n", m);
    rt_sleep(1500);
    ms = wait_recovered(c, 30000);
    CHECK(ms >= 0, "no recovery after kill -9");
    printf("recovered %" PRId64 " ms after kill -9\n", rt_now_ms() - t_kill);
    rt_sleep(500);
    traffic_stop(t, "kill -9 traffic");
    CHECK(t->late == 0, "%" PRIu64 " commands outlived their deadline", t->late);
    free(t);
    check_acked_writes(c, "after-kill");

    /* 3. A black-holed master (SIGSTOP): callers time out on their deadline,
     * the cluster fails over, the client follows. */
    m = find_master_port(-1);
    t = traffic_start(c, 32, 5000, 500);
    rt_sleep(300);
    t_kill = rt_now_ms();
    sh(out, sizeof out, "kill -STOP $(cat %s/redis-%d.pid)", g_dir, m);
    printf("stopped master %d\n", m);
    rt_sleep(1500);
    ms = wait_recovered(c, 30000);
    CHECK(ms >= 0, "no recovery after SIGSTOP");
    printf("recovered %" PRId64 " ms after SIGSTOP\n", rt_now_ms() - t_kill);
    rt_sleep(500);
    traffic_stop(t, "SIGSTOP traffic");
    CHECK(t->late == 0, "%" PRIu64 " commands outlived their deadline", t->late);
    free(t);
    check_acked_writes(c, "after-stop");
    sh(out, sizeof out, "kill -CONT $(cat %s/redis-%d.pid)", g_dir, m);
    print_stats(c);
    rc_free(c);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* standalone                                                                */

static int run_standalone(void)
{
    rc_cluster *c = connect_client(g_seeds, 1);
    traffic *t;

    if (!c)
        return 1;
    CHECK(atomic_load(&c->standalone) == 1, "standalone detected");
    CHECK(cmd3(c, "SET", "a", "1", 0, NULL) == 0, "set");
    test_versioned(c, "solo");
    test_multikey(c);
    test_purge(c);
    t = traffic_start(c, 64, 1000, 1000);
    rt_sleep(500);
    traffic_stop(t, "standalone traffic");
    CHECK(t->fail == 0 && t->ok > 100, "traffic");
    free(t);
    print_stats(c);
    rc_free(c);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* faults: a fake server                                                     */

enum { FAKE_NORMAL, FAKE_CUT, FAKE_GARBAGE, FAKE_BLACKHOLE };

typedef struct fake {
    int lfd;
    _Atomic int mode;
    _Atomic int tricks;   /* how many data commands get the trick */
    _Atomic int conns;
    _Atomic int stop;
} fake;

typedef struct fake_conn {
    fake *f;
    int fd;
} fake_conn;

static int reply(int fd, const char *s)
{
    return rt_write(fd, s, strlen(s), rt_deadline_ms(1000)) < 0 ? -1 : 0;
}

static void fake_serve(void *arg)
{
    fake_conn *fc = arg;
    fake *f = fc->f;
    redisReader *rd = redisReaderCreate();
    char buf[4096];
    int silent = 0;   /* a black hole answers nothing more, in order */

    for (;;) {
        ssize_t n = rt_read(fc->fd, buf, sizeof buf, rt_deadline_ms(10000));
        void *req = NULL;
        if (n <= 0 || atomic_load(&f->stop))
            break;
        redisReaderFeed(rd, buf, (size_t)n);
        while (redisReaderGetReply(rd, &req) == REDIS_OK && req != NULL) {
            rc_reply *q = req;
            const char *cmd = q->elements ? q->element[0]->str : "";
            int rc = 0;
            if (silent) {
                /* Swallowed. */
            } else if (strcasecmp(cmd, "CLUSTER") == 0) {
                rc = reply(fc->fd, "-ERR This instance has cluster support disabled\r\n");
            } else if (strcasecmp(cmd, "SCRIPT") == 0) {
                rc = reply(fc->fd, "-ERR unknown\r\n");
            } else if (strcasecmp(cmd, "READONLY") == 0 || strcasecmp(cmd, "PING") == 0) {
                rc = reply(fc->fd, "+OK\r\n");
            } else {
                int mode = atomic_load(&f->mode);
                if (mode != FAKE_NORMAL && atomic_fetch_sub(&f->tricks, 1) > 0) {
                    if (mode == FAKE_CUT) {
                        reply(fc->fd, strcasecmp(cmd, "GET") == 0 ? "$10\r\nabc" : ":");
                        rc = -1;
                    } else if (mode == FAKE_GARBAGE) {
                        reply(fc->fd, "?what is this\r\n");
                    }
                    else
                        silent = 1;
                } else if (strcasecmp(cmd, "GET") == 0) {
                    rc = reply(fc->fd, "$3\r\nval\r\n");
                } else if (strcasecmp(cmd, "INCR") == 0) {
                    rc = reply(fc->fd, ":1\r\n");
                } else {
                    rc = reply(fc->fd, "+OK\r\n");
                }
            }
            freeReplyObject(req);
            if (rc < 0)
                goto out;
        }
    }
out:
    redisReaderFree(rd);
    rt_close(fc->fd);
    free(fc);
}

static void fake_accept(void *arg)
{
    fake *f = arg;
    while (!atomic_load(&f->stop)) {
        int fd = rt_accept(f->lfd, NULL, NULL, rt_deadline_ms(100));
        if (fd < 0)
            continue;
        fake_conn *fc = malloc(sizeof *fc);
        fc->f = f;
        fc->fd = fd;
        atomic_fetch_add(&f->conns, 1);
        rt_spawn(NULL, fake_serve, fc);
    }
}

typedef struct bh_job {
    rc_cluster *c;
    _Atomic int timeouts, late, other, answered;
    rt_wg *wg;
} bh_job;

static void blackhole_worker(void *arg)
{
    bh_job *j = arg;
    int64_t dl = rt_deadline_ms(300);
    int rc = cmd2(j->c, "GET", "k", dl, NULL);
    int64_t over = rt_now_ns() - dl;
    if (rc == 0)
        atomic_fetch_add(&j->answered, 1);
    else if (rc == RC_ETIMEDOUT)
        atomic_fetch_add(&j->timeouts, 1);
    else if (atomic_fetch_add(&j->other, 1) < 3)
        fprintf(stderr, "  black hole: %s after %.1f ms\n", rc_strerror(rc),
                (double)(rt_now_ns() - dl) / 1e6 + 300);
    if (over > SLACK_NS && atomic_fetch_add(&j->late, 1) < 3)
        fprintf(stderr, "  black hole: returned %.1f ms past the deadline (%s)\n",
                (double)over / 1e6, rc_strerror(rc));
    rt_wg_done(j->wg);
}

static int run_faults(void)
{
    fake f = {0};
    rt_co *acc;
    char seeds[64];
    rc_cluster *c;
    rc_reply *r = NULL;
    int rc;

    f.lfd = rt_listen_tcp("127.0.0.1", g_port, 64, 0);
    CHECK(f.lfd >= 0, "listen %d: %d", g_port, f.lfd);
    if (f.lfd < 0)
        return 1;
    rt_spawn(&acc, fake_accept, &f);
    snprintf(seeds, sizeof seeds, "127.0.0.1:%d", g_port);
    rc_config cfg = {.seeds = seeds, .connect_timeout_ms = 300, .command_timeout_ms = 500};
    rc = rc_new(&cfg, &c);
    CHECK(rc == 0, "rc_new: %s", rc_strerror(rc));
    if (rc < 0)
        goto out;
    rc = rc_connect(c, rt_deadline_ms(2000));
    CHECK(rc == 0, "connect to fake: %s", rc_strerror(rc));
    CHECK(atomic_load(&c->standalone) == 1, "fake is standalone");

    /* A reply cut short by a close: an idempotent GET is resent and
     * succeeds; a non-idempotent INCR reports that its outcome is unknown. */
    atomic_store(&f.mode, FAKE_CUT);
    atomic_store(&f.tricks, 1);
    rc = cmd2(c, "GET", "k", 0, &r);
    CHECK(rc == 0 && r->type == RC_REPLY_STRING && strcmp(r->str, "val") == 0,
          "GET after cut: %s", rc_strerror(rc));
    rc_reply_free(r);
    atomic_store(&f.tricks, 1);
    rc = cmd2(c, "INCR", "k", 0, NULL);
    CHECK(rc == RC_ECONN, "INCR after cut: %s", rc_strerror(rc));
    rc = cmd2(c, "INCR", "k", 0, NULL);
    CHECK(rc == 0, "INCR afterwards: %s", rc_strerror(rc));

    /* Garbage: the connection is dropped, INCR says so, GET is resent. */
    atomic_store(&f.mode, FAKE_GARBAGE);
    atomic_store(&f.tricks, 1);
    rc = cmd2(c, "INCR", "k", 0, NULL);
    CHECK(rc == RC_EPROTO, "INCR after garbage: %s", rc_strerror(rc));
    atomic_store(&f.tricks, 1);
    rc = cmd2(c, "GET", "k", 0, NULL);
    CHECK(rc == 0, "GET after garbage: %s", rc_strerror(rc));
    atomic_store(&f.mode, FAKE_NORMAL);
    CHECK(cmd2(c, "GET", "k", 0, NULL) == 0, "normal again");

    /* Black hole: 100 concurrent callers, each returns on its deadline. */
    atomic_store(&f.mode, FAKE_BLACKHOLE);
    atomic_store(&f.tricks, 1000000);
    bh_job j = {.c = c};
    j.wg = rt_wg_new();
    rt_wg_add(j.wg, 100);
    for (int i = 0; i < 100; i++)
        rt_spawn(NULL, blackhole_worker, &j);
    rt_wg_wait(j.wg, RT_NO_DEADLINE);
    rt_wg_free(j.wg);
    /* Mostly RC_ETIMEDOUT; a caller may also see the connection declared
     * dead (an older request reached command_timeout_ms) and the node
     * marked down, when its own deadline is about to pass. */
    CHECK(j.answered == 0 && j.timeouts > 0, "timeouts %d other %d answered %d",
          (int)j.timeouts, (int)j.other, (int)j.answered);
    CHECK(j.late == 0, "%d callers outlived their deadline", (int)j.late);
    /* The node answers again: the client notices the dead connection
     * (command timeout), reconnects and recovers. */
    atomic_store(&f.mode, FAKE_NORMAL);
    int64_t t0 = rt_now_ms();
    while (cmd2(c, "GET", "k", rt_deadline_ms(300), NULL) != 0 && rt_now_ms() - t0 < 5000)
        rt_sleep(20);
    CHECK(rt_now_ms() - t0 < 5000, "no recovery after the black hole");
    printf("recovered %" PRId64 " ms after the black hole ended\n", rt_now_ms() - t0);
    print_stats(c);
    rc_free(c);

    /* Nothing listens: the caller gets an error by its deadline. */
    snprintf(seeds, sizeof seeds, "127.0.0.1:%d", g_port + 1);
    cfg.seeds = seeds;
    rc = rc_new(&cfg, &c);
    CHECK(rc == 0, "rc_new: %s", rc_strerror(rc));
    if (rc < 0)
        goto out;
    t0 = rt_now_ns();
    rc = rc_connect(c, rt_deadline_ms(500));
    CHECK(rc < 0, "connect to nothing: %d", rc);
    CHECK(rt_now_ns() - t0 < 500 * 1000000LL + SLACK_NS, "connect returned late");
    int64_t dl = rt_deadline_ms(300);
    rc = cmd2(c, "GET", "k", dl, NULL);
    CHECK(rc < 0 && rt_now_ns() - dl < SLACK_NS, "GET with no cluster: %s", rc_strerror(rc));
    rc_free(c);

    /* A bad configuration is RC_EINVAL, not mistaken for out of memory. */
    rc = rc_new(&(rc_config){.seeds = "nohostport"}, &c);
    CHECK(rc == RC_EINVAL && c == NULL, "bad seeds refused: %s", rc_strerror(rc));
    rc = rc_new(&(rc_config){.seeds = ""}, &c);
    CHECK(rc == RC_EINVAL && c == NULL, "empty seeds refused: %s", rc_strerror(rc));
    rc = rc_new(&(rc_config){.seeds = "127.0.0.1:1", .user = "u"}, &c);
    CHECK(rc == RC_EINVAL && c == NULL, "user without password refused: %s", rc_strerror(rc));

out:
    atomic_store(&f.stop, 1);
    rt_join(acc);
    rt_close(f.lfd);
    rt_sleep(50);
    return 0;
}

/* ------------------------------------------------------------------------ */

static const char *g_case;
static int g_rc;

static void run(void *arg)
{
    (void)arg;
    if (strcmp(g_case, "routing") == 0)
        g_rc = run_routing();
    else if (strcmp(g_case, "reshard") == 0)
        g_rc = run_reshard();
    else if (strcmp(g_case, "failover") == 0)
        g_rc = run_failover();
    else if (strcmp(g_case, "standalone") == 0)
        g_rc = run_standalone();
    else if (strcmp(g_case, "faults") == 0)
        g_rc = run_faults();
    else {
        fprintf(stderr, "unknown case %s\n", g_case);
        g_rc = 2;
    }
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s routing|reshard|failover|standalone|faults SEEDS|PORT DIR\n",
                argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    g_case = argv[1];
    g_seeds = argv[2];
    g_dir = argv[3];
    g_port = atoi(strncmp(g_seeds, "127.0.0.1:", 10) == 0 ? g_seeds + 10 : g_seeds);
    setvbuf(stdout, NULL, _IOLBF, 0);
    int rc = rt_main(&(rt_config){.workers = 2}, run, NULL);
    if (rc < 0) {
        fprintf(stderr, "rt_main: %d\n", rc);
        return 1;
    }
    CHECK(g_rc == 0, "case %s returned %d", g_case, g_rc);
    return check_exit(g_case);
}
