/*
 * lc_bench.c: localcache's benchmark (run by scripts/bench localcache).
 *
 * Prints name=value lines:
 *   get_mops          lc_get, 2 threads, Zipf(0.99) over 1M keys, all cached
 *   get_mops_per_thread
 *   raw_lookup_mops   the same lookups, one thread, in an unsynchronised
 *                     open-addressing table with keys and values inline:
 *                     the physical limit, measured in the same run
 *   get_ratio         get_mops_per_thread / raw_lookup_mops (target >= 0.5)
 *   get_ratio_same_threads   against the anchor run in as many threads
 *   *_cpu             per second of each thread's own CPU time
 *   locked_get_mops   the same gets under the shard mutex (no seqlock)
 *   hot_get_mops, hot_locked_get_mops   every thread on the same 8 keys
 *   mixed_mops        2 threads, 90% get / 9% set / 1% evict
 *   hit_ratio, lru_hit_ratio   the Zipf(0.99) trace, 10M requests over 1M
 *                     keys, 10% of the bytes (target hit_ratio > lru)
 * Each throughput is the median of several runs.
 *
 * Usage: lc_bench [--keys N] [--ops N] [--runs N] [--threads N] [--no-hit-ratio]
 */
#include "localcache/lc.h"
#include "localcache/lc_int.h"
#include "tests/bench/localcache/lc_trace.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define VLEN 100

static uint64_t nkeys = 1000000;
static size_t ops = 4000000;  /* per thread per run */
static unsigned runs = 5, nthreads = 2;

static char (*keys)[16];      /* key bytes by id, 12 long */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- the anchor: an unsynchronised open-addressing table ---------------- */

typedef struct raw_slot {
    uint64_t hash;
    uint64_t version;
    uint32_t klen, vlen;
    unsigned char key[16];
    unsigned char val[VLEN];
} raw_slot;

typedef struct raw_table {
    raw_slot *slots;
    uint64_t mask;
} raw_table;

static uint64_t key_hash(const char *key, size_t klen, uint64_t kw[LC_KEY_WORDS])
{
    size_t n = lc__key_words(key, klen, kw);
    return lc__hash(kw, n, klen);
}

static void raw_put(raw_table *t, const char *key, size_t klen, const void *val)
{
    uint64_t kw[LC_KEY_WORDS], h = key_hash(key, klen, kw);
    for (uint64_t i = h & t->mask;; i = (i + 1) & t->mask) {
        raw_slot *s = &t->slots[i];
        if (s->hash == 0) {
            s->hash = h;
            s->klen = (uint32_t)klen;
            s->vlen = VLEN;
            s->version = 1;
            memcpy(s->key, key, klen);
            memcpy(s->val, val, VLEN);
            return;
        }
    }
}

static int raw_get(const raw_table *t, const char *key, size_t klen, void *buf, size_t cap,
                   size_t *vlen, uint64_t *version)
{
    uint64_t kw[LC_KEY_WORDS], h = key_hash(key, klen, kw);
    for (uint64_t i = h & t->mask;; i = (i + 1) & t->mask) {
        const raw_slot *s = &t->slots[i];
        if (s->hash == 0)
            return -ENOENT;
        if (s->hash == h && s->klen == klen && memcmp(s->key, key, klen) == 0) {
            if (s->vlen > cap)
                return -ENOSPC;
            memcpy(buf, s->val, s->vlen);
            *vlen = s->vlen;
            *version = s->version;
            return 0;
        }
    }
}

/* ---- workers ------------------------------------------------------------ */

enum { W_GET, W_MIXED, W_RAW };

typedef struct worker {
    pthread_t tid;
    int kind;
    lc_cache *c;
    const raw_table *raw;
    const uint32_t *trace;
    size_t len;
    uint64_t seed;
    _Atomic unsigned *ready;
    _Atomic bool *go;
    uint64_t hits, sink;
    double cpu_s;   /* the thread's own CPU time in the loop */
} worker;

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    unsigned char buf[256], val[VLEN];
    size_t vlen;
    uint64_t ver, hits = 0, sink = 0, rng = w->seed, next_version = 2;
    memset(val, 'v', sizeof(val));
    atomic_fetch_add(w->ready, 1);
    while (!atomic_load_explicit(w->go, memory_order_acquire))
        ;
    double c0 = thread_cpu_s();
    for (size_t i = 0; i < w->len; i++) {
        const char *key = keys[w->trace[i]];
        int rc;
        if (w->kind == W_RAW) {
            rc = raw_get(w->raw, key, 12, buf, sizeof(buf), &vlen, &ver);
        } else if (w->kind == W_GET) {
            rc = lc_get(w->c, key, 12, buf, sizeof(buf), &vlen, &ver);
        } else {
            unsigned op = (unsigned)(lct_rand(&rng) % 100);
            if (op < 90) {
                rc = lc_get(w->c, key, 12, buf, sizeof(buf), &vlen, &ver);
            } else if (op < 99) {
                next_version += 2;
                rc = lc_set_if_newer(w->c, key, 12, val, VLEN, next_version + w->seed % 2,
                                     LC_TTL_NONE);
                rc = rc == 0 ? 1 : rc;
            } else {
                rc = lc_evict(w->c, key, 12, 0);
                rc = rc == 0 ? 1 : rc;
            }
        }
        if (rc == 0) {
            hits++;
            sink += buf[0] + ver;
        }
    }
    w->cpu_s = thread_cpu_s() - c0;
    w->hits = hits;
    w->sink = sink;
    return NULL;
}

/* Runs n workers of one kind over their traces; returns Mops/s overall
 * (wall clock) and in *per_cpu the mean per thread of operations per second
 * of the thread's own CPU time, which the other jobs of a shared machine
 * disturb far less than wall-clock time. */
static double run_workers(int kind, unsigned n, lc_cache *c, const raw_table *raw,
                          uint32_t **traces, double *hit_ratio, double *per_cpu)
{
    worker w[16];
    _Atomic unsigned ready = 0;
    _Atomic bool go = false;
    for (unsigned i = 0; i < n; i++) {
        w[i] = (worker){.kind = kind, .c = c, .raw = raw, .trace = traces[i], .len = ops,
                        .seed = 100 + i, .ready = &ready, .go = &go};
        if (pthread_create(&w[i].tid, NULL, worker_main, &w[i]) != 0) {
            perror("pthread_create");
            exit(1);
        }
    }
    while (atomic_load(&ready) < n)
        ;
    double t0 = now_s();
    atomic_store_explicit(&go, true, memory_order_release);
    uint64_t hits = 0, sink = 0;
    double cpu_mops = 0;
    for (unsigned i = 0; i < n; i++) {
        pthread_join(w[i].tid, NULL);
        hits += w[i].hits;
        sink += w[i].sink;
        cpu_mops += (double)ops / w[i].cpu_s / 1e6;
    }
    *per_cpu = cpu_mops / n;
    double dt = now_s() - t0;
    if (hit_ratio)
        *hit_ratio = (double)hits / (double)(ops * n);
    if (sink == 42)
        fprintf(stderr, "(sink)\n");
    return (double)(ops * n) / dt / 1e6;
}

/* Fills c with every key and reads each once, so that the keys pass from S
 * to M and all of them stay cached. */
static void prefill(lc_cache *c)
{
    unsigned char val[VLEN], buf[256];
    memset(val, 'v', sizeof(val));
    for (uint64_t k = 0; k < nkeys; k++) {
        lc_set_if_newer(c, keys[k], 12, val, VLEN, 1, LC_TTL_NONE);
        lc_get(c, keys[k], 12, buf, sizeof(buf), NULL, NULL);
    }
}

int main(int argc, char **argv)
{
    bool hit_ratio = true;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--keys") && i + 1 < argc)
            nkeys = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--ops") && i + 1 < argc)
            ops = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            nthreads = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-hit-ratio"))
            hit_ratio = false;
        else {
            fprintf(stderr, "usage: lc_bench [--keys N] [--ops N] [--runs N] [--threads N] "
                            "[--no-hit-ratio]\n");
            return 2;
        }
    }
    if (runs == 0 || runs > 99 || nthreads == 0 || nthreads > 16)
        return 2;

    keys = malloc(nkeys * sizeof(*keys));
    uint32_t *traces[16];
    for (unsigned i = 0; i < nthreads; i++)
        traces[i] = lct_trace_new(nkeys, ops, 0.99, 1000 + i);
    raw_table raw = {.mask = 1};
    while (raw.mask + 1 < nkeys * 2)
        raw.mask = raw.mask * 2 + 1;
    /* Mapped with huge pages like the cache's shards, so that the anchor
     * is not slowed down by TLB misses the cache avoids. */
    size_t raw_bytes = (raw.mask + 1) * sizeof(raw_slot);
    raw.slots = mmap(NULL, raw_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw.slots == MAP_FAILED)
        raw.slots = NULL;
    else
        madvise(raw.slots, raw_bytes, MADV_HUGEPAGE);
    if (!keys || !raw.slots) {
        fprintf(stderr, "lc_bench: out of memory\n");
        return 1;
    }
    unsigned char val[VLEN];
    memset(val, 'v', sizeof(val));
    for (uint64_t k = 0; k < nkeys; k++) {
        lct_key((uint32_t)k, keys[k]);
        raw_put(&raw, keys[k], 12, val);
    }

    /* Room for every key: records of 184 bytes, plus the index, ghost and
     * sketch, plus S (whose unread keys would leave). */
    lc_config cfg = {.shards = 64, .capacity_bytes = nkeys * 184 * 3 / 2 + (64u << 20),
                     .max_value_bytes = 256};
    lc_cache *c;
    int rc = lc_new(&cfg, &c);
    if (rc < 0) {
        fprintf(stderr, "lc_new: %s\n", lc_strerror(rc));
        return 1;
    }
    prefill(c);

    double get[99], raw_v[99], mixed[99], get_c[99], raw_c[99], mixed_c[99];
    double hr = 0, get_hr = 0, raw_n[99], raw_nc[99];
    for (unsigned r = 0; r < runs; r++) {
        raw_v[r] = run_workers(W_RAW, 1, NULL, &raw, traces, NULL, &raw_c[r]);
        get[r] = run_workers(W_GET, nthreads, c, NULL, traces, &get_hr, &get_c[r]);
        /* The anchor in the cache's own conditions: as many threads, each
         * looking up the read-only table with no synchronisation. */
        raw_n[r] = run_workers(W_RAW, nthreads, NULL, &raw, traces, NULL, &raw_nc[r]);
    }
    for (unsigned r = 0; r < runs; r++)
        mixed[r] = run_workers(W_MIXED, nthreads, c, NULL, traces, &hr, &mixed_c[r]);
    /* The alternative to optimistic reads: every lc_get under the shard
     * mutex (the reader's fallback path), same threads and trace; then both
     * on a flash sale's shape, every thread reading the same 8 hot keys. */
    double locked[99], locked_c[99], hot[99], hot_c[99], hot_l[99], hot_lc[99];
    uint32_t *hot_traces[16];
    for (unsigned i = 0; i < nthreads; i++) {
        hot_traces[i] = malloc(ops * sizeof(uint32_t));
        for (size_t k = 0; hot_traces[i] && k < ops; k++)
            hot_traces[i][k] = (uint32_t)((k * 5 + i) % 8);
        if (!hot_traces[i])
            return 1;
    }
    for (unsigned r = 0; r < runs; r++)
        hot[r] = run_workers(W_GET, nthreads, c, NULL, hot_traces, NULL, &hot_c[r]);
    c->locked_reads = true;
    for (unsigned r = 0; r < runs; r++) {
        locked[r] = run_workers(W_GET, nthreads, c, NULL, traces, NULL, &locked_c[r]);
        hot_l[r] = run_workers(W_GET, nthreads, c, NULL, hot_traces, NULL, &hot_lc[r]);
    }
    c->locked_reads = false;
    for (unsigned i = 0; i < nthreads; i++)
        free(hot_traces[i]);
    double g = median(get, runs), rw = median(raw_v, runs), m = median(mixed, runs);
    double gc = median(get_c, runs), rc_ = median(raw_c, runs), mc = median(mixed_c, runs);
    printf("threads=%u\n", nthreads);
    printf("keys=%llu\n", (unsigned long long)nkeys);
    printf("runs=%u\n", runs);
    printf("get_mops=%.2f\n", g);
    printf("get_mops_per_thread=%.2f\n", g / nthreads);
    printf("get_hit_ratio=%.4f\n", get_hr);
    printf("raw_lookup_mops=%.2f\n", rw);
    printf("get_ratio=%.3f (get_mops_per_thread / raw_lookup_mops, target >= 0.5)\n",
           g / nthreads / rw);
    double rn = median(raw_n, runs);
    printf("raw_lookup_mops_same_threads=%.2f (the anchor run in %u threads at once)\n", rn,
           nthreads);
    printf("get_ratio_same_threads=%.3f (get_mops / raw_lookup_mops_same_threads)\n", g / rn);
    printf("get_mops_per_thread_cpu=%.2f\n", gc);
    printf("raw_lookup_mops_cpu=%.2f\n", rc_);
    printf("get_ratio_cpu=%.3f (per CPU-second of each thread, target >= 0.5)\n", gc / rc_);
    printf("locked_get_mops=%.2f (lc_get under the shard mutex instead of the seqlock)\n",
           median(locked, runs));
    printf("locked_get_mops_per_thread_cpu=%.2f\n", median(locked_c, runs));
    printf("hot_get_mops=%.2f (8 hot keys, every thread)\n", median(hot, runs));
    printf("hot_get_mops_per_thread_cpu=%.2f\n", median(hot_c, runs));
    printf("hot_locked_get_mops=%.2f\n", median(hot_l, runs));
    printf("hot_locked_get_mops_per_thread_cpu=%.2f\n", median(hot_lc, runs));
    printf("mixed_mops=%.2f\n", m);
    printf("mixed_mops_per_thread=%.2f\n", m / nthreads);
    printf("mixed_mops_per_thread_cpu=%.2f\n", mc);
    lc_stats st;
    lc_stats_get(c, &st);
    printf("entries=%llu\nmem_bytes=%llu\n", (unsigned long long)st.entries,
           (unsigned long long)st.mem_bytes);
    lc_free(c);

    if (hit_ratio) {
        double ours, lru;
        size_t bytes;
        if ((rc = lct_hit_ratios(1000000, 10000000, 0.99, 32, &ours, &lru, &bytes)) < 0) {
            fprintf(stderr, "hit ratio run: %s\n", lc_strerror(rc));
            return 1;
        }
        printf("hit_ratio=%.4f\n", ours);
        printf("lru_hit_ratio=%.4f\n", lru);
        printf("hit_ratio_gain=%.4f (target > 0)\n", ours - lru);
    }
    for (unsigned i = 0; i < nthreads; i++)
        free(traces[i]);
    munmap(raw.slots, raw_bytes);
    free(keys);
    return 0;
}
