/*
 * store_bench.c: the store's benchmark driver (scripts/bench.d/store runs
 * it). Three modes, each printing name=value lines:
 *
 *   store_bench decr --url URL [--coroutines 256] [--seconds 5]
 *                    [--batch-max 256] [--workers 0]
 *       N coroutines decrement one hot item (qty 1, one user per coroutine)
 *       through the batcher for the given time. Prints decr_per_s,
 *       batch_size_p50 (per batch), batch_size_mean, p50_ms and p99_ms
 *       (per request, queueing included), errors, batch_ms_mean.
 *
 *   store_bench sqlite-bare --path FILE --batch B [--seconds 5]
 *   store_bench pg-bare --url URL --batch B [--seconds 5]
 *       The anchors: the store's batch transaction of B decrements in a
 *       plain loop on one connection (store_bare.c). The store is opened
 *       on the database first (its migrations make the schema) and puts
 *       the item bench-bare, then closed; the loop runs without the
 *       runtime. Prints bare_decr_per_s, bare_tx_per_s, batch,
 *       transactions.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cachesvc/store/store.h"
#include "runtime/rt.h"
#include "tests/bench/store/store_bare.h"

typedef struct bench {
    const char *url;
    int coroutines;
    int seconds;
    int batch_max;
    int rc;
    store *st;
    int64_t stop_ns;
    rt_wg *wg;
    /* per-coroutine results */
    int64_t **lat_us;
    size_t *nlat;
    size_t *caplat;
    uint64_t *by_batch;      /* requests answered in a batch of size k */
    uint64_t errors;
} bench;

typedef struct worker_arg {
    bench *b;
    int id;
} worker_arg;

#define MAX_BATCH 4096

static void worker(void *arg)
{
    worker_arg *w = arg;
    bench *b = w->b;
    char user[32];
    store_decrement_result r;

    snprintf(user, sizeof user, "u%d", w->id);
    while (rt_now_ns() < b->stop_ns) {
        int64_t t0 = rt_now_ns();
        if (store_decrement(b->st, "bench-hot", user, 1, NULL, RT_NO_DEADLINE, &r) < 0 ||
            r.outcome != STORE_OK) {
            __atomic_fetch_add(&b->errors, 1, __ATOMIC_RELAXED);
            rt_sleep(1);
            continue;
        }
        int64_t us = (rt_now_ns() - t0) / 1000;
        if (b->nlat[w->id] == b->caplat[w->id]) {
            size_t cap = b->caplat[w->id] ? b->caplat[w->id] * 2 : 4096;
            int64_t *p = realloc(b->lat_us[w->id], cap * sizeof *p);
            if (p == NULL)
                break;
            b->lat_us[w->id] = p;
            b->caplat[w->id] = cap;
        }
        b->lat_us[w->id][b->nlat[w->id]++] = us;
        if (r.batch_size > 0 && r.batch_size < MAX_BATCH)
            __atomic_fetch_add(&b->by_batch[r.batch_size], 1, __ATOMIC_RELAXED);
    }
    rt_wg_done(b->wg);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void bench_main(void *arg)
{
    bench *b = arg;
    store_config cfg = {.batch_max = b->batch_max, .queue_max = 1 << 20, .pool_size = 2};
    store_put p = {.stock = (int64_t)1 << 50, .per_user_limit = 0, .sale_starts_at_ms = 0};
    worker_arg *wa = NULL;
    int64_t t0;
    int rc;

    if ((rc = store_open(b->url, &cfg, &b->st)) < 0) {
        fprintf(stderr, "store_bench: open %s: %s\n", b->url, store_strerror(rc));
        b->rc = 1;
        return;
    }
    if ((rc = store_put_item(b->st, "bench-hot", &p, RT_NO_DEADLINE, NULL, NULL)) < 0) {
        fprintf(stderr, "store_bench: put: %s\n", store_strerror(rc));
        b->rc = 1;
        goto out;
    }
    b->lat_us = calloc((size_t)b->coroutines, sizeof *b->lat_us);
    b->nlat = calloc((size_t)b->coroutines, sizeof *b->nlat);
    b->caplat = calloc((size_t)b->coroutines, sizeof *b->caplat);
    b->by_batch = calloc(MAX_BATCH, sizeof *b->by_batch);
    wa = calloc((size_t)b->coroutines, sizeof *wa);
    b->wg = rt_wg_new();
    t0 = rt_now_ns();
    b->stop_ns = t0 + (int64_t)b->seconds * 1000000000;
    rt_wg_add(b->wg, b->coroutines);
    for (int i = 0; i < b->coroutines; i++) {
        wa[i].b = b;
        wa[i].id = i;
        if (rt_spawn(NULL, worker, &wa[i]) < 0) {
            fprintf(stderr, "store_bench: spawn failed\n");
            rt_wg_done(b->wg);
        }
    }
    rt_wg_wait(b->wg, RT_NO_DEADLINE);
    double secs = (double)(rt_now_ns() - t0) / 1e9;

    size_t total = 0, k = 0;
    for (int i = 0; i < b->coroutines; i++)
        total += b->nlat[i];
    int64_t *all = malloc((total + 1) * sizeof *all);
    for (int i = 0; i < b->coroutines; i++) {
        memcpy(all + k, b->lat_us[i], b->nlat[i] * sizeof *all);
        k += b->nlat[i];
        free(b->lat_us[i]);
    }
    qsort(all, total, sizeof *all, cmp_i64);
    /* Per-batch distribution: a batch of size s answered s requests. */
    double batches = 0, acc = 0;
    for (int s = 1; s < MAX_BATCH; s++)
        batches += (double)b->by_batch[s] / s;
    int p50 = 0;
    for (int s = 1; s < MAX_BATCH && p50 == 0; s++) {
        acc += (double)b->by_batch[s] / s;
        if (acc >= batches / 2)
            p50 = s;
    }
    printf("decr_per_s=%.0f\n", (double)total / secs);
    printf("batch_size_p50=%d\n", p50);
    printf("batch_size_mean=%.1f\n", batches > 0 ? (double)total / batches : 0.0);
    printf("p50_ms=%.2f\n", total ? (double)all[total / 2] / 1000.0 : 0.0);
    printf("p99_ms=%.2f\n", total ? (double)all[total * 99 / 100] / 1000.0 : 0.0);
    printf("errors=%llu\n", (unsigned long long)b->errors);
    store_stats ss;
    store_stats_get(b->st, &ss);
    printf("batch_ms_mean=%.2f\n", ss.batches ? ss.latency_sum_s * 1000.0 / (double)ss.batches : 0.0);
    free(all);
    free(b->lat_us);
    free(b->nlat);
    free(b->caplat);
    free(b->by_batch);
    free(wa);
    rt_wg_free(b->wg);
out:
    store_close(b->st);
}

/* Opens the store on url (its migrations make the schema) and puts
 * bare_sku with the decr mode's stock, for the bare loops (b->rc: 0 or 1). */
static const char bare_sku[] = "bench-bare";

static void bare_setup(void *arg)
{
    bench *b = arg;
    store_config cfg = {.pool_size = 1};
    store_put p = {.stock = (int64_t)1 << 50, .per_user_limit = 0, .sale_starts_at_ms = 0};
    int rc;

    if ((rc = store_open(b->url, &cfg, &b->st)) < 0) {
        fprintf(stderr, "store_bench: open %s: %s\n", b->url, store_strerror(rc));
        b->rc = 1;
        return;
    }
    if ((rc = store_put_item(b->st, bare_sku, &p, RT_NO_DEADLINE, NULL, NULL)) < 0) {
        fprintf(stderr, "store_bench: put: %s\n", store_strerror(rc));
        b->rc = 1;
    }
    store_close(b->st);
}

int main(int argc, char **argv)
{
    bench b = {.coroutines = 256, .seconds = 5, .batch_max = 256};
    const char *path = NULL;
    int workers = 0, batch = 0, sq = 0, pg = 0;
    char url[4096];

    if (argc < 2 || (argc % 2) != 0) {
        fprintf(stderr, "usage: store_bench decr --url URL [--coroutines N] [--seconds S]"
                        " [--batch-max B] [--workers W]\n"
                        "       store_bench sqlite-bare --path FILE --batch B [--seconds S]\n"
                        "       store_bench pg-bare --url URL --batch B [--seconds S]\n");
        return 2;
    }
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--url") == 0) b.url = argv[i + 1];
        else if (strcmp(argv[i], "--path") == 0) path = argv[i + 1];
        else if (strcmp(argv[i], "--coroutines") == 0) b.coroutines = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--seconds") == 0) b.seconds = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--batch-max") == 0) b.batch_max = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--batch") == 0) batch = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--workers") == 0) workers = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "store_bench: unknown flag %s\n", argv[i]);
            return 2;
        }
    }
    sq = strcmp(argv[1], "sqlite-bare") == 0;
    pg = strcmp(argv[1], "pg-bare") == 0;
    if (b.seconds < 1) {
        fprintf(stderr, "store_bench: bad arguments: --seconds must be >= 1\n");
        return 2;
    }
    if (sq || pg) {
        if ((sq ? path == NULL : b.url == NULL) || batch < 1 || batch > 100000) {
            fprintf(stderr, "store_bench: bad arguments: %s needs %s and --batch 1..100000\n",
                    argv[1], sq ? "--path" : "--url");
            return 2;
        }
        if (sq) {
            if ((size_t)snprintf(url, sizeof url, "sqlite:%s", path) >= sizeof url) {
                fprintf(stderr, "store_bench: bad arguments: path too long\n");
                return 2;
            }
            b.url = url;
        }
        rt_config cfg = {.workers = 1};
        if (rt_main(&cfg, bare_setup, &b) < 0) {
            fprintf(stderr, "store_bench: runtime did not start\n");
            return 1;
        }
        if (b.rc != 0)
            return b.rc;
        return sq ? bare_sqlite(path, bare_sku, batch, b.seconds)
                  : bare_pg(b.url, bare_sku, batch, b.seconds);
    }
    if (strcmp(argv[1], "decr") != 0 || b.url == NULL || b.coroutines < 1) {
        fprintf(stderr, "store_bench: bad arguments\n");
        return 2;
    }
    rt_config cfg = {.workers = workers};
    if (rt_main(&cfg, bench_main, &b) < 0) {
        fprintf(stderr, "store_bench: runtime did not start\n");
        return 1;
    }
    return b.rc;
}
