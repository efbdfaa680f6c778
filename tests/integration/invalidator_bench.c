/*
 * invalidator_bench.c: the invalidator's benchmark driver (run by
 * scripts/bench.d/invalidator).
 *
 * A load generator commits `rate` outbox rows per second for `seconds`
 * (one sku in five among 10 hot items, the rest among 10,000), the relay
 * publishes them through librdkafka's in-process mock cluster, the delay
 * consumer holds each until due (delay_ms) and deletes the Redis Cluster
 * copy through the cluster client (rc), the broadcast consumer evicts a
 * no-op local cache. Prints name=value lines:
 *   events_per_s            events applied per second of the run
 *   kept_up_per_s           the same over the run less the delay (the
 *                           wait every event has by design): the rate
 *                           the pipeline kept up with, which
 *                           scripts/bench.d/invalidator's search compares
 *                           with --rate
 *   lag_p50_ms, lag_p99_ms  committed -> Redis delete applied
 *   lag_over_delay_p99_ms   due -> applied (the target is <= 50)
 *   coalesced               events merged into a pending one of their sku
 * and the anchor measured in the same run: the same Redis deletes issued
 * directly (no Kafka, no delay queue) in batches of 128:
 *   anchor_redis_batch_p99_ms, anchor_redis_del_per_s
 *
 * --drain-ms bounds the wait for the last events after the load stops
 * (default 60000): a probe of the search gives up on a backlog early.
 *
 * --warmup-s runs the load that many seconds first, at the same rate, and
 * leaves them out of every figure (default 0): the start-up of the
 * consumers and the producer weighs on the tail of a short run.
 *
 * --linger-ms and --appliers set inv_config's linger_ms and appliers
 * (0: the defaults, 1 and 4), to see what the producer's batching and the
 * Redis calls in flight do to the ceiling.
 *
 * Usage: invalidator_bench --seeds H:P[,H:P] [--rate N] [--seconds N]
 *                          [--warmup-s N] [--delay-ms N] [--drain-ms N]
 *                          [--linger-ms N] [--appliers N] [--workers N]
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cachesvc/redis/rc.h"
#include "invalidator/inv_int.h"
#include "runtime/rt.h"
#include "tests/support/invalidator_support.h"

#define HOT 10
#define COLD 10000

typedef struct bench {
    const char *seeds;
    int rate, seconds, warmup_s, delay_ms, drain_ms, linger_ms, appliers, workers;
    rc_cluster *rc;                /* for fills */
    its_rsink *sink;
    its_outbox *ob;
    inv *iv;
    int64_t versions[HOT + COLD];
    int rc_status;
} bench;

static void no_evict(void *ctx, const char *sku, int64_t version)
{
    (void)ctx;
    (void)sku;
    (void)version;
}

static void sku_name(char *buf, size_t cap, int i)
{
    if (i < HOT)
        snprintf(buf, cap, "hot-%d", i);
    else
        snprintf(buf, cap, "item-%d", i - HOT);
}

static int pick_sku(uint64_t *seed)
{
    *seed = *seed * 6364136223846793005ULL + 1442695040888963407ULL;
    uint32_t r = (uint32_t)(*seed >> 33);
    if (r % 5 == 0)
        return (int)((r / 5) % HOT);
    return HOT + (int)((r / 5) % COLD);
}

/* The anchor: version-guarded deletes straight to Redis, 128 at a time. */
static void anchor(inv_redis_sink rs, int64_t *p99_ms, double *per_s)
{
    enum { BATCH = 128, ROUNDS = 400 };
    inv_del items[BATCH];
    char skus[BATCH][32];
    inv_hist *h = calloc(1, sizeof(*h));
    int64_t t0 = rt_now_ns();
    uint64_t seed = 42;
    if (h == NULL)
        return;
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < BATCH; i++) {
            sku_name(skus[i], sizeof(skus[i]), pick_sku(&seed));
            items[i] = (inv_del){skus[i], 0, 0};
        }
        int64_t s = rt_now_ns();
        rs.del(rs.ctx, items, BATCH);
        int64_t us = (rt_now_ns() - s) / 1000;
        /* Microsecond resolution: the histogram's "ms" unit holds us. */
        inv__hist_add(h, us);
    }
    double secs = (double)(rt_now_ns() - t0) / 1e9;
    *per_s = (double)BATCH * ROUNDS / secs;
    *p99_ms = inv_hist_quantile(h, 0.99);   /* microseconds */
    free(h);
}

/* Commits one outbox row of a random sku at its next version. */
static void gen_row(bench *b, uint64_t *seed)
{
    char sku[32];
    int i = pick_sku(seed);
    sku_name(sku, sizeof(sku), i);
    its_outbox_add(b->ob, sku, ++b->versions[i], -1);
}

/* What st gained since st0: the counters and histograms (the gauges and
 * sums are left as they are). */
static void stats_sub(inv_stats *st, const inv_stats *st0)
{
    st->applied -= st0->applied;
    st->coalesced -= st0->coalesced;
    st->sink_calls -= st0->sink_calls;
    st->errors -= st0->errors;
    inv_hist *h[] = {&st->transit, &st->lag, &st->sink, &st->lateness, &st->bcast_lag};
    const inv_hist *h0[] = {&st0->transit, &st0->lag, &st0->sink, &st0->lateness,
                            &st0->bcast_lag};
    for (size_t k = 0; k < sizeof(h) / sizeof(h[0]); k++) {
        h[k]->count -= h0[k]->count;
        for (int i = 0; i < INV_HIST_BUCKETS; i++)
            h[k]->b[i] -= h0[k]->b[i];
    }
}

static bool drained(void *arg)
{
    bench *b = arg;
    inv_stats *st = malloc(sizeof(*st));
    inv_stats_get(b->iv, st);
    bool done = its_outbox_depth(b->ob) == 0 && st->pending == 0 &&
                st->relay_inflight == 0;
    free(st);
    return done;
}

static bool ready(void *arg)
{
    return inv_ready(arg);
}

static void run(void *arg)
{
    bench *b = arg;
    b->rc_status = 1;
    rc_config rcc = {.seeds = b->seeds, .command_timeout_ms = 2000};
    int rc;
    if ((rc = rc_new(&rcc, &b->rc)) < 0 || (rc = rc_connect(b->rc, rt_deadline_ms(10000))) < 0) {
        fprintf(stderr, "invalidator_bench: cannot reach redis %s: %s\n", b->seeds, rc_strerror(rc));
        goto out;
    }
    if ((b->sink = its_rsink_new(b->seeds, 2000)) == NULL)
        goto out;
    inv_redis_sink rs = its_rsink_sink(b->sink);
    /* Every item is cached at version 0 to begin with. */
    char sku[32], key[64];
    for (int i = 0; i < HOT + COLD; i++) {
        sku_name(sku, sizeof(sku), i);
        int kl = rc_item_key(key, sizeof(key), sku, strlen(sku));
        rc_fill_if_newer(b->rc, key, (size_t)kl, 0, "x", 1, 0,
                         rt_deadline_ms(2000));
    }
    int64_t anchor_p99_us = 0;
    double anchor_per_s = 0;
    anchor(rs, &anchor_p99_us, &anchor_per_s);

    b->ob = its_outbox_new();
    inv_config ic = {
        .brokers = "embedded",
        .topic = "bench-invalidations",
        .delay_group = "bench-delay",
        .instance_id = "bench",
        .delay_ms = b->delay_ms > 0 ? b->delay_ms : -1,
        .pending_cap = 1000000,
        .relay_inflight_max = 100000,
        .linger_ms = b->linger_ms,
        .appliers = b->appliers,
    };
    inv_source src = its_outbox_source(b->ob);
    inv_local_sink ls = {.evict = no_evict};
    if (inv_new(&ic, &src, &rs, &ls, &b->iv) < 0 || inv_start(b->iv) < 0) {
        fprintf(stderr, "invalidator_bench: cannot start the invalidator\n");
        goto out;
    }
    if (!its_wait_until(ready, b->iv, 30000)) {
        fprintf(stderr, "invalidator_bench: consumers not ready\n");
        goto out;
    }

    /* Generate: every millisecond, the rows due by then. The first
     * warmup_s seconds at the same rate are left out of the figures: the
     * figures are what the invalidator's stats gained after them. */
    uint64_t seed = 7;
    int64_t warm = (int64_t)b->rate * b->warmup_s;
    int64_t total = (int64_t)b->rate * b->seconds;
    inv_stats *st0 = calloc(1, sizeof(*st0));
    inv_stats *st = malloc(sizeof(*st));
    if (st0 == NULL || st == NULL) {
        free(st0);
        free(st);
        goto out;
    }
    int64_t t0 = rt_now_ns(), made = 0, tw = t0;
    while (made < warm + total) {
        int64_t due = (rt_now_ns() - t0) * b->rate / 1000000000;
        if (due > warm + total)
            due = warm + total;
        if (warm > 0 && made < warm && due >= warm) {
            due = warm;            /* the warm-up's rows, then the snapshot */
            for (; made < due; made++)
                gen_row(b, &seed);
            inv_stats_get(b->iv, st0);
            tw = rt_now_ns();
            continue;
        }
        for (; made < due; made++)
            gen_row(b, &seed);
        inv_notify(b->iv);
        rt_sleep(1);
    }
    int64_t gen_ns = rt_now_ns() - tw;
    bool ok = its_wait_until(drained, b, b->drain_ms);
    int64_t all_ns = rt_now_ns() - tw;

    inv_stats_get(b->iv, st);
    stats_sub(st, st0);
    free(st0);
    printf("target_events_per_s=%d\n", b->rate);
    printf("delay_ms=%d\n", b->delay_ms);
    printf("warmup_s=%d\n", b->warmup_s);
    printf("events=%" PRId64 "\n", total);
    printf("generated_per_s=%.0f\n", (double)total * 1e9 / (double)gen_ns);
    printf("events_per_s=%.0f\n", (double)st->applied * 1e9 / (double)all_ns);
    /* Without a warm-up no event is in flight when the figures start, and
     * the last ones wait the delay after the load stops; with one, the
     * warm-up's last events in flight make up for that wait. */
    int64_t net_ns = all_ns - (b->warmup_s > 0 ? 0 : (int64_t)b->delay_ms * 1000000);
    printf("kept_up_per_s=%.0f\n",
           (double)st->applied * 1e9 / (double)(net_ns > gen_ns ? net_ns : gen_ns));
    printf("transit_p50_ms=%" PRId64 "\n", inv_hist_quantile(&st->transit, 0.5));
    printf("transit_p99_ms=%" PRId64 "\n", inv_hist_quantile(&st->transit, 0.99));
    printf("lag_p50_ms=%" PRId64 "\n", inv_hist_quantile(&st->lag, 0.5));
    printf("lag_p99_ms=%" PRId64 "\n", inv_hist_quantile(&st->lag, 0.99));
    printf("lag_over_delay_p50_ms=%" PRId64 "\n",
           inv_hist_quantile(&st->lateness, 0.5));
    printf("lag_over_delay_p99_ms=%" PRId64 "\n",
           inv_hist_quantile(&st->lateness, 0.99));
    printf("lag_over_delay_max_ms=%" PRId64 "\n",
           inv_hist_quantile(&st->lateness, 1.0));
    printf("coalesced=%llu\n", (unsigned long long)st->coalesced);
    printf("sink_calls=%llu\n", (unsigned long long)st->sink_calls);
    printf("sink_p50_ms=%" PRId64 "\n", inv_hist_quantile(&st->sink, 0.5));
    printf("sink_p99_ms=%" PRId64 "\n", inv_hist_quantile(&st->sink, 0.99));
    printf("applied=%llu\n", (unsigned long long)st->applied);
    printf("redis_errors=%llu\n", (unsigned long long)st->errors);
    printf("broadcast_lag_p99_ms=%" PRId64 "\n",
           inv_hist_quantile(&st->bcast_lag, 0.99));
    printf("anchor_redis_batch_p99_ms=%.2f\n", (double)anchor_p99_us / 1000.0);
    printf("anchor_redis_del_per_s=%.0f\n", anchor_per_s);
    printf("ratio_events_per_s_over_anchor=%.3f\n",
           (double)st->applied * 1e9 / (double)all_ns / anchor_per_s);
    printf("drained=%d\n", ok ? 1 : 0);
    fflush(stdout);
    free(st);
    b->rc_status = ok ? 0 : 1;
out:
    if (b->iv != NULL) {
        inv_stop(b->iv, 2000);
        inv_free(b->iv);
    }
    its_outbox_free(b->ob);
    its_rsink_free(b->sink);
    if (b->rc != NULL)
        rc_free(b->rc);
}

int main(int argc, char **argv)
{
    static bench b = {.rate = 20000, .seconds = 30, .delay_ms = 200, .drain_ms = 60000};
    const struct { const char *name; int *v; } nums[] = {
        {"--rate", &b.rate},           {"--seconds", &b.seconds},   {"--delay-ms", &b.delay_ms},
        {"--linger-ms", &b.linger_ms}, {"--appliers", &b.appliers}, {"--warmup-s", &b.warmup_s},
        {"--drain-ms", &b.drain_ms},   {"--workers", &b.workers},
    };
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--seeds") == 0)
            b.seeds = argv[i + 1];
        for (size_t k = 0; k < sizeof nums / sizeof nums[0]; k++)
            if (strcmp(argv[i], nums[k].name) == 0)
                *nums[k].v = atoi(argv[i + 1]);
    }
    if (b.seeds == NULL || b.rate <= 0 || b.seconds <= 0) {
        fprintf(stderr, "usage: %s --seeds H:P[,H:P] [--rate N] [--seconds N] "
                        "[--warmup-s N] [--delay-ms N] [--drain-ms N] [--linger-ms N] "
                        "[--appliers N] [--workers N]\n", argv[0]);
        return 2;
    }
    rt_config cfg = {.workers = b.workers};
    if (rt_main(&cfg, run, &b) < 0)
        return 1;
    return b.rc_status;
}
