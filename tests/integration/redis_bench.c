/*
 * Throughput of the Redis Cluster client: C coroutines each alternating
 * SET and GET of random keys (3-byte values, like redis-benchmark's
 * default), for a fixed time after a short warm-up. Prints
 * "ops=<per second>" and a few details. Used by scripts/bench.d/redis.
 *
 * Usage: redis_bench SEEDS [concurrency=256] [seconds=5] [keys=100000]
 *                          [conns_per_node=1] [workers=0] [pipeline_window=0]
 */
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cachesvc/redis/rc_int.h"
#include "runtime/rt.h"

typedef struct bench {
    rc_cluster *c;
    int conc, keys;
    int64_t seconds;
    _Atomic int phase;         /* 0 warm-up, 1 measuring, 2 stop */
    _Atomic uint64_t ops, errors;
    rt_wg *wg;
    const char *seeds;
    int conns, window;
} bench;

static void worker(void *arg)
{
    bench *b = arg;
    unsigned x = (unsigned)(uintptr_t)&x ^ (unsigned)rt_now_ns();
    uint64_t ops = 0, errors = 0;
    char key[32];
    int op = 0;

    x |= 1;
    while (atomic_load_explicit(&b->phase, memory_order_relaxed) < 2) {
        const char *argv[3];
        size_t argvlen[3];
        int rc;

        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        /* "key:%012u", as redis-benchmark -r names its keys. */
        unsigned k = x % (unsigned)b->keys;
        memcpy(key, "key:", 4);
        for (int i = 15; i >= 4; i--, k /= 10)
            key[i] = (char)('0' + k % 10);
        argvlen[1] = 16;
        argv[1] = key;
        if (op ^= 1) {
            argv[0] = "SET";
            argvlen[0] = 3;
            argv[2] = "xxx";
            argvlen[2] = 3;
            rc = rc_command(b->c, 3, argv, argvlen, 0, NULL);
        } else {
            argv[0] = "GET";
            argvlen[0] = 3;
            rc = rc_command(b->c, 2, argv, argvlen, 0, NULL);
        }
        if (atomic_load_explicit(&b->phase, memory_order_relaxed) == 1) {
            ops++;
            if (rc < 0)
                errors++;
        }
    }
    atomic_fetch_add(&b->ops, ops);
    atomic_fetch_add(&b->errors, errors);
    rt_wg_done(b->wg);
}

static int rc_main;

static void run(void *arg)
{
    bench *b = arg;
    rc_config cfg = {.seeds = b->seeds, .conns_per_node = b->conns,
                     .pipeline_window = b->window};
    int64_t t0, t1;
    int rc;

    if ((rc = rc_new(&cfg, &b->c)) < 0 || (rc = rc_connect(b->c, rt_deadline_ms(5000))) < 0) {
        fprintf(stderr, "redis_bench: cannot connect to %s: %s\n", b->seeds, rc_strerror(rc));
        rc_main = 1;
        if (b->c)
            rc_free(b->c);
        return;
    }
    b->wg = rt_wg_new();
    rt_wg_add(b->wg, b->conc);
    for (int i = 0; i < b->conc; i++)
        if (rt_spawn(NULL, worker, b) < 0)
            rt_wg_done(b->wg);
    rt_sleep(500);
    atomic_store(&b->phase, 1);
    t0 = rt_now_ns();
    rt_sleep(b->seconds * 1000);
    atomic_store(&b->phase, 2);
    t1 = rt_now_ns();
    rt_wg_wait(b->wg, RT_NO_DEADLINE);
    rt_wg_free(b->wg);

    rc_node_stats st[64];
    int n = rc_stats(b->c, st, 64);
    uint64_t batches = 0, commands = 0;
    for (int i = 0; i < n && i < 64; i++) {
        batches += st[i].batches;
        commands += st[i].commands;
    }
    printf("ops=%.0f\n", (double)b->ops * 1e9 / (double)(t1 - t0));
    printf("errors=%" PRIu64 "\n", b->errors);
    printf("commands_per_batch=%.1f\n", batches ? (double)commands / (double)batches : 0.0);
    rc_free(b->c);
}

int main(int argc, char **argv)
{
    bench b = {.conc = 256, .seconds = 5, .keys = 100000, .conns = 1};
    int workers = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s SEEDS [concurrency] [seconds] [keys] [conns] [workers] [window]\n",
                argv[0]);
        return 2;
    }
    b.seeds = argv[1];
    if (argc > 2)
        b.conc = atoi(argv[2]);
    if (argc > 3)
        b.seconds = atoi(argv[3]);
    if (argc > 4)
        b.keys = atoi(argv[4]);
    if (argc > 5)
        b.conns = atoi(argv[5]);
    if (argc > 6)
        workers = atoi(argv[6]);
    if (argc > 7)
        b.window = atoi(argv[7]);
    if (b.conc < 1 || b.seconds < 1 || b.keys < 1)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    if (rt_main(&(rt_config){.workers = workers}, run, &b) < 0)
        return 1;
    return rc_main;
}
